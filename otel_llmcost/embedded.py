"""The embedded default: telemetry with no collector, kept in a local SQLite store, summed up at exit.

Used by `otel-llmcost run` (through a sitecustomize hook, like `opentelemetry-instrument`) and by
`otel-llmcost demo`. When an OTLP endpoint or exporter is configured, the embedded mode steps aside:
the user's pipeline is the place for the telemetry.
"""

from __future__ import annotations

import atexit
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .environment_variables import OTEL_LLMCOST_CONFIG, OTEL_LLMCOST_STORE, OTEL_LLMCOST_SUMMARY, env_bool
from .store import LocalStoreSpanExporter, format_summary, summarize
from .telemetry import Telemetry

DEFAULT_STORE = "llmcost.db"
RUN_ID_ENV = "OTEL_LLMCOST_RUN_ID"


def otlp_configured(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when the user has pointed OpenTelemetry somewhere (then the embedded mode is not used)."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        return True
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return exporter not in ("", "none")


@dataclass
class EmbeddedSession:
    """Providers, instrumentation and the store of one embedded run."""

    store: Path
    run_id: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    telemetry: Telemetry
    print_summary: bool = True
    output: IO[str] = field(default_factory=lambda: sys.stderr)
    closed: bool = False

    def close(self) -> str | None:
        """Flush spans to the store, restore the SDKs, print the summary; safe to call twice."""
        if self.closed:
            return None
        self.closed = True
        import otel_llmcost

        otel_llmcost.uninstrument()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        text = format_summary(summarize(self.store, self.run_id))
        if self.print_summary:
            print(text, file=self.output, flush=True)
        return text


def start(
    store: str | Path | None = None,
    *,
    run_id: str | None = None,
    print_summary: bool | None = None,
    set_global: bool = True,
    register_atexit: bool = True,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    **instrument_kwargs: Any,
) -> EmbeddedSession:
    """Instrument every installed SDK, keep calls in the SQLite store, and sum them up at exit.

    `span_processors` and `metric_readers` send the same telemetry elsewhere too (the demo's OTLP export).
    """
    from opentelemetry import metrics, trace

    import otel_llmcost

    path = Path(store or os.environ.get(OTEL_LLMCOST_STORE) or DEFAULT_STORE)
    run = run_id or os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex
    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(LocalStoreSpanExporter(path, run)))
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=list(metric_readers))
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    if os.environ.get(OTEL_LLMCOST_CONFIG):
        # Budgets, rate limits, caches and routing from the config file, around the same providers.
        from .setup import configure

        telemetry = configure(tracer_provider=tracer_provider, meter_provider=meter_provider,
                              **instrument_kwargs).telemetry
    else:
        telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                                            **instrument_kwargs)
    session = EmbeddedSession(
        store=path, run_id=run, tracer_provider=tracer_provider, meter_provider=meter_provider,
        telemetry=telemetry,
        print_summary=env_bool(OTEL_LLMCOST_SUMMARY, True) if print_summary is None else print_summary,
    )
    if register_atexit:
        atexit.register(session.close)
    return session
