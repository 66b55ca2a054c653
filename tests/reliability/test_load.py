"""Load: 8 OS processes × many threads against one budget and one rate limit on one real Redis.

tests/budget/test_race.py (8 processes, one thread each, budget only) and
tests/ratelimit/test_concurrency.py (threads, tasks, 4 processes, rate limit only) cover each part alone;
here both run together in the guard's order, with many threads per process, and the test checks the
two invariants the issue names: the budget is overshot by less than one request's maximum cost, and no
token bucket is overdrawn (nor any granted token lost or counted twice).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from otel_llmcost.budget import BudgetEngine
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.ratelimit import RateLimiter

from . import load_worker
from .conftest import soak_enabled
from .helpers import ManagedRedis

PROCESSES = 8


def run(url: str, prefix: str, amount: str, tokens_per_day: int, threads: int) -> tuple[dict[str, Any], float]:
    """Start the processes together; return their summed reports and the wall time of the race."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(target=load_worker.hammer,
                        args=(url, prefix, amount, tokens_per_day, threads, seed, ready, start, results))
        for seed in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=120)
        began = time.monotonic()
        start.set()
        reports = [results.get(timeout=300) for _ in processes]
        took = time.monotonic() - began
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    total: dict[str, Any] = {key: 0 for key in reports[0] if key != "spent"}
    for report in reports:
        for key in total:
            total[key] += report[key]
    total["spent"] = sum((Decimal(r["spent"]) for r in reports), Decimal(0))
    total["processes_served"] = sum(1 for r in reports if r["served"] > 0)
    return total, took


def threads_per_process() -> int:
    return 32 if soak_enabled() else 8


@pytest.mark.reliability(
    "8 processes × 8 threads (soak: × 32) on one budget and one rate limit on Redis; the budget binds",
    "budget overshoot < one request's maximum cost; ledger spend = spend the callers settled; no hold left",
    covered_by=["tests/budget/test_race.py::test_eight_processes_cannot_blow_through_the_limit_on_redis"],
)
def test_budget_overshoot_under_load_is_within_one_call(redis_proc: ManagedRedis, record_number: Any) -> None:
    """Racing callers stop at the budget: spend ends in [stop limit, stop limit + one max cost)."""
    prefix = f"load:{uuid.uuid4().hex}"
    amount = "10.00" if soak_enabled() else "0.50"
    threads = threads_per_process()
    total, took = run(redis_proc.url, prefix, amount, tokens_per_day=1_000_000_000, threads=threads)
    budget = load_worker.budget(amount)
    engine = BudgetEngine([budget], RedisLedger.from_url(redis_proc.url, prefix=prefix + ":budget"), sinks=[])
    state = engine.state()[0]
    engine.ledger.close()
    overshoot = state.spend - budget.stop_limit
    record_number("callers", PROCESSES * threads)
    record_number("calls served", total["served"])
    record_number("calls per second", round(total["served"] / took))
    record_number("overshoot past the stop limit (USD)", str(overshoot))
    record_number("one request's maximum cost (USD)", str(load_worker.MAX_COST))
    assert total["errors"] == 0
    assert state.spend == total["spent"], "a settled cost was lost or counted twice"
    assert state.reserved == 0
    assert Decimal(0) <= overshoot < load_worker.MAX_COST
    assert total["processes_served"] >= 2, "no race happened"


@pytest.mark.reliability(
    "8 processes × 8 threads (soak: × 32) on one budget and one rate limit on Redis; the rate limit binds",
    "no token bucket overdrawn: tokens granted ≤ capacity (+ refill during the run); every settled token "
    "is in the bucket, none lost or counted twice",
    covered_by=["tests/ratelimit/test_concurrency.py::test_processes_never_overdraw_on_redis"],
)
def test_rate_limit_never_overdrawn_under_load(redis_proc: ManagedRedis, record_number: Any) -> None:
    """Racing callers stop at the token bucket: it holds exactly capacity − settled tokens, never below zero."""
    prefix = f"load:{uuid.uuid4().hex}"
    capacity = 400_000 if soak_enabled() else 20_000
    threads = threads_per_process()
    began = time.monotonic()
    total, took = run(redis_proc.url, prefix, "1000000", tokens_per_day=capacity, threads=threads)
    refill = (time.monotonic() - began + 1) * capacity / 86_400  # what a day bucket regains while we ran
    limiter = RateLimiter(load_worker.tiers(capacity), redis_proc.url, storage_options={"key_prefix": prefix + ":rl"})
    left = limiter.remaining("shared", "load")["tokens_per_day"]
    limiter.close()
    record_number("callers", PROCESSES * threads)
    record_number("calls served", total["served"])
    record_number("calls per second", round(total["served"] / took))
    record_number("tokens granted / capacity", f"{total['tokens']} / {capacity}")
    record_number("tokens left in the bucket", round(left, 1))
    assert total["errors"] == 0
    assert total["tokens"] <= capacity + refill
    assert left >= 0, "the bucket was overdrawn"
    assert left == pytest.approx(capacity - total["tokens"], abs=refill + 1e-6), "tokens lost or counted twice"
    assert left < load_worker.ESTIMATE_TOKENS + refill, "the limit was never reached"
    assert total["processes_served"] >= 2, "no race happened"
