"""Helpers of the end-to-end stack test (tests/stack/test_e2e.py): a webhook receiver that keeps raw
bodies and headers, polling with a deadline, and readers of Prometheus, Alertmanager and the processor.

The stack's own alert receiver (collector/alert-receiver/receiver.py) keeps parsed JSON only; checking
the processor's HMAC signature needs the exact bytes and the header, so the test runs this one instead.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from otel_llmcost.testing.processes import ManagedProcess

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_CONFIG = REPO / "collector" / "alertmanager.yml"
COMPOSE_RECEIVER = "http://alert-receiver:9095"
"""The receiver address collector/alertmanager.yml names (the docker-compose service)."""


@dataclass(frozen=True)
class Delivery:
    """One POST as it arrived: path, headers (names lower-cased), the exact body and its JSON."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float


class WebhookReceiver:
    """A loopback HTTP server that answers 200 to any JSON POST and keeps every delivery, in order."""

    def __init__(self) -> None:
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # else every answer waits for a delayed ACK
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._add(Delivery(urllib.parse.urlsplit(self.path).path, headers, body, payload, time.time()))
                status = 200 if payload is not None else 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="e2e-webhooks", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _add(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    def deliveries(self, path: str) -> list[Delivery]:
        """What was posted to `path`, oldest first."""
        with self._lock:
            return [d for d in self._deliveries if d.path == path]

    def alertmanager_alerts(self, path: str) -> list[dict[str, Any]]:
        """Every alert of every Alertmanager notification posted to `path`, oldest first."""
        return [alert for d in self.deliveries(path) if isinstance(d.json, dict)
                for alert in d.json.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             diagnostics: Callable[[], str] | None = None, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and diagnostics) at the deadline.

    The deadline only bounds a hang on a loaded machine; no test asserts how long anything took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            pytest.fail(f"{what}: not seen within {timeout:g} s{extra}")
        time.sleep(interval)


def logs(*processes: ManagedProcess) -> Callable[[], str]:
    """Diagnostics for `wait_for`: the log tails of the stack's processes."""
    return lambda: "\n".join(process.log_tail(15) for process in processes)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def prom_query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    body = get_json(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def prom_value(prometheus_url: str, expr: str) -> float | None:
    """The value of a query that yields one series (None when it yields none yet)."""
    result = prom_query(prometheus_url, expr)
    assert len(result) <= 1, f"{expr} gave {len(result)} series: {result}"
    return float(result[0]["value"][1]) if result else None


def processor_metrics(processor_url: str) -> dict[str, float]:
    """The processor's /metrics as {series as written: value} (Prometheus text format)."""
    with urllib.request.urlopen(f"{processor_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def alertmanager_config(receiver_url: str, group_wait: str) -> dict[str, Any]:
    """collector/alertmanager.yml with its receiver URLs on `receiver_url` and every route's group_wait set.

    Routes, matchers, grouping, inhibition and receivers stay as written; only the address and the
    wait before a group's first notification change.
    """
    text = ALERTMANAGER_CONFIG.read_text()
    if COMPOSE_RECEIVER not in text:
        raise AssertionError(f"{ALERTMANAGER_CONFIG} no longer names {COMPOSE_RECEIVER}; update the e2e test")
    config: dict[str, Any] = yaml.safe_load(text.replace(COMPOSE_RECEIVER, receiver_url))

    def shorten(route: dict[str, Any]) -> None:
        if "group_wait" in route:
            route["group_wait"] = group_wait
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config
