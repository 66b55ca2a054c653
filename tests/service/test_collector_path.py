"""Through the real Collector: SDK → Collector (otlphttp exporter, gzip, retries) → processor."""

from __future__ import annotations

import time
from decimal import Decimal

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_llmcost.testing.processes import CollectorProcess, free_port


def test_collector_forwards_cost_metrics_and_spans_to_the_processor(start_processor, tmp_path):
    """The Collector's gzip OTLP/HTTP export is accepted: cost counted once, spans priced."""
    p = start_processor(span_accounting="off")
    env = {"LLMCOST_PROCESSOR_ENDPOINT": p.url, "LLMCOST_TRACES_ENDPOINT": f"127.0.0.1:{free_port()}"}
    with CollectorProcess(env=env, workdir=tmp_path / "collector") as collector:
        resource = Resource.create({"service.name": "via-collector", "service.instance.id": "c-1"})
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{collector.otlp_http_url}/v1/metrics"),
                                               export_interval_millis=3_600_000)
        meters = MeterProvider(metric_readers=[reader], resource=resource)
        cost = meters.get_meter("otel_llmcost").create_counter("llmcost.cost", unit="USD")
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.otlp_http_url}/v1/traces")))
        tracer = tracer_provider.get_tracer("some.other.instrumentation")
        for value in (0.125, 0.25, 0.5):
            cost.add(value, {"llmcost.feature": "search"})
            with tracer.start_as_current_span("chat gpt-4o") as span:
                span.set_attributes({"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
                                     "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})
        assert reader.force_flush(30_000)
        cost.add(0.125, {"llmcost.feature": "search"})
        assert reader.force_flush(30_000)  # a second cumulative export: only the difference counts
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                p.spend("monthly") < Decimal("1")
                or p.service.counters.get("llmcost_processor_spans_total", result="priced") < 3):
            time.sleep(0.2)
        meters.shutdown()
        tracer_provider.shutdown()
    assert p.spend("monthly") == Decimal("1")
    assert p.spend("by-service", "service.name=via-collector") == Decimal("1")
    assert p.service.counters.get("llmcost_processor_spans_total", result="priced") == 3
    assert p.service.counters.get("llmcost_processor_requests_total", path="/v1/metrics", status="200") >= 2
