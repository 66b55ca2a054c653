"""Fault injectors of the reliability suite: a Redis we can crash, pause and make durable; an OTLP
endpoint that fails on demand; and a scanner that looks for secrets in everything we emitted."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_llmcost.budget import BudgetEngine, load_budget_config
from otel_llmcost.service import ProcessorConfig, ProcessorService, open_store
from otel_llmcost.testing import WebhookReceiver
from otel_llmcost.testing.processes import RedisServer

TOKEN = "reliability-token-0123456789abcdef"


class ManagedRedis(RedisServer):
    """redis-server on loopback that a test can SIGKILL, restart on the same port, or freeze.

    `appendonly=True` keeps an append-only file fsynced on every write (``appendfsync always``), the
    setting under which an acknowledged write survives ``kill -9``; without it a restart comes back empty.
    `paused()` freezes the server with SIGSTOP (it keeps its sockets: clients hang, as with a stalled
    host) and thaws it with SIGCONT on exit, whatever happens in between.
    """

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        super().__init__(workdir)
        self.appendonly = appendonly

    def command(self) -> list[str]:
        command = super().command()
        if self.appendonly:
            at = command.index("--appendonly")
            command[at + 1] = "yes"
            command += ["--appendfsync", "always"]
        return command

    @property
    def pid(self) -> int:
        assert self.process is not None, "redis-server is not running"
        return self.process.pid

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def close(self) -> None:
        self.resume()
        self.kill()


# -- an OTLP/HTTP endpoint that fails on demand -----------------------------------------------------------
@dataclass
class OTLPReceipt:
    """One export request as received: path, status we answered (None: never), items decoded from the body."""

    path: str
    status: int | None
    spans: int = 0
    points: int = 0
    body: bytes = b""


class FaultyOTLPServer(WebhookReceiver):
    """A loopback OTLP/HTTP receiver (protobuf) standing in for a Collector or the processor service.

    `mode` decides every answer: ``ok`` (200), ``500``/``503`` (that status), ``slow`` (answer 200 after
    `delay` seconds), ``hang`` (read the request, never answer until stopped). `stop()` closes the port
    (connection refused: the collector is down) and `start()` opens it again. Every request is kept;
    `receipts` has them decoded, so a test can count the spans and metric points that arrived and scan
    them for secrets.
    """

    MODES = {"ok": 200, "500": 500, "503": 503, "slow": 200, "hang": None}

    def __init__(self, mode: str = "ok", delay: float = 2.0) -> None:
        super().__init__("")
        self.slow_delay = delay
        self._receipts: list[OTLPReceipt] = []
        self._decoding = threading.Lock()
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode {mode!r} is not one of {sorted(self.MODES)}")
        self._mode = mode
        self.status = self.MODES[mode]
        self.delay = self.slow_delay if mode == "slow" else 0.0

    def stop(self) -> None:
        """Close the port: clients now get connection refused."""
        self.close()

    @property
    def endpoint(self) -> str:
        return self.base_url

    @property
    def receipts(self) -> list[OTLPReceipt]:
        """Every request, oldest first, gunzipped; spans and points counted in those answered 200."""
        with self._decoding:
            for at, delivery in enumerate(self.deliveries()):
                if at < len(self._receipts) and self._receipts[at].status == delivery.status:
                    continue  # decoded already
                raw = delivery.body
                if delivery.headers.get("content-encoding", "").lower() == "gzip":
                    raw = gzip.decompress(raw)
                receipt = OTLPReceipt(delivery.path, delivery.status, body=raw)
                if delivery.status == 200:
                    receipt.spans, receipt.points = _count_items(delivery.path, raw)
                self._receipts[at:at + 1] = [receipt]
            return list(self._receipts)

    def accepted(self, what: str) -> int:
        """Spans (``spans``) or metric points (``points``) answered 200."""
        return sum(getattr(r, what) for r in self.receipts if r.status == 200)


def _count_items(path: str, raw: bytes) -> tuple[int, int]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    if path.endswith("/v1/traces"):
        traces = ExportTraceServiceRequest.FromString(raw)
        return sum(len(s.spans) for r in traces.resource_spans for s in r.scope_spans), 0
    if path.endswith("/v1/metrics"):
        metrics = ExportMetricsServiceRequest.FromString(raw)
        points = 0
        for resource in metrics.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points += len(getattr(metric, kind).data_points) if kind else 0
        return 0, points
    return 0, 0


# -- secrets in emitted telemetry ---------------------------------------------------------------------
def flatten(value: Any) -> Iterator[str]:
    """Every string inside `value` (attributes, events, dicts, lists, dataclasses, bytes decoded)."""
    if value is None:
        return
    if isinstance(value, bytes):
        yield value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from flatten(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from flatten(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from flatten(getattr(value, name))
    elif hasattr(value, "items"):
        yield from flatten(dict(value.items()))
    else:
        yield str(value)


def leaks(haystacks: Iterable[tuple[str, Any]], needles: Iterable[str]) -> list[str]:
    """`where: needle` for each needle found in a haystack (empty: nothing leaked)."""
    found = []
    needles = [n for n in needles if n]
    for where, value in haystacks:
        for text in flatten(value):
            for needle in needles:
                if needle in text:
                    found.append(f"{where}: {needle!r}")
    return sorted(set(found))


def span_haystacks(spans: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Everything a span carries that an exporter would send: name, attributes, events, links, status."""
    for span in spans:
        where = f"span {span.name!r}"
        yield where + " name", span.name
        yield where + " attributes", dict(span.attributes or {})
        for event in span.events:
            yield where + f" event {event.name!r}", [event.name, dict(event.attributes or {})]
        for link in span.links:
            yield where + " link", dict(link.attributes or {})
        yield where + " status", span.status.description or ""
        yield where + " resource", dict(span.resource.attributes)


def metric_haystacks(data: Any) -> Iterator[tuple[str, Any]]:
    """Metric names, descriptions and every data point's attributes."""
    if data is None:
        return
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                where = f"metric {metric.name}"
                yield where, [metric.name, metric.description, metric.unit]
                for point in metric.data.data_points:
                    yield where + " point", dict(point.attributes or {})


def json_lines(path: Path) -> list[Any]:
    """Parsed JSON lines of a file (webhook receivers write one per request)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


# -- the processor service in this process ----------------------------------------------------------
class Processor:
    """An in-process processor service on a loopback port, with a keep-alive client."""

    def __init__(self, tmp_path: Path) -> None:
        config_path = tmp_path / "processor.yaml"
        config_path.write_text("forecast: false\nalerts: {log: false}\nbudgets:\n  - {name: total, amount: 1000}\n"
                               "  - {name: per-user, amount: 5, window: day, scope: {by: user}}\n")
        self.store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}", retention=86400.0)
        self.engine = BudgetEngine(load_budget_config(config_path), self.store, sinks=[])
        self.service = ProcessorService(self.engine, self.store,
                                        ProcessorConfig(host="127.0.0.1", port=0, max_body=256 * 1024,
                                                        span_accounting="all"), token=TOKEN)
        self._context = self.service.serve()
        server = self._context.__enter__()
        self.port = server.server_address[1]
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                return response.status
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()  # the server closed a connection it refused: open another
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def healthy(self) -> bool:
        return self.request("GET", "/healthz") == 200

    def ledger_sane(self) -> None:
        for status in self.engine.state():
            assert status.spend.is_finite() and status.spend >= 0, status
            assert status.reserved >= 0, status

    def close(self) -> None:
        self.connection.close()
        self._context.__exit__(None, None, None)
        self.engine.close()
        self.store.close()
