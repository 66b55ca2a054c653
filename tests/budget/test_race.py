"""Reservation races: 8 OS processes on one budget, on SQLite and on a real Redis server."""

from __future__ import annotations

import multiprocessing
from decimal import Decimal
from pathlib import Path

from otel_llmcost.budget import BudgetEngine
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger

from . import race_worker

WORKERS = 8


def run_race(uri: str, prefix: str | None) -> tuple[int, int, Decimal]:
    """Start the workers together; return (calls served, refusals, spend they reported)."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=race_worker.hammer, args=(uri, prefix, seed, start, results))
        for seed in range(WORKERS)
    ]
    for process in processes:
        process.start()
    start.set()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert all(errors == 0 for *_, errors in reports)
    served = sum(r[0] for r in reports)
    refused = sum(r[1] for r in reports)
    return served, refused, sum((Decimal(r[2]) for r in reports), Decimal(0))


def check(engine: BudgetEngine, served: int, refused: int, reported: Decimal) -> None:
    stop_limit = race_worker.BUDGET.stop_limit
    state = engine.state()[0]
    # No lost update: the ledger holds exactly what the workers settled, and nothing is left held.
    assert state.spend == reported
    assert state.reserved == 0
    # The limit held against 8 concurrent processes. A reservation goes only while spent + held < limit,
    # and actual ≤ reserved, so the spend ends below limit + one request's max cost. The limit is reached:
    # the last reservation attempt was refused with nothing held, so spend alone had reached it.
    assert stop_limit <= state.spend < stop_limit + race_worker.MAX_COST
    assert served >= 200 and refused >= WORKERS * 20


def test_eight_processes_cannot_blow_through_the_limit_on_sqlite(tmp_path: Path) -> None:
    """8 processes reserving on one SQLite file reach the stop limit, overshoot it by < one call, lose no spend."""
    path = tmp_path / "ledger.db"
    served, refused, reported = run_race(f"sqlite:///{path}", None)
    check(BudgetEngine([race_worker.BUDGET], SQLiteLedger(path), sinks=[]), served, refused, reported)


def test_eight_processes_cannot_blow_through_the_limit_on_redis(redis_url: str, redis_prefix: str) -> None:
    """8 processes reserving on one real Redis reach the stop limit, overshoot it by < one call, lose no spend."""
    served, refused, reported = run_race(redis_url, redis_prefix)
    engine = BudgetEngine(
        [race_worker.BUDGET], RedisLedger.from_url(redis_url, prefix=redis_prefix), sinks=[]
    )
    check(engine, served, refused, reported)
