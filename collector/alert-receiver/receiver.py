"""A small webhook receiver for the otel-llmcost stack: logs the alerts it is sent and lists them.

Alertmanager (collector/alertmanager.yml) and the processor service's budget webhooks
(collector/processor.yaml) post here in docker-compose, so `docker compose up` shows alerts end to end
without a Slack workspace or a pager: one line per alert in `docker compose logs alert-receiver`, and
the last notifications as JSON at ``GET /alerts``. Replace it with your own endpoint in production.

Standard library only, so it runs on the plain ``python:3.11-slim`` image with the file mounted:

    python receiver.py --host 0.0.0.0 --port 9095

Endpoints: ``POST <any path>`` (JSON body: an Alertmanager webhook, an otel-llmcost budget alert, or
any JSON, kept as is), ``GET /alerts`` (newest last, ``?path=/alertmanager/page`` filters),
``GET /healthz``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1 << 20
"""Alertmanager batches alerts per group; a megabyte is thousands of them. Larger bodies are refused."""

_log = logging.getLogger("alert-receiver")


def summarize(payload: Any) -> list[str]:
    """One log line per alert in a notification, in the words an on-call reader scans for."""
    if isinstance(payload, dict) and isinstance(payload.get("alerts"), list):
        lines = []
        for alert in payload["alerts"]:
            if not isinstance(alert, dict):
                continue
            labels = alert.get("labels") or {}
            annotations = alert.get("annotations") or {}
            where = " ".join(
                f"{key}={labels[key]}" for key in ("severity", "budget", "scope", "service_name") if key in labels
            )
            text = annotations.get("summary", "")
            lines.append(
                f"alertmanager {alert.get('status', payload.get('status', '?'))} "
                f"{labels.get('alertname', '?')} {where} {text}".rstrip()
            )
        return lines or [f"alertmanager {payload.get('status', '?')} (no alerts)"]
    if isinstance(payload, dict) and payload.get("type") == "llmcost.budget.alert":
        return [
            f"llmcost budget {payload.get('level', '?')} budget={payload.get('budget', '?')} "
            f"scope={payload.get('scope_key', '?')} {payload.get('text', '')}".rstrip()
        ]
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):  # Slack-format webhooks
        return [f"message {payload['text']}"]
    return [f"json {type(payload).__name__}"]


class AlertStore:
    """The last notifications received, newest last; shared by the handler threads."""

    def __init__(self, keep: int) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, path: str, payload: Any) -> None:
        with self._lock:
            self._items.append({"path": path, "received_at": time.time(), "payload": payload})

    def list(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
        return [item for item in items if path is None or item["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    store: AlertStore
    disable_nagle_algorithm = True
    server_version = "llmcost-alert-receiver"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._reply(411, {"error": "send a Content-Length header with the JSON body"})
            return
        if int(length) > MAX_BODY:
            self._reply(413, {"error": f"body of {length} bytes is over the {MAX_BODY}-byte limit"})
            return
        body = self.rfile.read(int(length))
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._reply(400, {"error": f"the body is not JSON ({exc}); send application/json"})
            return
        path = urlsplit(self.path).path
        self.store.add(path, payload)
        for line in summarize(payload):
            _log.info("%s %s", path, line)
        self._reply(200, {"status": "received"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif url.path == "/alerts":
            wanted = parse_qs(url.query).get("path", [None])[0]
            self._reply(200, self.store.list(wanted))
        else:
            self._reply(404, {"error": f"no {url.path}; POST alerts to any path, GET /alerts or /healthz"})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged as alerts above; the per-request access log would only repeat them."""


def serve(host: str, port: int, keep: int = 500) -> ThreadingHTTPServer:
    """A ready server (not yet serving): `serve_forever()` it, `shutdown()` to stop."""
    handler = type("Handler", (_Handler,), {"store": AlertStore(keep)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--keep", type=int, default=500, help="notifications kept for GET /alerts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s")
    try:
        server = serve(args.host, args.port, args.keep)
    except OSError as exc:
        print(f"alert-receiver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # As a container's PID 1, a signal without a handler is ignored: `docker stop` would wait 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _log.info("listening on %s:%d", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
