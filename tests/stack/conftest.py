"""Stack fixtures: the real Collector (our build, our config), Prometheus, Alertmanager, an OTLP/HTTP sink.

Every server is a real process on a free loopback port (`otel_llmcost.testing.processes`); a missing
binary fails the test with the command that installs it, because CI installs them all.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)

from otel_llmcost.testing.processes import (
    AlertmanagerServer,
    CollectorProcess,
    LLMCostProcessor,
    PrometheusServer,
    collector_binary,
)

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIG = REPO / "collector" / "otelcol.yaml"
SERVICE = "llmcost-stack-test"
ENVIRONMENT = "stack-test"


@dataclass
class ReceivedExport:
    """One OTLP/HTTP request as the sink decoded it."""

    path: str
    content_encoding: str
    content_type: str
    request: Any  # ExportMetricsServiceRequest | ExportTraceServiceRequest


@dataclass
class OTLPSink:
    """A loopback OTLP/HTTP receiver (protobuf, gzip or not) that keeps what it is sent.

    It stands where the processor service sits in the stack, so a test can check what the Collector
    sends there, as its otlphttp exporter sent it; with `upstream` it relays each request unchanged to
    the real processor service and answers with the processor's answer (a recording proxy).
    """

    server: ThreadingHTTPServer
    upstream: str | None = None
    received: list[ReceivedExport] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def exports(self, path: str) -> list[ReceivedExport]:
        with self.lock:
            return [item for item in self.received if item.path == path]

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for item in self.exports("/v1/metrics")
            for rm in item.request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    def spans(self) -> list[Any]:
        return [
            span
            for item in self.exports("/v1/traces")
            for rs in item.request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


def _relay(url: str, body: bytes, headers: Any) -> tuple[int, str, bytes]:
    """POST `body` with the original content headers to `url`; its status, content type and body."""
    forward = {name: headers[name] for name in ("Content-Type", "Content-Encoding") if headers.get(name)}
    request = urllib.request.Request(url, data=body, headers=forward, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _sink_handler(sink_ref: list[OTLPSink]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # else every answer waits for a delayed ACK
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            sink = sink_ref[0]
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            kinds = {
                "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
                "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
            }
            if self.path not in kinds:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request_type, response_type = kinds[self.path]
            request = request_type()
            request.ParseFromString(body)
            with sink.lock:
                sink.received.append(ReceivedExport(self.path, encoding, self.headers.get("Content-Type", ""),
                                                    request))
            status, content_type, payload = 200, "application/x-protobuf", response_type().SerializeToString()
            if sink.upstream is not None:
                status, content_type, payload = _relay(sink.upstream + self.path, raw, self.headers)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    return Handler


PROCESSOR_CONFIG = {
    "budgets": [
        {"name": "stack-monthly", "amount": 50},
        {"name": "stack-summaries", "amount": 5, "window": "day", "scope": {"feature": "summaries"}},
    ],
}


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMCostProcessor]:
    """The real processor service (`otel-llmcost processor`) with two budgets, its ledger in a temp dir."""
    with LLMCostProcessor(PROCESSOR_CONFIG, workdir=tmp_path_factory.mktemp("processor"), token="stack-test") as server:
        yield server


@pytest.fixture(scope="module")
def otlp_sink(processor: LLMCostProcessor) -> Iterator[OTLPSink]:
    """A recording OTLP/HTTP proxy on loopback in front of the processor service."""
    ref: list[OTLPSink] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _sink_handler(ref))
    ref.append(OTLPSink(server, upstream=processor.url))
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    yield ref[0]
    server.shutdown()
    server.server_close()


class TraceBackend(TraceServiceServicer):
    """An OTLP/gRPC trace receiver on loopback, where jaeger sits in docker-compose; keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        self.endpoint = ""

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:  # noqa: N802
        with self.lock:
            self.requests.append(request)
        return ExportTraceServiceResponse()

    def spans(self) -> list[Any]:
        with self.lock:
            return [span for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans
                    for span in ss.spans]


@pytest.fixture(scope="module")
def trace_backend() -> Iterator[TraceBackend]:
    """A gRPC trace backend on a free loopback port."""
    backend = TraceBackend()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(backend, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    backend.endpoint = f"127.0.0.1:{port}"
    yield backend
    server.stop(grace=None)


@pytest.fixture(scope="module")
def collector(otlp_sink: OTLPSink, trace_backend: TraceBackend,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """Our Collector build running collector/otelcol.yaml, endpoints on loopback, processor via the proxy."""
    process = CollectorProcess(
        COLLECTOR_CONFIG,
        env={"LLMCOST_PROCESSOR_ENDPOINT": otlp_sink.url, "LLMCOST_TRACES_ENDPOINT": trace_backend.endpoint},
        workdir=tmp_path_factory.mktemp("collector"),
        binary=collector_binary(),
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def prometheus(collector: CollectorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping the Collector's exporter every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "otel-collector", "static_configs": [{"targets": [collector.prometheus_target]}]}],
    }
    with PrometheusServer(config, workdir=tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    """Alertmanager with a receiver that sends nowhere (tests read alerts from its API)."""
    config = {"route": {"receiver": "null", "group_wait": "1s"}, "receivers": [{"name": "null"}]}
    with AlertmanagerServer(config, workdir=tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


def run_demo_traffic(collector: CollectorProcess, calls: int = 80, rate: float = 40) -> str:
    """`otel-llmcost demo --traffic --calls N` (this checkout's) against `collector` over OTLP/HTTP; its output.

    A call count, not a duration, so a slow machine sends the same workload (cache hits, rate-limit
    refusals, the reasoning, unpriced and failing calls all come within the first 40 calls). The service
    is named `SERVICE` and the environment `ENVIRONMENT`, so queries can pick this run.
    """
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name={ENVIRONMENT}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for name in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_LLMCOST_CONFIG"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "otel_llmcost.cli", "demo", "--traffic", "--calls", str(calls),
         "--rate", str(rate), "--export-interval", "1"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, f"demo --traffic failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def demo_traffic(collector: CollectorProcess, prometheus: PrometheusServer, otlp_sink: OTLPSink) -> str:
    """80 calls of demo traffic through the Collector, with Prometheus scraping it; the demo's output."""
    return run_demo_traffic(collector)
