"""The processor service: OTLP/HTTP in, budgets applied, hints and metrics out.

    service = ProcessorService(engine, store, ProcessorConfig(port=0))
    with service.serve() as server:            # a ThreadingHTTPServer on its own thread
        server.server_address                   # (host, port)

Endpoints: `POST /v1/metrics`, `POST /v1/traces` (OTLP/HTTP, protobuf or JSON, gzip or not),
`GET /v1/hints` (bearer token), `GET /metrics` (Prometheus text), `GET /healthz`.

A request is acknowledged (200) only after its spend is committed (see `store.py`); if the ledger
cannot commit, the answer is 503, which the Collector retries. Malformed bodies get 400 with the
reason, bodies over the size limit 413, and none of it reaches the process: every handler error is
caught, logged and answered.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..budget.engine import BudgetEngine
from ..budget.health import ledger_health
from ..pricing import PriceCatalog
from . import otlp
from .accounting import Accountant
from .config import ProcessorConfig
from .exposition import Counters, budget_gauges, gauge, ledger_health_lines
from .hints_api import hints_payload
from .lite import AttributeCache
from .metrics import extract_metrics, point_count
from .pricing import ServicePricer
from .spans import USAGE_KEYS, attribution_keys, extract_spans
from .store import IngestStore

_log = logging.getLogger(__name__)
_NANO = 1e-9


class ProcessorService:
    """The service's logic, apart from HTTP plumbing: each method returns (status, body, content type)."""

    def __init__(self, engine: BudgetEngine, store: IngestStore, config: ProcessorConfig | None = None, *,
                 catalog: PriceCatalog | None = None, token: str | None = None) -> None:
        self.engine = engine
        self.store = store
        self.config = config or ProcessorConfig()
        self.token = token
        self.pricer = ServicePricer(catalog)
        self.accountant = Accountant(engine, store)
        self.span_keys = attribution_keys(self.accountant.dimensions())
        self._attributes = AttributeCache(USAGE_KEYS, self.span_keys)
        self.counters = Counters()
        self.started = time.time()
        self.healthy = True
        self.alert_interval = 1.0
        self._stop = threading.Event()
        self._alerts: threading.Thread | None = None
        self._describe()

    # -- background: alert checks ------------------------------------------------------------------
    def start_alerts(self) -> None:
        """Check budgets whose spend moved for alerts about every `alert_interval` seconds."""
        if self._alerts is None:
            self._stop.clear()
            self._alerts = threading.Thread(target=self._alert_loop, name="llmcost-alerts", daemon=True)
            self._alerts.start()

    def stop_alerts(self) -> None:
        """Stop the checks after a last one (so nothing committed goes unchecked)."""
        if self._alerts is not None:
            self._stop.set()
            self._alerts.join(timeout=10)
            self._alerts = None
        self.accountant.check_alerts()

    def _alert_loop(self) -> None:
        while not self._stop.wait(self.alert_interval):
            self.accountant.check_alerts()

    def _describe(self) -> None:
        c = self.counters
        c.describe("llmcost_processor_requests_total", "OTLP and API requests by path and HTTP status.")
        c.describe("llmcost_processor_points_total", "Metric data points by result: counted, unchanged "
                   "(baseline or no new spend), duplicate, too_old (past the dedup window), rejected, unpriced, "
                   "covered (by llmcost.cost), ignored (not a cost metric).")
        c.describe("llmcost_processor_spans_total", "Spans by result: received, priced, unpriced, invalid, "
                   "counted (against budgets), duplicate, too_old (past the dedup window).")
        c.describe("llmcost_processor_dedup_hits_total", "Points and spans already counted (resent payloads).")
        c.describe("llmcost_processor_cost_USD_total", "Spend counted against budgets, by source.")
        c.describe("llmcost_processor_span_cost_USD_total", "Cost of the priced spans (per-call detail), "
                   "whether or not spans count against budgets.")

    # -- OTLP ingest ------------------------------------------------------------------------------
    def ingest(self, signal: str, body: bytes, content_type: str | None, encoding: str | None
               ) -> tuple[int, bytes, str]:
        kind = otlp.media_type(content_type)
        try:
            if signal == "metrics":
                metrics_request = otlp.decode_metrics(body, content_type, encoding, self.config.max_decompressed)
                return self._ingest_metrics(metrics_request, content_type)
            traces_request = otlp.decode_traces(body, content_type, encoding, self.config.max_decompressed)
            return self._ingest_traces(traces_request, content_type)
        except otlp.PayloadError as exc:
            return exc.status, status_body(exc.status, exc.reason, kind), _error_type(kind)

    @staticmethod
    def _extract(read: Callable[[], Any], signal: str) -> Any:
        """Read a request's events. A payload our reader fails on would fail the same way on every retry:
        refuse it (400, the sender drops it) rather than answer 503 and have the Collector resend it for ever."""
        try:
            return read()
        except Exception as exc:
            _log.exception("otel-llmcost processor: an OTLP %s payload could not be read", signal)
            raise otlp.PayloadError(400, f"the {signal} payload could not be read ({type(exc).__name__}: {exc}); "
                                         "it is refused rather than retried") from exc

    def _commit(self, events: list[Any]) -> Any:
        try:
            applied = self.accountant.apply(events)
        except Exception:
            self.healthy = False
            raise
        self.healthy = True
        for source, units in applied.units_by_source.items():
            self.counters.add("llmcost_processor_cost_USD_total", units * _NANO, source=source)
        self.counters.add("llmcost_processor_dedup_hits_total", applied.duplicates)
        return applied

    def _ingest_metrics(self, request: Any, content_type: str | None) -> tuple[int, bytes, str]:
        batch = self._extract(lambda: extract_metrics(request, self.pricer,
                                                                 max_future_ns=int(self.config.max_future * 1e9)), "metrics")
        applied = self._commit(batch.events)
        c = self.counters
        counted = applied.counted
        c.add("llmcost_processor_points_total", counted, result="counted")
        c.add("llmcost_processor_points_total", applied.duplicates, result="duplicate")
        c.add("llmcost_processor_points_total", applied.too_old, result="too_old")
        c.add("llmcost_processor_points_total", len(batch.events) - counted - applied.duplicates - applied.too_old,
              result="unchanged")
        c.add("llmcost_processor_points_total", batch.rejected, result="rejected")
        c.add("llmcost_processor_points_total", batch.unpriced, result="unpriced")
        c.add("llmcost_processor_points_total", batch.covered, result="covered")
        c.add("llmcost_processor_points_total", max(point_count(request) - len(batch.events) - batch.rejected
                                                    - batch.unpriced - batch.covered, 0), result="ignored")
        response = ExportMetricsServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_data_points = batch.rejected
            response.partial_success.error_message = "; ".join(batch.errors)
        body, kind = otlp.encode_response(response, content_type)
        return 200, body, kind

    def _ingest_traces(self, request: Any, content_type: str | None) -> tuple[int, bytes, str]:
        batch = self._extract(lambda: extract_spans(request, self.pricer, self.config.span_accounting,
                                                    self.span_keys, self._attributes,
                                                    int(self.config.max_future * 1e9)), "traces")
        applied = self._commit(batch.events)
        c = self.counters
        c.add("llmcost_processor_spans_total", batch.spans, result="received")
        c.add("llmcost_processor_spans_total", batch.priced, result="priced")
        c.add("llmcost_processor_spans_total", batch.unpriced, result="unpriced")
        c.add("llmcost_processor_spans_total", batch.invalid, result="invalid")
        c.add("llmcost_processor_spans_total", applied.counted, result="counted")
        c.add("llmcost_processor_spans_total", applied.duplicates, result="duplicate")
        c.add("llmcost_processor_spans_total", applied.too_old, result="too_old")
        c.add("llmcost_processor_span_cost_USD_total", batch.units_priced * _NANO)
        response = ExportTraceServiceResponse()
        if batch.invalid:
            response.partial_success.rejected_spans = batch.invalid
            response.partial_success.error_message = "; ".join(batch.errors)
        body, kind = otlp.encode_response(response, content_type)
        return 200, body, kind

    # -- API ----------------------------------------------------------------------------------------
    def hints(self, query: str, authorization: str | None) -> tuple[int, bytes, str]:
        if not self.token:
            return _json(403, {"error": "hints are off: set the bearer token in the environment variable "
                                        f"{self.config.token_env} and restart the processor"})
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return _json(401, {"error": "send Authorization: Bearer <token> (the processor's "
                                        f"{self.config.token_env})"})
        try:
            payload = hints_payload(self.engine, parse_qs(query, keep_blank_values=False))
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, payload)

    def metrics_text(self) -> tuple[int, bytes, str]:
        lines = self.counters.render()
        lines += budget_gauges(self.engine.state())
        lines += ledger_health_lines(ledger_health(self.engine))
        entries = self.store.stream_count()
        if entries is not None:
            lines += gauge("llmcost_processor_state_entries", entries,
                           "Stream series and dedup marks held by the ingest store.")
        lines += gauge("llmcost_processor_start_time_seconds", self.started, "When the processor started.")
        return 200, ("\n".join(lines) + "\n").encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8"

    def health(self) -> tuple[int, bytes, str]:
        if not self.healthy:
            return _json(503, {"status": "failing", "reason": "the last commit to the ledger failed"})
        return _json(200, {"status": "ok", "uptime_seconds": round(time.time() - self.started, 3)})

    # -- serving ------------------------------------------------------------------------------------
    def make_server(self) -> ThreadingHTTPServer:
        """A bound (not yet serving) HTTP server for this service."""
        return _Server((self.config.host, self.config.port), _handler(self))

    @contextmanager
    def serve(self) -> Iterator[ThreadingHTTPServer]:
        """Serve on a background thread for the duration of the `with` block."""
        server = self.make_server()
        thread = threading.Thread(target=server.serve_forever, name="llmcost-processor", daemon=True)
        thread.start()
        self.start_alerts()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self.stop_alerts()


class _Server(ThreadingHTTPServer):
    """The stdlib server, with connection errors logged instead of tracebacks printed to stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            _log.debug("otel-llmcost processor: connection from %s ended: %s", client_address, error)
        else:
            _log.exception("otel-llmcost processor: request from %s failed", client_address)


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode("utf-8"), "application/json"


def _error_type(kind: str) -> str:
    return otlp.JSON if kind == otlp.JSON else otlp.PROTOBUF


def status_body(status: int, reason: str, kind: str) -> bytes:
    """An OTLP error body: a `google.rpc.Status` in the request's encoding (plain text if unavailable)."""
    try:
        from google.rpc import status_pb2
    except ImportError:  # pragma: no cover - googleapis-common-protos comes with the service extra
        return reason.encode("utf-8")
    code = {400: 3, 411: 3, 413: 8, 415: 3, 503: 14}.get(status, 2)  # INVALID_ARGUMENT, ..., UNAVAILABLE
    message = status_pb2.Status(code=code, message=reason)
    return otlp.encode_response(message, otlp.JSON if kind == otlp.JSON else otlp.PROTOBUF)[0]


class _DeadlineReader(io.RawIOBase):
    """A socket reader that gives up at the handler's deadline, however the bytes trickle in.

    A per-read timeout alone lets a client that sends one byte a second hold a thread for ever
    (slow loris); this one shortens every read to the time left for the whole request.
    """

    def __init__(self, sock: socket.socket, handler: Any) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive within the request timeout")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


def _handler(service: ProcessorService) -> type[BaseHTTPRequestHandler]:
    limit = service.config.max_body
    request_timeout = service.config.request_timeout

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        wbufsize = 64 * 1024  # headers and body leave in one send (the stdlib writes each part unbuffered)
        deadline = 0.0

        def setup(self) -> None:
            super().setup()
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self), 64 * 1024)

        def handle_one_request(self) -> None:
            # Headers and body must arrive within the request timeout (which also ends idle keep-alives);
            # the stdlib answers a TimeoutError by closing the connection.
            self.deadline = time.monotonic() + request_timeout
            super().handle_one_request()
        server_version = "otel-llmcost-processor"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            _log.debug("%s - " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str, path: str, close: bool = False) -> None:
            service.counters.add("llmcost_processor_requests_total", path=path, status=str(status))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            path = urlsplit(self.path).path
            kind = otlp.media_type(self.headers.get("Content-Type"))
            if path not in ("/v1/metrics", "/v1/traces"):
                self._send(404, b"not found: POST OTLP to /v1/metrics or /v1/traces", "text/plain", "other",
                           close=True)
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
                if length < 0:
                    raise ValueError
            except ValueError:
                reason = "send a Content-Length header (chunked bodies are not accepted)"
                self._send(411, status_body(400, reason, kind), _error_type(kind), path, close=True)
                return
            if length > limit:
                reason = (f"the body is {length} bytes, over the limit of {limit}; send smaller batches "
                          "(the Collector's batch processor: send_batch_max_size)")
                self._send(413, status_body(413, reason, kind), _error_type(kind), path, close=True)
                return
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return
            try:
                status, out, content_type = service.ingest(path[4:], body, self.headers.get("Content-Type"),
                                                           self.headers.get("Content-Encoding"))
            except Exception as exc:
                _log.exception("otel-llmcost processor: %s could not be committed", path)
                reason = f"the spend could not be committed ({type(exc).__name__}); retry later"
                status, out, content_type = 503, status_body(503, reason, kind), _error_type(kind)
            self._send(status, out, content_type, path)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            parts = urlsplit(self.path)
            try:
                if parts.path == "/v1/hints":
                    result = service.hints(parts.query, self.headers.get("Authorization"))
                elif parts.path == "/metrics":
                    result = service.metrics_text()
                elif parts.path in ("/healthz", "/health"):
                    result = service.health()
                else:
                    result = (404, b"not found: GET /v1/hints, /metrics or /healthz", "text/plain")
            except Exception:
                _log.exception("otel-llmcost processor: GET %s failed", parts.path)
                result = (500, b"internal error; see the processor's log", "text/plain")
            path = parts.path if parts.path in ("/v1/hints", "/metrics", "/healthz") else "other"
            self._send(*result, path=path)

    return Handler
