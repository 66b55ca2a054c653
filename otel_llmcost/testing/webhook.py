"""A loopback HTTP endpoint that keeps every request it is sent: the one webhook receiver of the tests.

Why it exists: budget alerts (`WebhookSink`, the processor service), Alertmanager notifications and
OTLP/HTTP exports all end in an HTTP POST, and a test of any of them needs something real on the
other side that keeps the exact bytes and headers (a signature is checked over the raw body) and can
misbehave on demand (a 500, a slow or a hung answer) to exercise retries and timeouts. Each test
suite used to carry its own copy of such a server; this is the one they share.

    with WebhookReceiver("/hook") as receiver:
        sink = WebhookSink(receiver.url, secret="s")
        sink.send(alert)
        (delivery,) = receiver.wait_for(1)
        verify_signature("s", delivery.headers["X-LLMCost-Signature"], delivery.body)

Answers are 200 unless told otherwise: `status` for every request (None: never answer, a hung
endpoint), `script(500, 200)` for the next few, `delay` seconds before each answer, `hold()` /
`release()` to keep answers back until the test lets them go. A request is recorded *before* it is
answered, so a sender that saw its answer implies a recorded request. Each answer closes its
connection, so `close()` leaves no kept-alive connection served behind it and `start()` can bind the
same port again (an endpoint that goes down and comes back).

Only the standard library is used, so the module can ship in the package and run anywhere.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = ["Headers", "WebhookDelivery", "WebhookReceiver"]

_R = TypeVar("_R", bound="WebhookReceiver")

DEFAULT_MAX_BODY = 16 << 20
"""Far above any alert or OTLP batch a test sends; a larger body is refused with 413."""


class Headers(Mapping[str, str]):
    """Request headers, read-only: names kept as sent (and in order), looked up in any case as HTTP means.

    A header sent more than once reads as its values joined by ", " (RFC 9110 field combination).
    """

    __slots__ = ("_names", "_values")

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._names: dict[str, str] = {}
        self._values: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            if key in self._values:
                self._values[key] += ", " + value
            else:
                self._names[key], self._values[key] = name, value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """One request as it arrived, and what it was answered.

    `body` is the exact bytes sent (still compressed if it was); `json` is the body parsed, or None when
    it is not JSON. `path` has no query string (that is in `query`). `status` is the answer (given, or
    due once a held answer is released), or None when the request was never answered (the receiver
    hung, or was closed first).
    """

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes = dataclasses.field(repr=False)
    json: Any
    status: int | None
    received_at: float


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 (a free port unless `port` is given) that records every request.

    Thread-safe: senders may post from many threads while the test reads and waits. `path` only makes
    `url` (the address to hand a sender); requests to any path and with any method are recorded.
    """

    def __init__(self, path: str = "/hook", *, status: int | None = 200, delay: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0, max_body: int = DEFAULT_MAX_BODY) -> None:
        if path and not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/' (or be empty for the bare address)")
        if delay < 0:
            raise ValueError(f"delay must be zero or more seconds, not {delay!r}")
        self.path, self.host, self.port, self.max_body = path, host, port, max_body
        self.status = status
        """The answer to every request not scripted; None: never answer (until `close()` drops it)."""
        self.delay = delay
        """Seconds to wait before each answer (a slow endpoint); `close()` cuts the wait short."""
        self.refused: list[str] = []
        """Why requests that could not be read were answered 4xx (they are not deliveries)."""
        self._deliveries: list[WebhookDelivery] = []
        self._script: collections.deque[int | None] = collections.deque()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._httpd: _Server | None = None

    # lifecycle ------------------------------------------------------------------------------------

    def start(self: _R) -> _R:
        """Bind and serve from a daemon thread; returns self. After `close()`, binds the same port again."""
        if self._httpd is not None:
            return self
        if self._closing.is_set():  # a fresh run: what the last one held or hung stays dropped
            self._closing, self._gate = threading.Event(), threading.Event()
            self._gate.set()
        self._httpd = _Server((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"webhook-receiver:{self.port}", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening (senders now get connection refused) and drop every request still unanswered."""
        self._closing.set()
        self._gate.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # addresses ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, for senders that add their own paths (after `close()`: refused there)."""
        if not self.port:
            raise RuntimeError("WebhookReceiver has no port yet: call start() or use it in a with block")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`base_url` plus the receiver's `path`: the address to configure a webhook with."""
        return self.base_url + self.path

    # answers --------------------------------------------------------------------------------------

    def script(self, *statuses: int | None) -> None:
        """Answer the next requests with `statuses`, in order (None: never answer); then `status` again."""
        with self._changed:
            self._script.extend(statuses)

    def hold(self) -> None:
        """Keep answers back (requests are still recorded) until `release()`: a sender stuck mid-request."""
        self._gate.clear()

    def release(self) -> None:
        """Answer every held request, and answer new ones at once again."""
        self._gate.set()

    # what arrived ---------------------------------------------------------------------------------

    def deliveries(self, path: str | None = None) -> list[WebhookDelivery]:
        """What arrived (to `path` only, when given), oldest first."""
        with self._changed:
            return self._matching(path)

    def wait_for(self, count: int = 1, timeout: float = 10.0, path: str | None = None) -> list[WebhookDelivery]:
        """Block until at least `count` requests (to `path`, when given) arrived; all of them, oldest first.

        The timeout only bounds a hang; when it passes, AssertionError says what did arrive.
        """
        with self._changed:
            if self._changed.wait_for(lambda: len(self._matching(path)) >= count, timeout):
                return self._matching(path)
            arrived = [f"{d.method} {d.path} -> {d.status}" for d in self._deliveries]
            refused = f"; refused: {self.refused}" if self.refused else ""
        where = f" to {path}" if path is not None else ""
        raise AssertionError(f"expected {count} request(s){where} within {timeout:g} s; "
                             f"{len(arrived)} arrived: {arrived}{refused}")

    def _matching(self, path: str | None) -> list[WebhookDelivery]:
        return [d for d in self._deliveries if path is None or d.path == path]

    # serving (handler threads) --------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            body = _read_body(handler, self.max_body)
        except _Refused as refusal:
            with self._changed:
                self.refused.append(f"{handler.command} {handler.path}: {refusal.message}")
            _answer(handler, refusal.status, refusal.message.encode())
            return
        url = urlsplit(handler.path)
        with self._changed:
            status = self._script.popleft() if self._script else self.status
            delay, closing, gate, at = self.delay, self._closing, self._gate, len(self._deliveries)
            self._deliveries.append(WebhookDelivery(
                handler.command, url.path, url.query, Headers(handler.headers.items()), body, _json(body),
                status, time.time()))
            self._changed.notify_all()
        gate.wait()
        if status is None or delay:
            closing.wait(None if status is None else delay)
        if status is None or closing.is_set():  # hung, or closed first: drop it unanswered, as a dying server does
            with self._changed:
                self._deliveries[at] = dataclasses.replace(self._deliveries[at], status=None)
            return
        _answer(handler, status, b"")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """The request body by Content-Length or chunked transfer; no length and no chunks means no body."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            line = handler.rfile.readline(1024).split(b";")[0].strip()
            try:
                chunk = int(line, 16)
            except ValueError:
                raise _Refused(400, f"bad chunk size line {line!r}; send a valid chunked body") from None
            size += chunk
            if size > limit:
                raise _Refused(413, f"chunked body over the {limit}-byte limit of this receiver")
            if chunk == 0:
                while handler.rfile.readline(1024).strip():  # trailer fields, unused
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(chunk))
            handler.rfile.readline(8)
    length = handler.headers.get("Content-Length")
    if length is None:
        return b""
    if not length.strip().isdigit():
        raise _Refused(400, f"Content-Length {length!r} is not a byte count")
    if int(length) > limit:
        raise _Refused(413, f"body of {length} bytes is over the {limit}-byte limit of this receiver")
    return handler.rfile.read(int(length))


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the sender gave up waiting (its timeout): nobody to answer
        handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for the sender's delayed ACK

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.receiver._serve(self)

    do_PUT = do_PATCH = do_DELETE = do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silent: the receiver runs inside test processes, which look at `deliveries()` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung answer must not keep the test process alive
    allow_reuse_address = True  # start() after close() binds the same port while old sockets linger

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)
