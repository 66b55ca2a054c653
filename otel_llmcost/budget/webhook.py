"""Alerts posted to a webhook: generic JSON or Slack-compatible, HMAC-signed, retried, off-thread.

`send()` only puts the alert on a bounded queue (a full queue drops it, counted and logged); one
worker thread posts it with `urllib`, retrying connection errors, timeouts, 408, 429 and 5xx with
exponential backoff (0.5 s, 1 s, 2 s ... capped at 30 s, with jitter) up to `max_attempts`; other
answers are final. Counters: `delivered`, `failed`, `dropped`, `retries`.

Payloads (``Content-Type: application/json``):

* ``format="json"``: the alert's fields (`Alert.to_dict()`): ``{"type": "llmcost.budget.alert",
  "budget": ..., "scope_key": ..., "level": ..., "spend": "0.86", "limit": "1.00", ..., "text": ...}``;
* ``format="slack"``: ``{"text": "Budget 'monthly' reached throttle ..."}`` for Slack incoming
  webhooks and the many tools that accept the same.

Signature: with a secret, each request carries

    X-LLMCost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

(HTTP header names are case-insensitive; urllib sends this one as ``X-Llmcost-Signature``.)
To verify, recompute the HMAC over the timestamp, a dot and the exact bytes received, compare in
constant time, and reject timestamps older than a few minutes (replays). `verify_signature()` does
this; each retry is signed afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Literal

from .._version import __version__
from .alerts import Alert

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-LLMCost-Signature"
_RETRY_STATUS = frozenset({408, 425, 429})
_STOP = object()


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The `X-LLMCost-Signature` header value for `body` sent at `timestamp`."""
    digest = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str | bytes, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """True if `header` signs `body` with `secret` and its timestamp is within `tolerance` seconds."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def payload(alert: Alert, format: Literal["json", "slack"] = "json") -> bytes:
    """The request body for an alert."""
    data = {"text": alert.text()} if format == "slack" else alert.to_dict()
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")


class WebhookSink:
    """Posts alerts to `url` from a background thread (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        format: Literal["json", "slack"] = "json",
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        queue_size: int = 1000,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {url!r} is not http(s)")
        if format not in ("json", "slack"):
            raise ValueError(f"webhook format {format!r}: use json or slack")
        if max_attempts < 1 or queue_size < 1 or timeout <= 0 or backoff < 0:
            raise ValueError("max_attempts and queue_size must be ≥ 1, timeout > 0, backoff ≥ 0")
        self.url = url
        self.format: Literal["json", "slack"] = format
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self._secret = secret
        self._headers = dict(headers or {})
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._idle = threading.Condition()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- AlertSink --
    def send(self, alert: Alert) -> None:
        """Queue the alert for delivery; never blocks, never raises."""
        if self._closed.is_set():
            self.dropped += 1
            _log.warning("webhook %s is closed; alert dropped: %s", self.url, alert.text())
            return
        self._ensure_worker()
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._done()
            self.dropped += 1
            _log.warning(
                "webhook %s queue is full (%d); alert dropped: %s",
                self.url,
                self._queue.maxsize,
                alert.text(),
            )

    # -- lifecycle --
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert is delivered or given up; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued (up to `timeout` seconds), then stop the worker."""
        flushed = self.flush(timeout)
        self._closed.set()
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
            thread.join(max(timeout, 0.1))
        return flushed

    shutdown = close

    # -- worker --
    def _ensure_worker(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llmcost-webhook", daemon=True)
                self._thread.start()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                assert isinstance(item, Alert)
                self._deliver(item)
            except Exception:  # the worker must survive anything
                self.failed += 1
                _log.exception("webhook %s: unexpected error delivering an alert", self.url)
            finally:
                self._done()

    def _deliver(self, alert: Alert) -> None:
        body = payload(alert, self.format)
        for attempt in range(1, self.max_attempts + 1):
            retry, reason = self._post(body)
            if retry is None:
                self.delivered += 1
                return
            if not retry or attempt == self.max_attempts:
                self.failed += 1
                _log.warning(
                    "webhook %s: alert not delivered after %d attempt(s) (%s): %s",
                    self.url,
                    attempt,
                    reason,
                    alert.text(),
                )
                return
            self.retries += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.0)
            _log.info("webhook %s: %s; retry %d in %.2f s", self.url, reason, attempt, delay)
            if self._closed.wait(delay):
                self.failed += 1
                _log.warning(
                    "webhook %s closed while retrying (%s); alert dropped: %s", self.url, reason, alert.text()
                )
                return

    def _post(self, body: bytes) -> tuple[bool | None, str]:
        """(None, '') when delivered; (True, reason) to retry; (False, reason) for a final failure."""
        headers = {"Content-Type": "application/json", "User-Agent": f"otel-llmcost/{__version__}"}
        headers.update(self._headers)
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(self._clock()))
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                response.read()
                return None, ""
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code in _RETRY_STATUS
            return retry, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
            return True, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
