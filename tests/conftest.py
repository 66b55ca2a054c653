"""Shared fixtures: in-memory OpenTelemetry providers and instrumentation set up per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_llmcost
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[metric_reader])


@pytest.fixture
def instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[Telemetry]:
    """Every installed SDK instrumented against the in-memory providers; restored afterwards."""
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield telemetry
    otel_llmcost.uninstrument()


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """All data points of one metric, across scopes."""
    data = reader.get_metrics_data()
    points: list[Any] = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def llmcost_spans(exporter: InMemorySpanExporter) -> list[Any]:
    """Spans our instrumentation made (the SDKs' own spans left out)."""
    return [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "otel_llmcost"]


@pytest.fixture(scope="session")
def _llm_server_session() -> Iterator[LoopbackLLMServer]:
    """One loopback OpenAI/Anthropic/Gemini server for the whole run (starting one per test costs time)."""
    with LoopbackLLMServer() as server:
        yield server


@pytest.fixture
def llm_server(_llm_server_session: LoopbackLLMServer) -> LoopbackLLMServer:
    """The shared loopback server, with scripts, recorded requests and prompt caches cleared for this test."""
    _llm_server_session.reset()
    return _llm_server_session
