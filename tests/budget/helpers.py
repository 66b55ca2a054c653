"""Helpers for the budget tests: a fake clock, a list sink, ledgers by kind (Redis: see conftest)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from otel_llmcost.budget import Alert, Ledger, MemoryLedger
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger
from otel_llmcost.testing.processes import free_port

__all__ = ["FakeClock", "ListSink", "free_port", "make_ledger"]


def make_ledger(kind: str, tmp_path: Path, redis_url: str | None, prefix: str) -> Ledger:
    if kind == "memory":
        return MemoryLedger()
    if kind == "sqlite":
        return SQLiteLedger(tmp_path / "ledger.db")
    from otel_llmcost.budget.ledger.redis import RedisLedger

    assert redis_url is not None
    return RedisLedger.from_url(redis_url, prefix=prefix)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start if start.tzinfo else start.replace(tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return moment


class ListSink:
    """Collects alerts in a list (a real sink, not a mock: the engine just calls send)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def levels(self) -> list[str]:
        return [a.level for a in self.alerts]
