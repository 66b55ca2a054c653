"""Stack fixtures: the real Collector (our build, our config), Prometheus, Alertmanager, an OTLP/HTTP sink.

Every server is a real process on a free loopback port (`otel_llmcost.testing.processes`); a missing
binary fails the test with the command that installs it, because CI installs them all.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_llmcost.testing.processes import (
    AlertmanagerServer,
    CollectorProcess,
    PrometheusServer,
    collector_binary,
)

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIG = REPO / "collector" / "otelcol.yaml"


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
    forwards there, byte for byte as the Collector's otlphttp exporter sent it.
    """

    server: ThreadingHTTPServer
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


def _sink_handler(sink_ref: list[OTLPSink]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # else every answer waits for a delayed ACK
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            sink = sink_ref[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
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
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    return Handler


@pytest.fixture(scope="module")
def otlp_sink() -> Iterator[OTLPSink]:
    """An OTLP/HTTP sink on loopback, where the processor service would be."""
    ref: list[OTLPSink] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _sink_handler(ref))
    ref.append(OTLPSink(server))
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    yield ref[0]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def collector(otlp_sink: OTLPSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """Our Collector build running collector/otelcol.yaml, endpoints on loopback, the processor = the sink.

    The trace backend (jaeger in compose) points at a closed port: the Collector must keep serving
    the other exporters while one of them fails.
    """
    process = CollectorProcess(
        COLLECTOR_CONFIG,
        env={"LLMCOST_PROCESSOR_ENDPOINT": otlp_sink.url, "LLMCOST_TRACES_ENDPOINT": "127.0.0.1:1"},
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
