"""What the in-process budget processor adds per call and per span.

Measures, in one run: a priced call recorded by the telemetry with no budget attached (the floor), the
same with a `BudgetProcessor` listening (what the app's thread pays: building the attribution and a
queue put), the processor's `on_end` for another tool's GenAI span, and how many cost events per second
its worker applies to a memory ledger. Prints a markdown table.

    python benchmarks/budget_processor_bench.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from decimal import Decimal

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otel_llmcost.budget import Budget, BudgetEngine, Scope
from otel_llmcost.budget.processor import BudgetProcessor
from otel_llmcost.pricing import PriceCatalog, Usage
from otel_llmcost.telemetry import Telemetry


def _telemetry() -> Telemetry:
    return Telemetry(catalog=PriceCatalog(), tracer_provider=TracerProvider(),
                     meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _per_call(telemetry: Telemetry, calls: int) -> float:
    usage = Usage(1200, 300, cache_read_tokens=1024)
    start = time.thread_time()  # this thread only: the worker's CPU is not the app's
    for _ in range(calls):
        call = telemetry.start("openai", "chat", "gpt-4o", None)
        call.finish(usage, "gpt-4o")
    return (time.thread_time() - start) / calls * 1e6


def _engine() -> BudgetEngine:
    return BudgetEngine([Budget("monthly", Decimal("1000000")), Budget("per-user", Decimal("1000"), scope=Scope(by=("user",)))],
                        sinks=[])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    floor, listened = [], []
    for _ in range(args.rounds):
        bare = _telemetry()
        floor.append(_per_call(bare, args.calls))
        telemetry = _telemetry()
        processor = BudgetProcessor(_engine(), telemetry=telemetry, max_queue=args.calls * 2)
        listened.append(_per_call(telemetry, args.calls))
        processor.force_flush()
        processor.shutdown()

    processor = BudgetProcessor(_engine(), price_foreign_spans=True, max_queue=args.calls * 2)
    tracer = TracerProvider()
    tracer.add_span_processor(processor)
    span_tracer = tracer.get_tracer("some.other.instrumentation")
    spans = []
    for _ in range(args.calls):
        with span_tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}) as span:
            spans.append(span)
    wall = time.perf_counter()
    start = time.thread_time()
    for span in spans:
        processor.on_end(span)  # type: ignore[arg-type]
    on_end = (time.thread_time() - start) / args.calls * 1e6
    processor.force_flush()
    applied = args.calls / (time.perf_counter() - wall)  # from the first on_end to the last ledger write
    processor.shutdown()

    engine = _engine()
    start = time.perf_counter()
    for _ in range(args.calls):
        engine.record_cost(Decimal("0.0042"), {"llmcost.user.id": "alice"})
    direct = args.calls / (time.perf_counter() - start)

    f, listen = statistics.median(floor), statistics.median(listened)
    print("| what | value |")
    print("|---|---:|")
    print(f"| priced call recorded, no budget (CPU µs/call) | {f:.1f} |")
    print(f"| same with BudgetProcessor listening (CPU µs/call) | {listen:.1f} |")
    print(f"| added by the processor in the app's thread (CPU µs/call) | {listen - f:.1f} |")
    print(f"| on_end of another tool's GenAI span (CPU µs/span) | {on_end:.1f} |")
    print(f"| worker: spans priced and applied to a memory ledger (/s) | {applied:,.0f} |")
    print(f"| engine.record_cost on a memory ledger, 2 budgets (/s) | {direct:,.0f} |")


if __name__ == "__main__":
    main()
