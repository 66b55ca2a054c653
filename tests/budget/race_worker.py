"""Worker processes for the reservation race tests (a module of its own so `spawn` can import it)."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from otel_llmcost.budget import Budget, BudgetEngine, BudgetExceededError

BUDGET = Budget("shared", Decimal("1.00"))
MAX_COST = Decimal("0.004")


def hammer(uri: str, prefix: str | None, seed: int, start: Any, results: Any) -> None:
    """Reserve the max cost, 'call', settle a random actual ≤ max; stop after 20 refusals in a row."""
    if prefix is not None:
        from otel_llmcost.budget.ledger.redis import RedisLedger

        engine = BudgetEngine([BUDGET], RedisLedger.from_url(uri, prefix=prefix), sinks=[])
    else:
        engine = BudgetEngine([BUDGET], uri, sinks=[])
    rng = random.Random(seed)
    served, refused, spent = 0, 0, Decimal(0)
    start.wait()
    streak = 0
    while streak < 20:
        try:
            ticket = engine.reserve(MAX_COST, {})
        except BudgetExceededError:
            refused += 1
            streak += 1
            time.sleep(0.001)
            continue
        streak = 0
        actual = Decimal(rng.randint(500, 4000)) / 1_000_000  # $0.0005 .. $0.004
        engine.settle(ticket, actual)
        served += 1
        spent += actual
    engine.close()
    results.put((served, refused, str(spent), engine.stats.errors))
