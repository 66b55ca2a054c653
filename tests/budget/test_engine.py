"""The budget engine on plain cost events: levels, alerts, windows, tightest budget, hints, reservations."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import pytest

from otel_llmcost.budget import (
    Budget,
    BudgetConfig,
    BudgetEngine,
    BudgetExceededError,
    BudgetKey,
    CalendarWindow,
    Level,
    LoggingSink,
    MemoryLedger,
    Refusal,
    Reservation,
    RollingWindow,
    Routing,
    Scope,
)

from .helpers import FakeClock, ListSink

D = Decimal
NY = ZoneInfo("America/New_York")
USER = "llmcost.user.id"
TENANT = "llmcost.tenant.id"
MODEL = "gen_ai.request.model"

# USD per million tokens (input, output): a small and a large model, as priced in 2026.
PRICES = {"gpt-4o-mini": (D("0.15"), D("0.60")), "gpt-4o": (D("2.50"), D("10.00"))}


def realistic_calls(count: int, seed: int = 7) -> list[tuple[str, Decimal]]:
    """(model, cost) of `count` calls: mostly the small model, varying prompt and answer lengths."""
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        model = "gpt-4o" if rng.random() < 0.15 else "gpt-4o-mini"
        prompt, answer = rng.randint(200, 3000), rng.randint(50, 800)
        price_in, price_out = PRICES[model]
        calls.append((model, (prompt * price_in + answer * price_out) / 1_000_000))
    return calls


def first_index_reaching(costs: list[Decimal], amount: Decimal) -> int:
    total = D(0)
    for index, cost in enumerate(costs):
        total += cost
        if total >= amount:
            return index
    raise AssertionError(f"the calls never reach {amount}")


def test_lesson_exercise_1000_calls_cross_each_level_once_at_the_right_call() -> None:
    """1,000 calls of varying cost against $1.00/month: warn, throttle, stop fire once each, where spend crosses 70/85/95%."""
    clock = FakeClock(datetime(2026, 11, 1, 0, 5, tzinfo=NY))
    sink = ListSink()
    engine = BudgetEngine(
        [Budget("monthly", D("1.00"), CalendarWindow("month", "America/New_York"))], sinks=[sink], clock=clock
    )
    calls = realistic_calls(1000)
    costs = [cost for _, cost in calls]
    assert sum(costs) > D("1.00"), "the exercise must run past the budget"
    fired_at: dict[str, int] = {}
    levels = []
    for index, (model, cost) in enumerate(calls):
        before = len(sink.alerts)
        engine.record_cost(cost, {MODEL: model})
        for alert in sink.alerts[before:]:
            assert alert.level not in fired_at, f"{alert.level} fired twice"
            fired_at[alert.level] = index
        levels.append(engine.level({MODEL: model}))
        clock.advance(minutes=40)  # 1,000 calls spread over ~28 days of November
    expected = {
        "warn": first_index_reaching(costs, D("0.70")),
        "throttle": first_index_reaching(costs, D("0.85")),
        "stop": first_index_reaching(costs, D("0.95")),
    }
    assert {level: fired_at[level] for level in expected} == expected
    assert expected["warn"] < expected["throttle"] < expected["stop"] < 999
    # The level seen by callers changes at exactly those calls, and never goes back within the window.
    assert levels.index(Level.WARN) == expected["warn"]
    assert levels.index(Level.THROTTLE) == expected["throttle"]
    assert levels.index(Level.STOP) == expected["stop"]
    assert levels == sorted(levels)
    assert engine.state()[0].spend == sum(costs)
    # Spend this fast is forecast to overrun: one forecast alert, before the stop.
    assert sink.levels().count("forecast") == 1 and fired_at["forecast"] < expected["stop"]
    assert engine.stats.errors == 0


def test_reservations_refuse_at_the_stop_limit_and_hints_turn_to_cache_only() -> None:
    """Calls are refused once spend reaches the stop limit, overshot by at most one call's max; hints say cache only."""
    clock = FakeClock(datetime(2026, 11, 3, tzinfo=timezone.utc))
    engine = BudgetEngine(
        BudgetConfig(budgets=(Budget("monthly", D("1.00")),), routing=Routing({"gpt-4o": "gpt-4o-mini"})),
        sinks=[],
        clock=clock,
    )
    refused: BudgetExceededError | None = None
    for _model, cost in realistic_calls(1000, seed=3):
        try:
            ticket = engine.reserve(D("0.0125"), {})  # the largest call the mix can make
        except BudgetExceededError as error:
            refused = error
            break
        engine.settle(ticket, cost)
    assert refused is not None
    state = engine.state()[0]
    assert D("0.95") <= state.spend < D("0.95") + D("0.0125")
    assert state.reserved == 0
    assert (refused.budget, refused.scope_key, refused.limit, refused.amount) == (
        "monthly",
        "global",
        D("0.95"),
        D("1.00"),
    )
    assert refused.spend == state.spend and refused.requested == D("0.0125")
    assert refused.reset_at == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert "budget 'monthly' (global) has no room left" in str(refused) and "2026-12-01T00:00:00" in str(
        refused
    )
    hints = engine.hints({})
    assert hints.level is Level.STOP and hints.cache_only and hints.reset_at == refused.reset_at
    assert hints.substitutes == {"gpt-4o": "gpt-4o-mini"}
    engine.record_cost(D("0.05"), {})  # spend seen from metrics still counts
    assert engine.state()[0].spend == state.spend + D("0.05")


def test_window_reset_follows_each_budgets_time_zone() -> None:
    """At the month boundary the UTC budget resets five hours before the New York one; alerts re-arm."""
    clock = FakeClock(datetime(2026, 11, 30, 18, 0, tzinfo=NY))  # 23:00 UTC, still November in both
    sink = ListSink()
    engine = BudgetEngine(
        [
            Budget("ny", D("1"), CalendarWindow("month", "America/New_York")),
            Budget("utc", D("1"), CalendarWindow("month", "UTC")),
        ],
        sinks=[sink],
        clock=clock,
    )

    def levels() -> dict[str, Level]:
        return {s.budget: s.level for s in engine.status({})}

    engine.record_cost(D("0.90"), {})
    assert levels() == {"ny": Level.THROTTLE, "utc": Level.THROTTLE}
    assert len(sink.alerts) == 4  # warn and throttle for each
    clock.set(datetime(2026, 11, 30, 20, 0, tzinfo=NY))  # 01:00 UTC on 1 December
    assert levels() == {"ny": Level.THROTTLE, "utc": Level.OK}
    assert engine.hints({}).budget == "ny"
    clock.set(datetime(2026, 12, 1, 0, 30, tzinfo=NY))
    assert levels() == {"ny": Level.OK, "utc": Level.OK}
    assert engine.level({}) is Level.OK
    engine.record_cost(D("0.75"), {})
    new_alerts = sink.alerts[4:]
    assert sorted((a.budget, a.level) for a in new_alerts) == [("ny", "warn"), ("utc", "warn")]
    ny_alert = next(a for a in new_alerts if a.budget == "ny")
    assert ny_alert.window_start == datetime(2026, 12, 1, tzinfo=NY)


def test_events_are_counted_in_the_window_of_their_own_time() -> None:
    """record_cost(at=...) puts a late event into the window it happened in, not the current one."""
    clock = FakeClock(datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc))
    engine = BudgetEngine([Budget("m", D("1"))], sinks=[], clock=clock)
    engine.record_cost(D("0.5"), {}, at=datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc))
    assert engine.state()[0].spend == 0
    clock.set(datetime(2026, 11, 30, 23, 59, 30, tzinfo=timezone.utc))
    assert engine.state()[0].spend == D("0.5")


def test_rolling_window_levels_fall_back_as_spend_ages_out() -> None:
    """A 24 h rolling budget drops back to ok once the spend is more than a day old."""
    clock = FakeClock(datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc))
    engine = BudgetEngine(
        [Budget("daily", D("1"), RollingWindow(timedelta(hours=24)))], sinks=[], clock=clock
    )
    engine.record_cost(D("0.96"), {})
    clock.advance(hours=23)
    assert engine.level({}) is Level.STOP
    clock.advance(hours=1, minutes=1)
    assert engine.level({}) is Level.OK


def test_several_budgets_on_one_call_the_tightest_wins() -> None:
    """A call counts against every matching budget; level and hints come from the tightest one."""
    config = BudgetConfig(
        budgets=(
            Budget("company", D("100")),
            Budget(
                "per-user",
                D("1"),
                CalendarWindow("day"),
                Scope(by=("user",)),
                allowed_models=("gpt-4o-mini",),
            ),
            Budget("acme", D("10"), scope=Scope(match={"tenant": "acme"})),
            Budget("big-model", D("50"), scope=Scope(match={"model": "gpt-4o"})),
        ),
        routing=Routing({"gpt-4o": "gpt-4o-mini"}),
    )
    engine = BudgetEngine(config, sinks=[], clock=FakeClock(datetime(2026, 11, 20, 12, tzinfo=timezone.utc)))
    alice = {USER: "alice", TENANT: "acme", MODEL: "gpt-4o"}
    bob = {USER: "bob", TENANT: "acme", MODEL: "gpt-4o-mini"}
    engine.record_cost(D("0.90"), alice)
    assert {(s.budget, s.scope_key) for s in engine.status(alice)} == {
        ("company", "global"),
        ("per-user", "user=alice"),
        ("acme", "tenant=acme"),
        ("big-model", "model=gpt-4o"),
    }
    hints = engine.hints(alice)
    assert (hints.level, hints.budget, hints.scope_key) == (Level.THROTTLE, "per-user", "user=alice")
    assert hints.substitutes == {"gpt-4o": "gpt-4o-mini"} and hints.allowed_models == ("gpt-4o-mini",)
    assert not hints.cache_only
    assert engine.hints(bob).level is Level.OK and engine.hints(bob).substitutes == {}
    engine.record_cost(D("8.70"), {TENANT: "acme"})  # no user: acme reaches 9.60 of 10, stop for all of acme
    assert engine.hints(bob).budget == "acme" and engine.hints(bob).cache_only
    assert engine.level(alice) is Level.STOP
    assert engine.level({USER: "carol", TENANT: "other"}) is Level.OK
    state = {(s.budget, s.scope_key): s for s in engine.state()}
    assert state[("acme", "tenant=acme")].spend == D("9.60")
    assert state[("company", "global")].utilization == pytest.approx(0.096)
    assert set(state) == {
        ("company", "global"),
        ("per-user", "user=alice"),
        ("acme", "tenant=acme"),
        ("big-model", "model=gpt-4o"),
    }


class ReserveLog(MemoryLedger):
    """A real MemoryLedger that notes which budget each reserve() was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def reserve(self, key: BudgetKey, *args: Any, **kwargs: Any) -> Reservation | Refusal:
        self.asked.append(key.budget)
        return super().reserve(key, *args, **kwargs)


def test_a_refused_budget_releases_the_holds_on_the_others() -> None:
    """When one budget refuses, holds already taken on other budgets for that call are given back."""
    ledger = ReserveLog()
    engine = BudgetEngine(
        [Budget("company", D("100")), Budget("per-user", D("1"), scope=Scope(by=("user",)))], ledger, sinks=[]
    )
    crossing = engine.reserve(D("2"), {USER: "alice"})  # nothing spent yet: crossing $0.95 is let through
    engine.settle(crossing, D("1.50"))
    ledger.asked.clear()
    with pytest.raises(BudgetExceededError) as caught:
        engine.reserve(D("0.01"), {USER: "alice"})
    assert caught.value.budget == "per-user" and caught.value.scope_key == "user=alice"
    assert (caught.value.spend, caught.value.reserved, caught.value.limit) == (D("1.5"), D("0"), D("0.95"))
    assert ledger.asked == ["company", "per-user"], "company held first, so there was a hold to give back"
    assert [(s.budget, s.spend, s.reserved) for s in engine.state()] == [
        ("company", D("1.5"), D("0")),
        ("per-user", D("1.5"), D("0")),
    ]
    assert engine.stats.refusals == 1


class BrokenLedger(MemoryLedger):
    """A ledger whose storage is down (a real MemoryLedger with its writes failing)."""

    def _down(self, *args: object, **kwargs: object) -> NoReturn:
        raise ConnectionError("ledger down")

    record = reserve = settle = spend = _down


def test_record_cost_never_raises_and_the_call_path_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    """Bad costs and a broken ledger are logged and counted; reserve, level and hints let calls through."""
    engine = BudgetEngine([Budget("m", D("1"))], BrokenLedger(), sinks=[])
    with caplog.at_level(logging.ERROR):
        engine.record_cost(D("0.1"), {})
        engine.record_cost("not money", {})  # type: ignore[arg-type]
        engine.record_cost(D("-1"), {})
    assert engine.stats.errors == 3
    assert "ledger down" in caplog.text
    ticket = engine.reserve(D("0.5"), {})
    engine.settle(ticket, D("0.4"))
    assert engine.level({}) is Level.OK and engine.hints({}).budget is None
    assert engine.stats.errors == 7  # 3 events, the reserve, the settle, level, hints


def test_failing_sinks_do_not_stop_the_others() -> None:
    """An alert sink that raises is logged and counted; the other sinks still get the alert."""

    class ExplodingSink:
        def send(self, alert: object) -> None:
            raise RuntimeError("boom")

    sink = ListSink()
    engine = BudgetEngine([Budget("m", D("1"))], sinks=[ExplodingSink(), sink, LoggingSink()])
    engine.record_cost(D("0.8"), {})
    assert sink.levels() == ["warn"] and engine.stats.sink_errors == 1


def test_alert_carries_budget_scope_window_and_text() -> None:
    """An alert names budget, scope key, level, spend, limit, window and the forecast."""
    clock = FakeClock(datetime(2026, 11, 16, tzinfo=timezone.utc))  # half of November gone
    sink = ListSink()
    engine = BudgetEngine([Budget("per-user", D("2"), scope=Scope(by=("user",)))], sinks=[sink], clock=clock)
    engine.record_cost(D("1.5"), {USER: "alice"})
    warn = sink.alerts[0]
    assert (warn.budget, warn.scope_key, warn.level, warn.spend, warn.limit) == (
        "per-user",
        "user=alice",
        "warn",
        D("1.5"),
        D("2"),
    )
    assert (warn.window_start, warn.window_end) == (
        datetime(2026, 11, 1, tzinfo=timezone.utc),
        datetime(2026, 12, 1, tzinfo=timezone.utc),
    )
    assert warn.forecast == D("3")
    assert warn.text().startswith("Budget 'per-user' (user=alice) reached warn (70%): $1.50 of $2.00 (75%)")
    forecast = sink.alerts[-1]
    assert forecast.level == "forecast" and forecast.threshold == D("1.20")
    assert "forecast to end its window at $3.00" in forecast.text()
