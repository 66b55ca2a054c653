"""The cost guard's added latency per call, with each part on, against the loopback server.

Every variant makes the same OpenAI chat completions through the instrumented SDK against the loopback
server, which runs in a process of its own (its work neither holds this process's GIL nor counts as
ours). Rounds alternate the variants in a rotated order, each block preceded by untimed warm-up calls.
Reported per call: wall time and CPU of the calling thread (`time.thread_time`), as medians over rounds,
and the *added* cost: the median over rounds of the variant's block minus the unguarded block of the same
round, with a 95% confidence interval of that median. Pairing within a round cancels most of the load
that other work puts on a shared machine; the interval says how much is left.

    python benchmarks/guard_bench.py [--calls 50] [--rounds 40]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
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
            for _ in range(WARMUP):  # untimed: fills the hit variant's cache, warms the others' code paths
                counter[0] += 1
                text = "What is the return policy?" if hit else f"Warm-up question {counter[0]}?"
                client.chat.completions.create(model="gpt-4o", temperature=0,
                                               messages=[{"role": "user", "content": text}])
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                counter[0] += 1
                text = "What is the return policy?" if hit else f"What is the return policy for order {counter[0]}?"
                client.chat.completions.create(model="gpt-4o", temperature=0,
                                               messages=[{"role": "user", "content": text}])
            return (time.perf_counter() - wall) / calls * 1e3, (time.thread_time() - cpu) / calls * 1e6
    finally:
        otel_llmcost.uninstrument()


WARMUP = 10
BASE = "instrumented, no guard"
_SERVER = ("import sys\nfrom otel_llmcost.testing.llm_server import LoopbackLLMServer\n"
           "server = LoopbackLLMServer().start()\nprint(server.openai_base_url, flush=True)\nsys.stdin.read()\n")


def _median_ci(values: list[float]) -> tuple[float, float, float]:
    """Median and a distribution-free 95% interval from order statistics (binomial, normal approximation)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return statistics.median(ordered), ordered[low], ordered[high]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50, help="timed calls per variant and round")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    variants = _variants()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    counter = [0]
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        client = openai.OpenAI(base_url=server.stdout.readline().strip(), api_key="bench", max_retries=0)
        for index in range(args.rounds):
            order = list(variants.items())
            order = order[index % len(order):] + order[: index % len(order)]
            for name, build in order:
                results[name].append(_round(name, build, client, args.calls, counter))
            print(f"round {index + 1}/{args.rounds}", flush=True, file=sys.stderr)
    finally:
        server.kill()
    base = results[BASE]
    print("| variant | wall ms/call | added wall ms [95% CI] | caller CPU µs/call | added CPU µs [95% CI] |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        if name == BASE:
            print(f"| {name} | {wall:.3f} | – | {cpu:.0f} | – |")
            continue
        dw, lw, hw = _median_ci([w - b for (w, _), (b, _) in zip(rows, base, strict=True)])
        dc, lc, hc = _median_ci([c - b for (_, c), (_, b) in zip(rows, base, strict=True)])
        print(f"| {name} | {wall:.3f} | {dw:+.3f} [{lw:+.3f}, {hw:+.3f}] | {cpu:.0f} | {dc:+.0f} [{lc:+.0f}, {hc:+.0f}] |")


if __name__ == "__main__":
    main()
