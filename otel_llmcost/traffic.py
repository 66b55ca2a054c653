"""`otel-llmcost demo --traffic`: the guarded demo workload, sent over OTLP for as long as asked.

This is the demo app of docker-compose and the workload the stack tests push through a real
Collector into Prometheus. It runs the demo's calls through the real SDKs against the built-in
loopback server, with the cost guard and budgets on (rate limits by tier, exact and semantic cache,
routing, budgets that warn, throttle and stop), at a steady pace, until `--duration` runs out or it
is interrupted (Ctrl-C or SIGTERM, as `docker stop` sends); then it flushes what it holds.

Telemetry goes out over OTLP as the standard variables say (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), metrics every few
seconds so dashboards move while you watch. Each round also brings what a real app meets now and then:
a reasoning model's thinking tokens, a self-hosted model nobody has a price for, an embeddings call, and
a provider that is briefly overloaded.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor

DEFAULT_SERVICE_NAME = "otel-llmcost-demo"
DEFAULT_EXPORT_INTERVAL = 2.0  # seconds; the SDK's default of 60 s would leave dashboards still

# The demo's guard, from a config file like a user's (`setup.configure` reads it): every part on.
TRAFFIC_CONFIG = """\
budgets:
  - {name: demo-monthly, amount: 50}
  - name: per-user-hourly
    amount: 1.00
    window: {rolling: 1h}
    scope: {by: user}
  - name: summaries-daily
    amount: 0.10
    window: day
    scope: {feature: summaries}
alerts: {log: true}
routing:
  substitutes: {gpt-5.4: gpt-5.4-mini, claude-sonnet-4-6: claude-haiku-4-5, gemini-2.5-pro: gemini-2.5-flash}
  tiers:
    free: {allowed: [gpt-5.4-mini, claude-haiku-4-5, gemini-2.5-flash, acme-llm-7b, text-embedding-3-small]}
    pro: {allowed: [gpt-5.4-mini, claude-haiku-4-5, gemini-2.5-flash, gpt-5.4, claude-sonnet-4-6,
                    gemini-2.5-pro, acme-llm-7b, text-embedding-3-small]}
    enterprise: {allowed: "*"}
  complexity:
    simple: {openai: gpt-5.4-mini, anthropic: claude-haiku-4-5, gcp.gemini: gemini-2.5-flash}
    medium: {openai: gpt-5.4, anthropic: claude-sonnet-4-6, gcp.gemini: gemini-2.5-pro}
guard:
  rate_limits:
    key: user
    default_tier: free
    tiers:                       # the lesson's tiers, free a little tighter so refusals show within seconds
      free: {requests_per_minute: 6, tokens_per_day: 50000}
      pro: {requests_per_minute: 60, tokens_per_day: 500000}
      enterprise: {requests_per_minute: 600}
  budgets: enforce
  cache:
    exact: {ttl: 600}
    semantic: {embedder: hashing, threshold: 0.8}
    cache_all: true
  routing: true
"""


class OTLPSetupError(RuntimeError):
    """OTLP export was asked for but cannot be set up (missing exporter package, unknown protocol)."""


def otlp_exporters() -> tuple[type[Any], type[Any]]:
    """The OTLP span and metric exporter classes for `OTEL_EXPORTER_OTLP_PROTOCOL` (default http/protobuf).

    Each protocol is a different package; a missing one is an `OTLPSetupError` that names it.
    """
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol not in ("http/protobuf", "grpc"):
        raise OTLPSetupError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported here; use http/protobuf (the default) "
            "or grpc"
        )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            return GrpcSpans, GrpcMetrics
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter, OTLPMetricExporter
    except ImportError as exc:
        package = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "'otel-llmcost[otlp]'"
        raise OTLPSetupError(f"OTLP over {protocol} needs its exporter ({exc.name} is missing): "
                             f"pip install {package}") from None


def otlp_pipeline(export_interval: float = DEFAULT_EXPORT_INTERVAL) -> tuple[SpanProcessor, MetricReader]:
    """A span processor and a metric reader exporting over OTLP as the standard variables say.

    The exporters read `OTEL_EXPORTER_OTLP_*` themselves (endpoint, headers, compression, temporality).
    """
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    span_exporter, metric_exporter = otlp_exporters()
    reader = PeriodicExportingMetricReader(metric_exporter(), export_interval_millis=export_interval * 1000)
    return BatchSpanProcessor(span_exporter(), schedule_delay_millis=1000), reader


def otlp_target() -> str:
    """Where OTLP goes, for the progress line (the exporters' own default when nothing is set)."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        return endpoint
    grpc = (os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip().lower() == "grpc"
    return "http://localhost:4317" if grpc else "http://localhost:4318"


def demo_resource() -> Resource:
    """The environment's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named for the demo
    when the environment gives no service name."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


@dataclass
class TrafficStats:
    """What the run did, for the progress line and the caller."""

    calls: int = 0
    refused: int = 0
    provider_errors: int = 0


class _Stop:
    """Set by SIGTERM/SIGINT so the loop ends between calls and the exporters flush."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.event.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def run_traffic(
    duration: float | None = None,
    *,
    max_calls: int | None = None,
    rate: float = 5.0,
    config: str | os.PathLike[str] | None = None,
    export_interval: float = DEFAULT_EXPORT_INTERVAL,
    output: IO[str] | None = None,
    seed: int = 7,
    status_every: float = 10.0,
) -> int:
    """Send the guarded workload over OTLP at `rate` calls a second for `duration` seconds or `max_calls`
    calls, whichever comes first (neither: until interrupted); returns a process exit code."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from .demo import installed_clients
    from .setup import configure
    from .testing.llm_server import LoopbackLLMServer

    out = output or sys.stdout
    if rate <= 0:
        print(f"otel-llmcost demo --traffic: --rate must be above 0 calls a second, got {rate}", file=sys.stderr)
        return 2
    if duration is not None and duration <= 0:
        print(f"otel-llmcost demo --traffic: --duration must be above 0 seconds, got {duration}", file=sys.stderr)
        return 2
    if max_calls is not None and max_calls <= 0:
        print(f"otel-llmcost demo --traffic: --calls must be above 0, got {max_calls}", file=sys.stderr)
        return 2
    try:
        span_processor, reader = otlp_pipeline(export_interval)
    except OTLPSetupError as exc:
        print(f"otel-llmcost demo --traffic: {exc}", file=sys.stderr)
        return 2
    resource = demo_resource()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(span_processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    stats = TrafficStats()
    stop = _Stop()
    with tempfile.TemporaryDirectory() as tmp, LoopbackLLMServer() as server:
        config_path = Path(config) if config else Path(tmp) / "traffic.yaml"
        if not config:
            config_path.write_text(TRAFFIC_CONFIG, encoding="utf-8")
        setup = configure(config_path, tracer_provider=tracer_provider, meter_provider=meter_provider)
        clients = installed_clients(server)
        if not clients:
            setup.shutdown()
            print("otel-llmcost demo --traffic needs the openai, anthropic or google-genai SDK: "
                  "pip install 'otel-llmcost[demo]'", file=sys.stderr)
            return 2
        print(f"Traffic: {rate:g} calls/s through the cost guard, OTLP to {otlp_target()} "
              f"(service {resource.attributes.get(SERVICE_NAME)}), "
              + _extent(duration, max_calls), file=out, flush=True)
        try:
            with stop.installed():
                _loop(server, clients, stats, stop.event, duration, max_calls, rate, random.Random(seed), out,
                      status_every)
        except KeyboardInterrupt:
            pass
        finally:
            setup.shutdown()
            tracer_provider.shutdown()
            meter_provider.shutdown()  # a last export, so nothing of the run is lost
    print(f"Traffic done: {stats.calls} calls, {stats.refused} refused by the guard, "
          f"{stats.provider_errors} provider errors", file=out, flush=True)
    return 0


def _extent(duration: float | None, max_calls: int | None) -> str:
    limits = [f"{duration:g} s" if duration else "", f"{max_calls} calls" if max_calls else ""]
    return "for " + " or ".join(x for x in limits if x) if any(limits) else "until interrupted"


def _loop(server: Any, clients: list[tuple[str, Any]], stats: TrafficStats, stop: threading.Event,
          duration: float | None, max_calls: int | None, rate: float, rng: random.Random, out: IO[str],
          status_every: float) -> None:
    start = time.monotonic()
    next_status = start + status_every
    index = 0
    while not stop.is_set():
        now = time.monotonic()
        if (duration is not None and now - start >= duration) or (max_calls is not None and index >= max_calls):
            break
        _traffic_call(server, clients, index, rng, stats)
        index += 1
        if now >= next_status:
            next_status += status_every
            print(f"  {now - start:5.0f} s: {stats.calls} calls, {stats.refused} refused, "
                  f"{stats.provider_errors} provider errors", file=out, flush=True)
        # Steady pace: the next call is due at index / rate seconds after the start.
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            stop.wait(delay)


FEATURES = ("support-chat", "support-chat", "summaries", "search")


def _traffic_call(server: Any, clients: list[tuple[str, Any]], index: int, rng: random.Random,
                  stats: TrafficStats) -> None:
    from . import cache_control
    from .context import attributes
    from .demo import QUESTIONS, USERS, one_call
    from .errors import CallRefused
    from .testing.llm_server import Reply

    user, tier = USERS[index % len(USERS)]
    feature = FEATURES[index % len(FEATURES)]
    provider, client = clients[index % len(clients)]
    stats.calls += 1
    try:
        with attributes(user_id=user, tier=tier, feature=feature):
            openai_client = next((c for p, c in clients if p == "openai"), None)
            special = index % 20
            if openai_client is not None and special == 7:
                # A reasoning model thinks before it answers: output tokens include reasoning tokens.
                server.script(Reply(provider="openai", times=1, usage={
                    "completion_tokens": 420, "completion_tokens_details": {"reasoning_tokens": 320}}))
                with attributes(user_id="carol", tier="enterprise", feature="analysis"), cache_control("bypass"):
                    openai_client.chat.completions.create(
                        model="gpt-5.4", reasoning_effort="medium", max_completion_tokens=600,
                        messages=[{"role": "user", "content": rng.choice(QUESTIONS[-2:])}])
            elif openai_client is not None and special == 13:
                # Self-hosted: no price anywhere, so it is counted as unpriced, never as free.
                openai_client.chat.completions.create(model="acme-llm-7b",
                                                      messages=[{"role": "user", "content": "ping"}])
            elif openai_client is not None and index % 40 == 19:
                openai_client.embeddings.create(model="text-embedding-3-small", input=QUESTIONS[:4])
            else:
                if special == 17:
                    # The provider is overloaded for one call (the SDK is told not to retry).
                    server.script(Reply(provider=provider, status=529 if provider == "anthropic" else 503, times=1))
                one_call(provider, client, rng.choice(QUESTIONS), tier, index)
    except CallRefused:
        stats.refused += 1
    except Exception:  # noqa: BLE001 - provider errors are part of the traffic; they are on the span
        stats.provider_errors += 1

