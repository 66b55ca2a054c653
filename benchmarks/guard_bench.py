"""The cost guard's added latency per call, with each part on, against the loopback server.

Every variant makes the same OpenAI chat completions through the instrumented SDK; rounds alternate the
variants so load on the machine spreads over all of them. Reported per call: wall time, and CPU of the
calling thread (`time.thread_time`: the loopback server's threads are not counted), each as the median
over rounds, and the difference to "instrumented, no guard".

    python benchmarks/guard_bench.py [--calls 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import otel_llmcost
from otel_llmcost.budget import Budget, BudgetEngine
from otel_llmcost.cache import ExactCache, SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import GuardedPolicy, ThresholdPolicy
from otel_llmcost.guard import install_guard
from otel_llmcost.ratelimit import RateLimiter
from otel_llmcost.routing import Router
from otel_llmcost.testing.llm_server import LoopbackLLMServer

BIG = {"bench": {"requests_per_minute": 10**9, "tokens_per_day": 10**15}}


def _variants() -> dict[str, Callable[[Any], dict[str, Any]]]:
    def semantic() -> ResponseCache:
        return ResponseCache(None, SemanticCache(HashingEmbedder(), GuardedPolicy(ThresholdPolicy(0.9)),
                                                 max_entries=None))

    return {
        "instrumented, no guard": lambda t: {},
        "+ rate limit (memory)": lambda t: {"limiter": RateLimiter(BIG)},
        "+ budget breaker (memory ledger)": lambda t: {"budget": BudgetEngine([Budget("b", Decimal(10**9))],
                                                                              sinks=[])},
        "+ exact cache, miss": lambda t: {"cache": ResponseCache(ExactCache(max_entries=None))},
        "+ exact cache, hit": lambda t: {"cache": ResponseCache(ExactCache(max_entries=None))},
        "+ semantic cache (hashing), miss": lambda t: {"cache": semantic()},
        "+ routing (heuristic)": lambda t: {"router": Router(prices=t.catalog)},
        "all of the above, miss": lambda t: {"limiter": RateLimiter(BIG), "router": Router(prices=t.catalog),
                                             "budget": BudgetEngine([Budget("b", Decimal(10**9))], sinks=[]),
                                             "cache": ResponseCache(ExactCache(max_entries=None))},
    }


def _round(name: str, build: Callable[[Any], dict[str, Any]], client: openai.OpenAI, calls: int,
           counter: list[int]) -> tuple[float, float]:
    telemetry = otel_llmcost.instrument(tracer_provider=TracerProvider(),
                                        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    parts = build(telemetry)
    if parts:
        from otel_llmcost.guard import RateLimitPolicy

        install_guard(telemetry=telemetry, rate_limit_policy=RateLimitPolicy(default_tier="bench"), **parts)
    hit = name.endswith("hit")
    try:
        with otel_llmcost.attributes(user_id="bench", tier="bench"):
            if hit:  # fill the cache once, outside the timed calls
                client.chat.completions.create(model="gpt-4o", temperature=0,
                                               messages=[{"role": "user", "content": "What is the return policy?"}])
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                counter[0] += 1
                text = "What is the return policy?" if hit else f"What is the return policy for order {counter[0]}?"
                client.chat.completions.create(model="gpt-4o", temperature=0,
                                               messages=[{"role": "user", "content": text}])
            return (time.perf_counter() - wall) / calls * 1e3, (time.thread_time() - cpu) / calls * 1e6
    finally:
        otel_llmcost.uninstrument()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = _variants()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    counter = [0]
    with LoopbackLLMServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="bench", max_retries=0)
        for name, build in variants.items():  # warm-up
            _round(name, build, client, 20, counter)
        for index in range(args.rounds):
            order = list(variants.items())
            order = order[index % len(order):] + order[: index % len(order)]
            for name, build in order:
                results[name].append(_round(name, build, client, args.calls, counter))
            print(f"round {index + 1}/{args.rounds}", flush=True, file=__import__("sys").stderr)
    base_wall = statistics.median(w for w, _ in results["instrumented, no guard"])
    base_cpu = statistics.median(c for _, c in results["instrumented, no guard"])
    print("| variant | wall ms/call | added wall ms | caller CPU µs/call | added CPU µs |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"| {name} | {wall:.3f} | {wall - base_wall:+.3f} | {cpu:.0f} | {cpu - base_cpu:+.0f} |")


if __name__ == "__main__":
    main()
