"""The app itself killed (SIGKILL) during a budget-ledger outage, with the backlog journal on.

A real app process (`tests/budget/journal_worker.py`: a budget engine on a real redis-server with a
journal) settles and records costs from several threads while Redis is down, so every one of them waits
in the backlog; then the app is SIGKILLed (no handler runs, nothing is flushed or closed), Redis is
restarted from its fsynced append-only file, and a new app process is started on the same journal. The
ledger must then hold exactly what the calls cost: each queued cost once, the dead app's holds freed.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import BudgetKey
from otel_llmcost.budget.ledger.journal import read_journal
from otel_llmcost.budget.ledger.redis import RedisLedger
from tests.budget.journal_worker import BUDGET, DEADLINE, Worker

from .helpers import ManagedRedis

D = Decimal
THREADS, PER_THREAD, SETTLES = 8, 25, 6


@pytest.mark.reliability(
    "kill -9 of the app during a Redis outage, with the backlog journal on (journal_sync interval, the "
    "default, and always): 6 settles and 8 threads × 25 records queued, then SIGKILL, Redis restarted",
    "a new app process on the same journal puts the exact total in the ledger: every cost queued during "
    "the outage once, the settled-before-the-outage spend not again, no hold of the dead app left",
    covered_by=[
        "tests/budget/test_backlog_journal.py::test_kill_9_during_a_redis_outage_then_a_new_process_counts_the_spend_once",
        "tests/budget/test_backlog_journal.py::test_kill_9_with_interval_sync_keeps_lines_the_disk_never_saw",
        "tests/budget/test_backlog_journal.py::test_kill_9_of_workers_sharing_a_journal_directory_then_fewer_come_back",
    ],
)
@pytest.mark.parametrize("sync", ["interval", "always"])
def test_kill_9_of_the_app_during_a_redis_outage_loses_no_spend(
    durable_redis: ManagedRedis, tmp_path: Path, sync: str, record_number: Any
) -> None:
    """Spend queued by an app killed during a Redis outage reaches the ledger, exactly, from the next process."""
    journal, prefix = tmp_path / "journal", uuid.uuid4().hex
    key, window = BudgetKey("monthly", "global"), BUDGET.window.at(datetime.now(timezone.utc))
    ledger = RedisLedger.from_url(durable_redis.url, prefix=prefix)
    started: list[Worker] = []
    try:
        app = Worker(durable_redis.url, prefix, journal, sync=sync)
        started.append(app)
        app.send(do="reserve", n=2 + SETTLES, estimate="1")
        before = [D("0.3"), D("0.7")]
        for i, amount in enumerate(before):
            app.send(do="settle", i=i, amount=str(amount))
        assert ledger.spend(key, window).spent == sum(before)

        durable_redis.kill()
        settles = [D("0.0125") * (i + 1) for i in range(SETTLES)]
        for i, amount in enumerate(settles):
            app.send(do="settle", i=2 + i, amount=str(amount))
        records = [[str(D(t + 1) / 1000 + D(i) / 1_000_000) for i in range(PER_THREAD)] for t in range(THREADS)]
        began = time.perf_counter()
        reply = app.send(do="record_threads", amounts=records)
        took = time.perf_counter() - began
        queued = SETTLES + THREADS * PER_THREAD
        assert reply["pending"] == reply["journaled"] == queued and reply["journal_errors"] == 0
        queued_usd = sum(settles) + sum(D(a) for mine in records for a in mine)
        assert D(reply["pending_usd"]) == queued_usd
        app.kill()

        left, bad = read_journal(journal)
        record_number("costs queued during the outage (USD)", f"{queued} ({queued_usd.normalize()})")
        record_number("journal lines not yet synced at the kill", reply["unsynced"])
        record_number("fdatasyncs for them", reply["syncs"])
        record_number(f"wall time of the {THREADS * PER_THREAD} threaded record calls (s)", round(took, 3))
        assert not bad and len(left) == queued  # every queued cost readable after the kill

        durable_redis.start()
        assert ledger.spend(key, window).spent == sum(before)  # nothing from the outage reached Redis
        recovery = Worker(durable_redis.url, prefix, journal, retry=0.05, sync=sync)
        started.append(recovery)
        assert recovery.hello["restored"] == queued
        assert recovery.send(do="drain", timeout=DEADLINE)["pending"] == 0
        spend = ledger.spend(key, window)
        expected = sum(before) + queued_usd
        record_number("ledger total after the restart / cost of the calls (USD)", f"{spend.spent.normalize()} / {expected.normalize()}")
        record_number("holds left (USD)", str(spend.reserved))
        assert spend.spent == expected and spend.reserved == 0
        reply = recovery.send(do="close")
        assert reply["replayed"] == queued and reply["dropped"] == 0
        assert journal.stat().st_size == 0
    finally:
        for worker in started:
            worker.close()
        ledger.close()
