"""Spend the ledger could not take waits in the engine's backlog and reaches it once, after recovery.

Real ledgers on real faults: a redis-server killed and restarted on the same port (with an fsynced
append-only file, so what it acknowledged survives) or frozen with SIGSTOP; an SQLite file locked by
another connection. The ledgers count the calls the engine makes (a real ledger underneath), so the
call path's cost during an outage is asserted in ledger calls, not in seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import Budget, BudgetEngine, BudgetKey, Ledger, Reservation, Scope
from otel_llmcost.budget.ledger.backlog import BacklogPolicy
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger
from otel_llmcost.testing.processes import RedisServer

from .helpers import FakeClock

D = Decimal
USER = "llmcost.user.id"
#: No background retry within a test: what the call path does is asserted alone.
NO_BACKGROUND = BacklogPolicy(retry_initial=600, retry_max=600)
#: Generous: a bound on waiting for the background thread, never a latency assertion.
DEADLINE = 20.0


class CountingCalls:
    """Counts each ledger primitive the engine calls, then runs the real one."""

    calls: int

    def _count(self) -> None:
        self.calls = getattr(self, "calls", 0) + 1

    def record(self, *args: Any, **kwargs: Any) -> Decimal:
        self._count()
        return super().record(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return super().reserve(*args, **kwargs)  # type: ignore[misc]

    def settle(self, *args: Any, **kwargs: Any) -> Decimal:
        self._count()
        return super().settle(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def spend(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return super().spend(*args, **kwargs)  # type: ignore[misc]


class CountingRedisLedger(CountingCalls, RedisLedger):
    pass


class CountingSQLiteLedger(CountingCalls, SQLiteLedger):
    pass


class DurableRedis(RedisServer):
    """redis-server that fsyncs every write (so a restart keeps what it acknowledged)."""

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--appendonly") + 1] = "yes"
        return [*command, "--appendfsync", "always"]

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        super().close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[DurableRedis]:
    """A redis-server of this test's own, which it may kill, restart on the same port, or freeze."""
    with DurableRedis(tmp_path / "redis") as server:
        yield server


def redis_engine(server: DurableRedis, policy: BacklogPolicy = NO_BACKGROUND, **budget: Any) -> BudgetEngine:
    ledger = CountingRedisLedger.from_url(
        server.url, prefix=uuid.uuid4().hex, socket_timeout=0.3, socket_connect_timeout=0.3
    )
    budgets = [Budget("monthly", D("100"), **budget)]
    return BudgetEngine(budgets, ledger, sinks=[], backlog=policy)


def spent(engine: BudgetEngine, scope: str = "global") -> Decimal:
    """The ledger's committed spend, read from the ledger itself (no replay is triggered)."""
    window = engine.config.budgets[0].window.at(engine.clock())
    return engine.ledger.spend(BudgetKey("monthly", scope), window).spent


def calls(engine: BudgetEngine) -> int:
    return int(getattr(engine.ledger, "calls", 0))


# -- the ledgers apply an operation id once ----------------------------------------------------------------
def test_every_ledger_applies_an_op_id_once(ledger: Ledger) -> None:
    """A record or settle sent again with the same id changes nothing; other ids still count."""
    window = Budget("b", D("10")).window.at(datetime.now(timezone.utc))
    key = BudgetKey("b", "global")
    assert ledger.record(key, window, D("1"), op_id="r1") == D("1")
    assert ledger.record(key, window, D("1"), op_id="r1") == D("1")
    assert ledger.record(key, window, D("2"), op_id="r2") == D("3")
    hold = ledger.reserve(key, window, D("5"), D("10"))
    assert isinstance(hold, Reservation)
    assert ledger.settle(hold, D("0.5"), op_id="s1") == D("3.5")
    assert ledger.settle(hold, D("0.5"), op_id="s1") == D("3.5")
    assert ledger.spend(key, window).reserved == 0
    assert ledger.record(key, window, D("1")) == D("4.5")  # without an id: counted every time
    assert ledger.record(key, window, D("1")) == D("5.5")


def test_a_settle_whose_hold_expired_counts_its_cost_once(ledger: Ledger) -> None:
    """A call that outlived its hold still counts, once, however often its settle is sent."""
    window = Budget("b", D("10")).window.at(datetime.now(timezone.utc))
    key = BudgetKey("b", "global")
    start = time.time()
    hold = ledger.reserve(key, window, D("2"), D("10"), ttl=1, now=start)
    assert isinstance(hold, Reservation)
    assert ledger.spend(key, window, now=start + 5).reserved == 0  # expired
    for _ in range(3):
        assert ledger.settle(hold, D("0.7"), now=start + 5, op_id="late") == D("0.7")


@pytest.mark.parametrize("bad", ["", 42, "x" * 201])
def test_a_bad_op_id_is_refused_with_the_reason(ledger: Ledger, bad: Any) -> None:
    """An op id no backend can key on is a ValueError that says what is wrong, and nothing is written."""
    window = Budget("b", D("10")).window.at(datetime.now(timezone.utc))
    with pytest.raises(ValueError, match="op_id must be a non-empty string"):
        ledger.record(BudgetKey("b", "global"), window, D("1"), op_id=bad)
    assert ledger.spend(BudgetKey("b", "global"), window).spent == 0


def test_backlog_policy_refuses_bad_bounds() -> None:
    """Bounds that would make the backlog unbounded or never retry are refused at construction."""
    with pytest.raises(ValueError, match="size must be a whole number"):
        BacklogPolicy(size=-1)
    with pytest.raises(ValueError, match="max_age must be a positive, finite"):
        BacklogPolicy(max_age=float("inf"))
    with pytest.raises(ValueError, match="retry_max"):
        BacklogPolicy(retry_initial=2, retry_max=1)


# -- Redis killed and restarted ----------------------------------------------------------------------------
def test_outage_then_recovery_counts_every_cost_exactly_once(
    redis_server: DurableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Settles and records during a Redis outage reach the ledger once it is back, each once, in order."""
    engine = redis_engine(redis_server, scope=Scope(by=("user",)))
    tickets = [engine.reserve(D("1"), {USER: f"u{i % 2}"}) for i in range(10)]
    engine.settle(tickets.pop(), D("0.01"))  # user u1, before the outage: counted directly
    redis_server.kill()
    before = calls(engine)
    with caplog.at_level(logging.CRITICAL):
        for ticket in tickets:
            engine.settle(ticket, D("0.1"))
        engine.record_cost(D("0.5"), {USER: "u0"})  # from metrics, no reservation
    # The call path made one ledger call per write, as without a backlog: none replays the queue.
    assert calls(engine) - before == len(tickets) + 1
    assert engine.stats.errors == len(tickets) + 1
    assert engine.pending() == (10, D("1.4"))
    redis_server.start()
    statuses = engine.status({USER: "u0"})  # the first answer from the ledger replays the backlog
    assert engine.pending() == (0, D(0))
    assert engine.stats.replayed == 10 and engine.stats.dropped == 0
    assert statuses[0].spend == spent(engine, "user=u0") == 5 * D("0.1") + D("0.5")
    assert spent(engine, "user=u1") == D("0.01") + 4 * D("0.1")
    assert statuses[0].reserved == 0  # the holds of the settled calls are gone
    engine.settle(engine.reserve(D("1"), {USER: "u1"}), D("0.2"))  # and it works as before
    assert spent(engine, "user=u1") == D("0.61")
    engine.close()
    engine.ledger.close()


def test_an_idle_app_drains_the_backlog_in_the_background(redis_server: DurableRedis) -> None:
    """With no further call, the background retry puts the waiting spend in the ledger after a restart."""
    engine = redis_engine(redis_server, BacklogPolicy(retry_initial=0.05, retry_max=0.2))
    tickets = [engine.reserve(D("1"), {}) for _ in range(3)]
    redis_server.kill()
    logging.getLogger("otel_llmcost.budget").setLevel(logging.CRITICAL)
    try:
        for ticket in tickets:
            engine.settle(ticket, D("0.3"))
        redis_server.start()
        deadline = time.monotonic() + DEADLINE
        while engine.pending()[0] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        logging.getLogger("otel_llmcost.budget").setLevel(logging.NOTSET)
    assert engine.pending() == (0, D(0)), "the background retry never drained the backlog"
    assert spent(engine) == D("0.9")
    assert engine.stats.replayed == 3
    engine.close()
    engine.ledger.close()


def test_close_makes_a_last_attempt_and_logs_what_is_lost(
    redis_server: DurableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """close() replays what waits if the ledger is back; if it is not, it logs the count and USD lost."""
    engine = redis_engine(redis_server)
    first, second = engine.reserve(D("1"), {}), engine.reserve(D("1"), {})
    redis_server.kill()
    with caplog.at_level(logging.CRITICAL):
        engine.settle(first, D("0.4"))
    redis_server.start()
    engine.close()
    assert spent(engine) == D("0.4") and engine.pending() == (0, D(0))

    engine = BudgetEngine(engine.config, engine.ledger, sinks=[], backlog=NO_BACKGROUND)
    redis_server.kill()
    with caplog.at_level(logging.ERROR, logger="otel_llmcost.budget"):
        engine.settle(second, D("0.6"))
        caplog.clear()
        engine.close()
    assert "closing with 1 cost(s), $0.6, that never reached the ledger" in caplog.text
    engine.ledger.close()


def test_a_full_backlog_drops_new_costs_and_reports_the_usd_lost(
    redis_server: DurableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its bound the backlog keeps what it holds, drops the rest, counts it and logs the USD lost."""
    engine = redis_engine(redis_server, BacklogPolicy(size=3, retry_initial=600, retry_max=600))
    tickets = [engine.reserve(D("1"), {}) for _ in range(5)]
    redis_server.kill()
    with caplog.at_level(logging.ERROR, logger="otel_llmcost.budget"):
        for i, ticket in enumerate(tickets):
            engine.settle(ticket, D(i + 1) / 10)
    assert engine.pending() == (3, D("0.6"))
    assert (engine.stats.dropped, engine.stats.lost_usd) == (2, D("0.9"))
    lost = [r.getMessage() for r in caplog.records if "spend lost" in r.getMessage()]
    assert lost and "$0.4" in lost[0] and "backlog is full (3 waiting)" in lost[0]
    redis_server.start()
    engine.state()
    assert spent(engine) == D("0.6")
    engine.close()
    engine.ledger.close()


# -- Redis frozen: the reply is lost, the command runs on the thaw -----------------------------------------
def test_a_settle_whose_reply_was_lost_counts_once(redis_server: DurableRedis) -> None:
    """A settle that timed out on a frozen Redis runs when it thaws; its replay then changes nothing."""
    engine = redis_engine(redis_server)
    engine.settle(engine.reserve(D("1"), {}), D("0.01"))  # the settle script is loaded on the server
    ticket = engine.reserve(D("1"), {})
    redis_server.freeze()
    try:
        logging.getLogger("otel_llmcost.budget").setLevel(logging.CRITICAL)
        engine.settle(ticket, D("0.25"))  # times out after 0.3 s: queued
    finally:
        redis_server.thaw()
        logging.getLogger("otel_llmcost.budget").setLevel(logging.NOTSET)
    assert engine.pending() == (1, D("0.25"))
    deadline = time.monotonic() + DEADLINE
    while spent(engine) != D("0.26") and time.monotonic() < deadline:  # the thawed server ran it
        time.sleep(0.02)
    assert spent(engine) == D("0.26"), "the frozen server never ran the settle it had received"
    state = engine.state()[0]  # replays: the ledger knows the id
    assert engine.stats.replayed == 1 and engine.pending()[0] == 0
    assert state.spend == spent(engine) == D("0.26")
    assert state.reserved == 0
    engine.close()
    engine.ledger.close()


def test_calls_during_a_freeze_wait_no_longer_than_without_a_backlog(redis_server: DurableRedis) -> None:
    """On a frozen ledger each settle makes one ledger call (one socket timeout), however long the queue."""
    engine = redis_engine(redis_server)
    tickets = [engine.reserve(D("1"), {}) for _ in range(4)]
    before = calls(engine)
    redis_server.freeze()
    try:
        logging.getLogger("otel_llmcost.budget").setLevel(logging.CRITICAL)
        for ticket in tickets:
            engine.settle(ticket, D("0.1"))
            engine.level({})  # a read: its own call only, no replay on a ledger that did not answer
    finally:
        redis_server.thaw()
        logging.getLogger("otel_llmcost.budget").setLevel(logging.NOTSET)
    assert calls(engine) - before == 2 * len(tickets)
    engine.state()
    assert engine.pending()[0] == 0
    assert spent(engine) == D("0.4")
    engine.close()
    engine.ledger.close()


# -- SQLite locked by another writer ----------------------------------------------------------------------
@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """An SQLite ledger file and a second connection that can hold its write lock."""
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).close()  # schema in place
    blocker = sqlite3.connect(path, isolation_level=None)
    yield path, blocker
    blocker.close()


def test_sqlite_locked_during_settle_lands_in_the_window_of_the_call(
    locked_sqlite: tuple[Path, sqlite3.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    """A cost that waited across the month's end is counted in the month the call ended in, once."""
    path, blocker = locked_sqlite
    clock = FakeClock(datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc))
    ledger = CountingSQLiteLedger(path, timeout=0.05)
    engine = BudgetEngine([Budget("monthly", D("100"))], ledger, sinks=[], clock=clock, backlog=NO_BACKGROUND)
    ticket = engine.reserve(D("1"), {})
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
    with caplog.at_level(logging.CRITICAL):
        engine.settle(ticket, D("0.42"))
        engine.record_cost(D("0.08"), {})
    assert engine.pending() == (2, D("0.50"))
    clock.set(datetime(2026, 12, 1, 0, 5, tzinfo=timezone.utc))
    blocker.execute("ROLLBACK")
    december = engine.state()[0]  # reading works; the replay after it lands in November
    assert engine.pending()[0] == 0
    november = engine.config.budgets[0].window.at(datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc))
    assert ledger.spend(BudgetKey("monthly", "global"), november).spent == D("0.50")
    assert december.spend == 0
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM budget_ops").fetchone()[0]
    assert rows == 2  # one marker per write of spend (the settle and the record), none per read
    engine.close()
    ledger.close()
