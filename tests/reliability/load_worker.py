"""One OS process of the load test: many threads, each doing what the cost guard does per call.

Rate-limit acquire (estimate) → budget reserve (maximum cost) → "call" → settle both with the actual
usage (never above the estimate). A module of its own so `multiprocessing`'s spawn can import it.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from typing import Any

from otel_llmcost.budget import Budget, BudgetEngine, BudgetExceededError
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.ratelimit import RateLimiter, RateLimitExceeded, Tier

MAX_COST = Decimal("0.004")
ESTIMATE_TOKENS = 100
STREAK = 15  # refusals in a row after which a thread gives up


def budget(amount: str) -> Budget:
    return Budget("shared", Decimal(amount))


def tiers(tokens_per_day: int) -> dict[str, Tier]:
    return {"load": Tier("load", requests_per_minute=10_000_000, tokens_per_day=tokens_per_day)}


def hammer(url: str, prefix: str, amount: str, tokens_per_day: int, threads: int, seed: int,
           ready: Any, start: Any, results: Any) -> None:
    """Run `threads` callers once every process is ready; report what they were granted and spent."""
    engine = BudgetEngine([budget(amount)], RedisLedger.from_url(url, prefix=prefix + ":budget"), sinks=[])
    limiter = RateLimiter(tiers(tokens_per_day), url, on_storage_error="closed",
                          storage_options={"key_prefix": prefix + ":rl"})
    limiter.remaining("shared", "load")  # connect and load the scripts before the race
    engine.state()
    lock = threading.Lock()
    totals = {"served": 0, "budget_refusals": 0, "rate_refusals": 0, "errors": 0, "tokens": 0,
              "spent": Decimal(0)}

    def caller(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        served = budget_refusals = rate_refusals = tokens = errors = 0
        spent = Decimal(0)
        streak = 0
        while streak < STREAK:
            try:
                permit = limiter.acquire("shared", "load", ESTIMATE_TOKENS)
            except RateLimitExceeded:
                rate_refusals += 1
                streak += 1
                continue
            try:
                ticket = engine.reserve(MAX_COST, {})
            except BudgetExceededError:
                budget_refusals += 1
                streak += 1
                limiter.settle(permit, 0)  # not called: the estimate goes back
                continue
            except Exception:  # noqa: BLE001 - counted and reported to the parent
                errors += 1
                limiter.settle(permit, 0)
                continue
            streak = 0
            actual_tokens = rng.randint(20, ESTIMATE_TOKENS)
            actual_cost = Decimal(rng.randint(500, 4000)) / 1_000_000  # $0.0005 .. $0.004
            limiter.settle(permit, actual_tokens)
            engine.settle(ticket, actual_cost)
            served += 1
            tokens += actual_tokens
            spent += actual_cost
        with lock:
            totals["served"] += served
            totals["budget_refusals"] += budget_refusals
            totals["rate_refusals"] += rate_refusals
            totals["tokens"] += tokens
            totals["errors"] += errors
            totals["spent"] += spent

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    ready.put(None)
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.close()
    engine.ledger.close()
    limiter.close()
    totals["errors"] += engine.stats.errors
    totals["spent"] = str(totals["spent"])
    results.put(totals)
