"""A persistent ledger across restarts: spend kept, alerts not repeated, crashed holds expire."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from otel_llmcost.budget import Budget, BudgetEngine, BudgetExceededError, Level, Scope

from .helpers import FakeClock, ListSink

D = Decimal
BUDGETS = [Budget("monthly", D("1.00")), Budget("per-user", D("0.50"), scope=Scope(by=("user",)))]
ALICE = {"llmcost.user.id": "alice"}


def test_sqlite_restart_keeps_spend_and_fires_no_alert_twice(tmp_path: Path) -> None:
    """After a restart on the same SQLite file no spend is lost and no alert of the window fires again."""
    uri = f"sqlite:///{tmp_path}/ledger.db"
    clock = FakeClock(datetime(2026, 11, 10, tzinfo=timezone.utc))
    first_sink = ListSink()
    first = BudgetEngine(BUDGETS, uri, [first_sink], clock=clock)
    for _ in range(75):
        first.record_cost(D("0.01"), ALICE)
    assert sorted((a.budget, a.level) for a in first_sink.alerts) == [
        ("monthly", "forecast"),
        ("monthly", "warn"),
        ("per-user", "forecast"),
        ("per-user", "stop"),
        ("per-user", "throttle"),
        ("per-user", "warn"),
    ]
    first.close()

    second_sink = ListSink()
    second = BudgetEngine(BUDGETS, uri, [second_sink], clock=clock)
    assert {(s.budget, s.scope_key): s.spend for s in second.state()} == {
        ("monthly", "global"): D("0.75"),
        ("per-user", "user=alice"): D("0.75"),
    }
    assert second.level(ALICE) is Level.STOP
    second.record_cost(D("0.05"), ALICE)  # 0.80: still warn for monthly, nothing new
    assert second_sink.alerts == []
    second.record_cost(D("0.05"), ALICE)  # 0.85: monthly crosses throttle, once
    assert [(a.budget, a.level) for a in second_sink.alerts] == [("monthly", "throttle")]
    second.close()


def test_holds_of_a_crashed_process_expire_after_their_ttl(tmp_path: Path) -> None:
    """A reservation never settled (the process died) blocks room only until its TTL passes, across restarts."""
    uri = f"sqlite:///{tmp_path}/ledger.db"
    clock = FakeClock(datetime(2026, 11, 10, tzinfo=timezone.utc))
    crashed = BudgetEngine(BUDGETS[:1], uri, sinks=[], clock=clock)
    crashed.reserve(D("0.95"), {})  # reaches the stop limit (95% of $1.00), and is never settled
    crashed.ledger.close()

    restarted = BudgetEngine(BUDGETS[:1], uri, sinks=[], clock=clock)
    clock.advance(minutes=9, seconds=59)  # the default reservation TTL is 10 minutes
    with pytest.raises(BudgetExceededError) as caught:
        restarted.reserve(D("0.10"), {})
    assert (caught.value.spend, caught.value.reserved) == (D("0"), D("0.95"))
    clock.advance(seconds=2)
    ticket = restarted.reserve(D("0.10"), {})
    restarted.settle(ticket, D("0.08"))
    assert restarted.state()[0].spend == D("0.08") and restarted.state()[0].reserved == 0


def test_replicas_sharing_redis_share_spend_and_fire_each_alert_once(
    redis_url: str, redis_prefix: str
) -> None:
    """Two engines on one Redis ledger see one spend total, and a level crossed fires one alert in all."""
    from otel_llmcost.budget.ledger.redis import RedisLedger

    clock = FakeClock(datetime(2030, 11, 10, tzinfo=timezone.utc))
    sinks = [ListSink(), ListSink()]
    replicas = [
        BudgetEngine(BUDGETS[:1], RedisLedger.from_url(redis_url, prefix=redis_prefix), [sink], clock=clock)
        for sink in sinks
    ]
    for step in range(90):
        replicas[step % 2].record_cost(D("0.01"), ALICE)
    assert [s.state()[0].spend for s in replicas] == [D("0.9"), D("0.9")]
    fired = sorted(a.level for sink in sinks for a in sink.alerts if a.level != "forecast")
    assert fired == ["throttle", "warn"]


def test_budget_exceeded_error_survives_pickling() -> None:
    """BudgetExceededError crosses process boundaries (multiprocessing, log handlers) intact."""
    import pickle

    error = BudgetExceededError(
        budget="b",
        scope_key="user=a",
        spend=D("1"),
        limit=D("0.95"),
        reset_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.budget, copy.scope_key, copy.spend, copy.limit, str(copy)) == (
        "b",
        "user=a",
        D("1"),
        D("0.95"),
        str(error),
    )
