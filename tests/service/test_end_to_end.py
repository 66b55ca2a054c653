"""The real chain: OpenAI SDK → otel-llmcost instrumentation → OTLP/HTTP exporters → processor."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import otel_llmcost
from otel_llmcost.telemetry import CallResult


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_sdk_exports_count_exactly_the_calls_made(start_processor, llm_server, temporality):
    """Every call's cost reaches the budgets once through the SDK's own OTLP exporters, in either temporality."""
    p = start_processor(span_accounting="off")
    preferred = None
    if temporality == "delta":
        preferred = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{p.url}/v1/metrics", compression=Compression.Gzip,
                           preferred_temporality=preferred),
        export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "e2e-app", "service.instance.id": "pod-1"})
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{p.url}/v1/traces")))
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    costs: list[Decimal] = []
    telemetry.add_listener(lambda result: costs.append(result.cost.total) if isinstance(result, CallResult)
                           and result.cost else None)
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test", max_retries=0)
    try:
        for round_ in range(2):
            for i in range(5):
                with otel_llmcost.attributes(user_id=f"user-{i % 2}", feature="search"):
                    client.chat.completions.create(
                        model="gpt-4o-mini", max_tokens=50 + i,
                        messages=[{"role": "user", "content": f"question {round_} {i} " * (20 + 10 * i)}])
            assert reader.force_flush(timeout_millis=30_000)
        assert tracer_provider.force_flush(30_000)
    finally:
        otel_llmcost.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    assert len(costs) == 10
    expected = sum(costs, Decimal(0))
    tolerance = Decimal("1e-9") * 10  # the SDK sums float USD; the ledger keeps nano-dollars
    assert abs(p.spend("monthly") - expected) <= tolerance
    assert abs(p.spend("by-service", "service.name=e2e-app") - expected) <= tolerance
    per_user = p.spend("per-user", "user=user-0") + p.spend("per-user", "user=user-1")
    assert per_user == Decimal(0)  # user ids stay off exported metrics unless enabled
    counters = p.service.counters
    assert counters.get("llmcost_processor_spans_total", result="priced") == 10
    span_cost = Decimal(str(counters.get("llmcost_processor_span_cost_USD_total")))
    assert abs(span_cost - expected) <= tolerance
    assert counters.get("llmcost_processor_points_total", result="covered") > 0  # token histograms
