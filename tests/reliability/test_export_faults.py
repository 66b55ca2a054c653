"""The telemetry path failing under the app: the OTLP endpoint (a Collector, or the processor service) is
down, stalls, hangs, or answers 500 / 503 while the app makes LLM calls through the real OpenAI SDK.

The app exports with the OpenTelemetry SDK's own pipeline (BatchSpanProcessor + OTLP/HTTP span exporter,
PeriodicExportingMetricReader + OTLP/HTTP metric exporter), the way `opentelemetry-instrument` sets it up.
Checks: every LLM call succeeds with bounded added latency; the span queue never grows past its bound;
every span is accounted for — exported, failed or dropped — by the SDK's own counters
(``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true``: ``otel.sdk.processor.span.processed`` with
``error.type=queue_full``, ``otel.sdk.exporter.span.exported`` with ``error.type``), which travel with the
app's other metrics once the endpoint is back; and the cumulative cost counter arrives whole after recovery.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import otel_llmcost
from otel_llmcost.testing.llm_server import LoopbackLLMServer
from tests.conftest import metric_points

from .helpers import FaultyOTLPServer, wait_for

CALLS = 120
QUEUE = 32
MESSAGES = [{"role": "user", "content": "What is the refund window for sale items?"}]


def cumulative_cost(server: FaultyOTLPServer) -> float:
    """The llmcost.cost total in the last metrics export the endpoint accepted (cumulative temporality)."""
    for receipt in reversed(server.receipts):
        if receipt.status == 200 and receipt.path.endswith("/v1/metrics") and receipt.body:
            request = ExportMetricsServiceRequest.FromString(receipt.body)
            total, seen = 0.0, False
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == "llmcost.cost":
                            seen = True
                            total += sum(p.as_double for p in metric.sum.data_points)
            if seen:
                return total
    return -1.0


class App:
    """An instrumented app exporting OTLP to `endpoint`, with the SDK's self-metrics kept in memory."""

    def __init__(self, endpoint: str, queue: int = QUEUE) -> None:
        self.internal = InMemoryMetricReader()
        self.internal_provider = MeterProvider(metric_readers=[self.internal])
        self.processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=1, meter_provider=self.internal_provider),
            max_queue_size=queue, max_export_batch_size=8, schedule_delay_millis=50,
            meter_provider=self.internal_provider)
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self.processor)
        self.local = InMemoryMetricReader()
        self.metric_reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=1), export_interval_millis=200)
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader, self.local])
        otel_llmcost.instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        self.max_queue = 0

    def run(self, client: openai.OpenAI, calls: int) -> list[float]:
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            latencies.append(time.perf_counter() - started)
            self.max_queue = max(self.max_queue, len(self.processor._batch_processor._queue))
        return latencies

    def span_counts(self) -> dict[str, float]:
        """Spans by fate, from the SDK's own counters."""
        counts = {"queue_full": 0.0, "exported": 0.0, "export_failed": 0.0}
        for point in metric_points(self.internal, "otel.sdk.processor.span.processed"):
            if point.attributes.get("error.type") == "queue_full":
                counts["queue_full"] += point.value
        for point in metric_points(self.internal, "otel.sdk.exporter.span.exported"):
            key = "export_failed" if point.attributes.get("error.type") else "exported"
            counts[key] += point.value
        return counts

    def spans_in_flight(self) -> float:
        return sum(p.value for p in metric_points(self.internal, "otel.sdk.exporter.span.inflight"))

    def refused_exports(self) -> float:
        """Export operations the endpoint answered with an HTTP error (from the duration histogram)."""
        return sum(p.count for p in metric_points(self.internal, "otel.sdk.exporter.operation.duration")
                   if int(p.attributes.get("http.response.status_code", 0) or 0) >= 400)

    def cost(self) -> float:
        return sum(p.value for p in metric_points(self.local, "llmcost.cost"))

    def close(self) -> float:
        """Shut the pipeline down; how long the app's exit waits for it."""
        otel_llmcost.uninstrument()
        started = time.monotonic()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.internal_provider.shutdown()
        return time.monotonic() - started


@pytest.fixture(autouse=True)
def internal_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    yield


@pytest.fixture
def client(llm_server: LoopbackLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as made:
        yield made


MODES = ["down", "503", "500", "slow", "hang"]


@pytest.mark.reliability(
    "the OTLP endpoint (Collector or processor) down, answering 503 or 500, slow (3 s) or hanging, "
    "while the app makes 120 LLM calls; then back",
    "every call succeeds with bounded added latency; the span queue stays within its bound; every span is "
    "exported, failed or dropped by the SDK's counters (none unaccounted); the cumulative cost arrives "
    "whole after recovery",
)
@pytest.mark.parametrize("mode", MODES)
def test_app_is_unaffected_by_a_failing_telemetry_endpoint(mode: str, client: openai.OpenAI,
                                                          record_number: Any) -> None:
    """Telemetry failures cost the app's calls no exception and a bounded delay, and lose nothing uncounted."""
    endpoint = FaultyOTLPServer("ok" if mode == "down" else mode, delay=3.0).start()
    if mode == "down":
        endpoint.stop()  # connection refused
    app = App(endpoint.endpoint)
    latencies = app.run(client, CALLS)
    median = statistics.median(latencies)
    record_number("median call latency (ms)", round(median * 1000, 2))
    record_number("worst call latency (ms)", round(max(latencies) * 1000, 2))
    record_number("max span queue length (bound)", f"{app.max_queue} ({QUEUE})")
    assert max(latencies) < 2.0, "an app call waited on the telemetry path"
    assert app.max_queue <= QUEUE
    counts = app.span_counts()
    record_number("spans dropped (queue full) / failed to export / exported",
                  f"{counts['queue_full']:.0f} / {counts['export_failed']:.0f} / {counts['exported']:.0f}")
    in_queue, in_flight = len(app.processor._batch_processor._queue), app.spans_in_flight()
    # Conservation: every span the app made went through one of the SDK's counters, or is still queued
    # or in an export under way. (The SDK files a batch refused with HTTP 5xx under "exported": see
    # test_sdk_counts_5xx_refusals_as_failed_exports.)
    assert counts["queue_full"] + counts["export_failed"] + counts["exported"] + in_queue + in_flight == CALLS
    if mode != "slow":
        assert endpoint.accepted("spans") == 0
    record_number("spans the endpoint accepted while failing", endpoint.accepted("spans"))
    # The endpoint comes back: the cumulative cost counter arrives whole, drops included in the self-metrics.
    endpoint.mode = "ok"
    if mode == "down":
        endpoint.start()
    assert wait_for(lambda: abs(cumulative_cost(endpoint) - app.cost()) < 1e-12, timeout=15)
    record_number("cost total delivered after recovery (USD)", round(cumulative_cost(endpoint), 9))
    shutdown = app.close()
    record_number("shutdown time (s)", round(shutdown, 2))
    endpoint.stop()
    assert shutdown < 15


@pytest.mark.reliability(
    "the OTLP endpoint healthy (baseline for the rows above)",
    "every span exported, none dropped; the cost total delivered",
)
def test_baseline_exports_everything(client: openai.OpenAI, record_number: Any) -> None:
    """With a healthy endpoint every span arrives and the SDK counts none dropped."""
    endpoint = FaultyOTLPServer("ok").start()
    app = App(endpoint.endpoint, queue=4 * CALLS)  # room for all: a loaded machine may export late
    latencies = []
    for _ in range(CALLS):  # paced like a real app, so the batch processor keeps up
        latencies += app.run(client, 1)
        time.sleep(0.005)
    app.processor.force_flush()
    record_number("median call latency (ms)", round(statistics.median(latencies) * 1000, 2))
    assert wait_for(lambda: endpoint.accepted("spans") == CALLS, timeout=10)
    assert app.span_counts()["queue_full"] == 0
    assert wait_for(lambda: abs(cumulative_cost(endpoint) - app.cost()) < 1e-12, timeout=10)
    app.close()
    endpoint.stop()


@pytest.mark.reliability(
    "the OTLP endpoint answering 503 (the SDK's own self-metrics, upstream opentelemetry-python)",
    "a span batch refused with HTTP 5xx is counted with error.type in otel.sdk.exporter.span.exported",
)
@pytest.mark.xfail(strict=True, reason="opentelemetry-exporter-otlp-proto-http 1.45 sets no error for an HTTP "
                   "status failure, so refused batches count as exported; the duration histogram has the status")
def test_sdk_counts_5xx_refusals_as_failed_exports(client: openai.OpenAI, record_number: Any) -> None:
    """Batches refused with 503 show up as failed exports in the SDK's span counter."""
    endpoint = FaultyOTLPServer("503").start()
    app = App(endpoint.endpoint)
    app.run(client, 16)
    app.processor.force_flush()
    counts = app.span_counts()
    record_number("export operations refused (from otel.sdk.exporter.operation.duration)", app.refused_exports())
    record_number("spans counted exported / failed", f"{counts['exported']:.0f} / {counts['export_failed']:.0f}")
    app.close()
    endpoint.stop()
    assert app.refused_exports() > 0
    assert counts["exported"] == 0 and counts["export_failed"] > 0
