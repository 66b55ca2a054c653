"""Ledger primitives, the same body against memory, SQLite and a real Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from otel_llmcost.budget import (
    BudgetKey,
    CalendarWindow,
    ConfigError,
    Ledger,
    MemoryLedger,
    Refusal,
    Reservation,
    RollingWindow,
    Spend,
    open_ledger,
)
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger

D = Decimal
# In the future: Redis expires keys by its own clock, so windows must not be over already.
T0 = datetime(2030, 11, 10, 12, 0, tzinfo=timezone.utc)
KEY = BudgetKey("monthly", "user=alice")
MONTH = CalendarWindow("month", "UTC").at(T0)


def test_record_adds_exactly_and_returns_the_window_total(ledger: Ledger) -> None:
    """record() adds Decimal amounts exactly and returns the window's committed spend."""
    assert ledger.record(KEY, MONTH, D("0.1"), now=T0.timestamp()) == D("0.1")
    assert ledger.record(KEY, MONTH, D("0.2"), now=T0.timestamp()) == D("0.3")
    assert ledger.record(KEY, MONTH, D("0.000000001"), now=T0.timestamp()) == D("0.300000001")
    assert ledger.spend(KEY, MONTH, now=T0.timestamp()).spent == D("0.300000001")


def test_windows_and_scopes_are_kept_apart(ledger: Ledger) -> None:
    """Spend of one scope key or one window does not show in another."""
    december = CalendarWindow("month", "UTC").at(datetime(2030, 12, 2, tzinfo=timezone.utc))
    ledger.record(KEY, MONTH, D("1"), now=T0.timestamp())
    ledger.record(BudgetKey("monthly", "user=bob"), MONTH, D("2"), now=T0.timestamp())
    ledger.record(KEY, december, D("4"), now=T0.timestamp())
    assert ledger.spend(KEY, MONTH).spent == D("1")
    assert ledger.spend(BudgetKey("monthly", "user=bob"), MONTH).spent == D("2")
    assert ledger.spend(KEY, december).spent == D("4")
    assert ledger.spend(BudgetKey("other", "user=alice"), MONTH).spent == D("0")
    assert ledger.scopes("monthly", MONTH) == ["user=alice", "user=bob"]


def test_reserve_refuses_once_the_limit_is_reached(ledger: Ledger) -> None:
    """A reservation is refused once spent + held reach the limit, holding nothing; the call crossing it goes."""
    now = T0.timestamp()
    ledger.record(KEY, MONTH, D("0.50"), now=now)
    first = ledger.reserve(KEY, MONTH, D("0.30"), D("0.95"), ttl=60, now=now)
    assert isinstance(first, Reservation)
    crossing = ledger.reserve(KEY, MONTH, D("0.20"), D("0.95"), ttl=60, now=now)
    assert isinstance(crossing, Reservation), "0.80 is under the limit, so the call taking it to 1.00 goes"
    assert ledger.spend(KEY, MONTH, now=now) == Spend(D("0.5"), D("0.5"))
    refused = ledger.reserve(KEY, MONTH, D("0.01"), D("0.95"), ttl=60, now=now)
    assert isinstance(refused, Refusal)
    assert (refused.spent, refused.reserved, refused.requested, refused.limit) == (
        D("0.5"),
        D("0.5"),
        D("0.01"),
        D("0.95"),
    )
    assert isinstance(ledger.reserve(KEY, MONTH, D("0"), D("0.95"), ttl=60, now=now), Refusal)
    assert ledger.spend(KEY, MONTH, now=now) == Spend(D("0.5"), D("0.5")), "a refusal holds nothing"
    ledger.settle(crossing, D("0.10"), now=now)  # 0.90 now: room again
    assert isinstance(ledger.reserve(KEY, MONTH, D("0.30"), D("0.95"), ttl=60, now=now), Reservation)


def test_reserve_boundary_is_the_limit_itself(ledger: Ledger) -> None:
    """One nano-dollar under the limit admits any amount; exactly at the limit nothing, not even 0."""
    now = T0.timestamp()
    under, at = BudgetKey("monthly", "user=bob"), BudgetKey("monthly", "user=carol")
    ledger.record(under, MONTH, D("0.949999999"), now=now)
    big = ledger.reserve(under, MONTH, D("5"), D("0.95"), ttl=60, now=now)
    assert isinstance(big, Reservation) and big.amount == D("5")
    assert ledger.spend(under, MONTH, now=now) == Spend(D("0.949999999"), D("5"))
    ledger.record(at, MONTH, D("0.95"), now=now)
    for amount in (D("0"), D("0.000000001"), D("1")):
        assert isinstance(ledger.reserve(at, MONTH, amount, D("0.95"), ttl=60, now=now), Refusal)
    assert ledger.spend(at, MONTH, now=now) == Spend(D("0.95"), D("0"))


def test_settle_replaces_the_hold_by_the_actual_cost(ledger: Ledger) -> None:
    """settle() drops the estimate and commits the actual, freeing the difference."""
    now = T0.timestamp()
    hold = ledger.reserve(KEY, MONTH, D("0.60"), D("1"), ttl=60, now=now)
    assert isinstance(hold, Reservation)
    assert ledger.settle(hold, D("0.25"), now=now) == D("0.25")
    assert ledger.spend(KEY, MONTH, now=now).reserved == D("0")
    assert isinstance(ledger.reserve(KEY, MONTH, D("0.75"), D("1"), ttl=60, now=now), Reservation)


def test_unsettled_reservations_expire_but_late_settles_still_count(ledger: Ledger) -> None:
    """A hold from a caller that never settles stops counting after its TTL; a late settle adds the cost."""
    now = T0.timestamp()
    crashed = ledger.reserve(KEY, MONTH, D("1.00"), D("1"), ttl=30, now=now)  # reaches the limit
    assert isinstance(crashed, Reservation)
    blocked = ledger.reserve(KEY, MONTH, D("0.20"), D("1"), ttl=30, now=now + 29)
    assert isinstance(blocked, Refusal) and blocked.reserved == D("1")
    later = ledger.reserve(KEY, MONTH, D("0.20"), D("1"), ttl=30, now=now + 31)
    assert isinstance(later, Reservation)
    assert ledger.spend(KEY, MONTH, now=now + 31).reserved == D("0.2")
    assert ledger.settle(crashed, D("0.5"), now=now + 40) == D("0.5")


def test_alert_marks_fire_once(ledger: Ledger) -> None:
    """mark_alert() is True only the first time for a (key, window, level)."""
    keep = T0 + timedelta(days=60)
    assert ledger.mark_alert(KEY, MONTH.alert_id, "warn", keep_until=keep) is True
    assert ledger.mark_alert(KEY, MONTH.alert_id, "warn", keep_until=keep) is False
    assert ledger.mark_alert(KEY, MONTH.alert_id, "stop", keep_until=keep) is True
    assert ledger.mark_alert(KEY, "month:other", "warn", keep_until=keep) is True
    assert (
        ledger.mark_alert(BudgetKey("monthly", "user=bob"), MONTH.alert_id, "warn", keep_until=keep) is True
    )


def test_rolling_window_sums_its_slices_and_forgets_old_ones(ledger: Ledger) -> None:
    """A 24 h rolling window counts spend of the last 24 hourly slices only."""
    spec = RollingWindow(timedelta(hours=24))
    ledger.record(KEY, spec.at(T0), D("1"), now=T0.timestamp())
    later = T0 + timedelta(hours=5)
    assert ledger.record(KEY, spec.at(later), D("2"), now=later.timestamp()) == D("3")
    assert ledger.spend(KEY, spec.at(T0 + timedelta(hours=23, minutes=59))).spent == D("3")
    assert ledger.spend(KEY, spec.at(T0 + timedelta(hours=24))).spent == D("2")
    assert ledger.spend(KEY, spec.at(T0 + timedelta(hours=29))).spent == D("0")
    hold = ledger.reserve(KEY, spec.at(later), D("0.5"), D("3"), ttl=60, now=later.timestamp())
    assert isinstance(hold, Refusal), "the check sums every slice of the window (2 alone is under 3)"
    assert (hold.spent, hold.reserved) == (D("3"), D("0"))
    day_after = T0 + timedelta(hours=24)
    hold = ledger.reserve(KEY, spec.at(day_after), D("0.5"), D("3"), ttl=60, now=day_after.timestamp())
    assert isinstance(hold, Reservation), "the slice that left the window no longer counts"


def test_negative_amounts_are_rejected(ledger: Ledger) -> None:
    """A negative cost is a bug, not a refund: ValueError, nothing written."""
    with pytest.raises(ValueError):
        ledger.record(KEY, MONTH, D("-1"))
    assert ledger.spend(KEY, MONTH).spent == D("0")


def test_open_ledger_by_uri(tmp_path: Path, redis_url: str) -> None:
    """URIs pick the backend; an unknown scheme or a bad SQLite URI is a ConfigError."""
    assert isinstance(open_ledger("memory://"), MemoryLedger)
    sqlite = open_ledger(f"sqlite:///{tmp_path}/x.db?synchronous=FULL")
    assert isinstance(sqlite, SQLiteLedger) and sqlite.path == f"{tmp_path}/x.db"
    sqlite.close()
    redis_ledger = open_ledger(redis_url)
    assert redis_ledger.record(KEY, MONTH, D("1")) >= D("1")
    redis_ledger.close()
    with pytest.raises(ConfigError, match="no ledger backend"):
        open_ledger("postgres://x")
    with pytest.raises(ConfigError, match="unknown option"):
        open_ledger(f"sqlite:///{tmp_path}/x.db?journal=off")
