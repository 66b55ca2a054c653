"""The backlog's journal: spend waiting for the ledger survives a crash of the app, and counts once.

Unit tests of the file (write, done, compaction, reload, bad lines, the lock, a fork), then real
crashes: a child Python process with a budget engine on a real redis-server (or SQLite file) and a
journal queues spend during a real outage, is killed with SIGKILL, and a new process started on the
same journal puts exactly that spend in the ledger, once, also when some of it had landed before the
kill. Outages are real: redis-server killed, frozen with SIGSTOP, or nothing listening on the port;
an SQLite file locked by another writer; a file-size limit (RLIMIT_FSIZE) that makes the disk refuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import (
    Budget,
    BudgetConfig,
    BudgetEngine,
    BudgetKey,
    CalendarWindow,
    ConfigError,
    Reservation,
    RollingWindow,
    load_budget_config,
)
from otel_llmcost.budget.ledger.backlog import BacklogPolicy
from otel_llmcost.budget.ledger.journal import (
    COMPACT_AFTER,
    BacklogJournal,
    JournalEntry,
    JournalInUseError,
    encode_queued,
    read_journal,
)
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger
from otel_llmcost.testing.processes import free_port

from . import journal_worker
from .helpers import ListSink
from .journal_worker import Worker
from .test_settle_backlog import DurableRedis

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
#: A bound on waiting for a child process or a background thread, never a latency assertion.
DEADLINE = 30.0


def entry(op_id: str, amount: str = "0.1", *, hold: bool = False, queued_at: float | None = None,
          window: Any = None) -> JournalEntry:  # fmt: skip
    now = time.time()
    window = window or CalendarWindow("month", "America/New_York").at(datetime.now(timezone.utc))
    key = BudgetKey("monthly", "user=alice")
    reservation = Reservation(uuid.uuid4().hex, key, window, D("1.5"), now + 600) if hold else None
    return JournalEntry(
        op_id, key, window, D(amount), now, reservation, now if queued_at is None else queued_at
    )


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


@contextlib.contextmanager
def logging_off() -> Iterator[None]:
    """Silence the outage's expected error lines (one per refused ledger call)."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# -- the file ------------------------------------------------------------------------------------------------
def test_queued_writes_read_back_unchanged_in_order(tmp_path: Path) -> None:
    """Settles (with their hold) and records, calendar and rolling windows, exact amounts: all come back."""
    path = tmp_path / "journal"
    rolling = RollingWindow(timedelta(hours=24)).at(datetime.now(timezone.utc))
    written = [
        entry("a", "0.000000001", hold=True),
        entry("b", "12345.678901234", window=rolling),
        entry("c"),
    ]
    journal = BacklogJournal(path)
    assert journal.recovered == []
    for item in written:
        assert journal.append(item)
    journal.close()
    again = BacklogJournal(path)
    assert again.recovered == written
    assert [e.window.keep_until.timestamp() for e in again.recovered] == [
        e.window.keep_until.timestamp() for e in written
    ]
    again.close()


def test_done_writes_are_not_read_back_and_an_empty_queue_empties_the_file(tmp_path: Path) -> None:
    """A write marked done is gone after a reload; when none is left the file is truncated to nothing."""
    path = tmp_path / "journal"
    journal = BacklogJournal(path)
    for name in "abc":
        journal.append(entry(name))
    journal.done("b")
    assert [e.op_id for e in read_journal(path)[0]] == ["a", "c"]
    journal.done("a")
    journal.done("c")
    assert path.stat().st_size == 0
    journal.append(entry("d"))
    journal.close()
    assert [e.op_id for e in BacklogJournal(path).recovered] == ["d"]


def test_a_long_outage_with_progress_keeps_the_file_bounded(tmp_path: Path) -> None:
    """Writes that keep coming and going while one stays queued never grow the file past the bound."""
    path = tmp_path / "journal"
    journal = BacklogJournal(path)
    journal.append(entry("stays"))
    largest = 0
    for i in range(3 * COMPACT_AFTER):
        journal.append(entry(f"op{i}"))
        journal.done(f"op{i}")
        largest = max(largest, len(lines(path)))
    assert largest <= COMPACT_AFTER + 2
    journal.close()
    assert [e.op_id for e in read_journal(path)[0]] == ["stays"]


def test_torn_and_garbage_lines_are_skipped_with_the_file_and_line_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything readable is kept; each bad line is a warning naming the file and its line number."""
    path = tmp_path / "journal"
    good = [encode_queued(entry("a", hold=True)), encode_queued(entry("b"))]
    torn = encode_queued(entry("c"))[:57]  # kill -9 in the middle of an append
    path.write_bytes(
        good[0]
        + b"\x00\xffnot json at all\n"
        + b'{"v": 1, "op": "queued", "op_id": "x"}\n'
        + b'{"v": 2, "op": "queued", "op_id": "y"}\n'
        + b'{"v": 1, "op": "queued", "op_id": "z", "amount": "-1"}\n'
        + good[1]
        + torn
    )
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.budget"):
        journal = BacklogJournal(path)
    assert [e.op_id for e in journal.recovered] == ["a", "b"]
    warned = [r.getMessage() for r in caplog.records]
    for number in (2, 3, 4, 5, 7):
        assert any(f"{path}, line {number} skipped" in m for m in warned), (number, warned)
    assert any("torn last line" in m for m in warned) and any("format version 2" in m for m in warned)
    assert path.read_bytes() == good[0] + good[1]  # rewritten clean: the next append starts a line
    journal.append(entry("d"))
    journal.close()
    assert [e.op_id for e in read_journal(path)[0]] == ["a", "b", "d"]


def test_a_journal_held_elsewhere_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A second open of the same path (here: a second engine in this process) is a clear error."""
    path = tmp_path / "journal"
    first = BacklogJournal(path)
    with pytest.raises(JournalInUseError) as refused:
        BacklogJournal(path)
    message = str(refused.value)
    assert f"the backlog journal {path} is in use" in message
    assert "another budget engine here has it open" in message
    assert "its own path that stays the same across its restarts" in message
    first.close()
    BacklogJournal(path).close()  # free again once closed


def test_a_forked_child_neither_writes_nor_holds_the_parents_journal(tmp_path: Path) -> None:
    """After fork the child's appends are refused (it keeps its backlog in memory); the parent keeps the lock."""
    path = tmp_path / "journal"
    journal = BacklogJournal(path)
    journal.append(entry("parent"))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            wrote = journal.append(entry("child"))
            os.write(write_end, b"wrote" if wrote else b"refused")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"refused"
    assert [e.op_id for e in read_journal(path)[0]] == ["parent"]
    with pytest.raises(JournalInUseError):
        BacklogJournal(path)  # the child's exit did not release the parent's lock
    journal.close()


def test_an_unusable_journal_path_is_a_config_error_saying_what_to_do(tmp_path: Path) -> None:
    """A path under a regular file cannot be a journal: ConfigError at construction, not a later crash."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot use .* as the backlog journal .*writable path"):
        BudgetEngine([Budget("monthly", D("10"))], "memory://", sinks=[],
                     backlog=BacklogPolicy(journal=str(tmp_path / "file" / "journal")))  # fmt: skip


def test_backlog_policy_refuses_a_journal_that_is_not_a_path() -> None:
    """Only text or os.PathLike are paths; an empty one is refused too."""
    for bad in ("", "  ", 42):
        with pytest.raises(ValueError, match="journal must be a file path"):
            BacklogPolicy(journal=bad)  # type: ignore[arg-type]
    assert BacklogPolicy(journal=Path("/x/y")).journal == "/x/y"  # type: ignore[arg-type]


# -- a directory of slots: processes without a stable name ----------------------------------------------------
def ids(journal: BacklogJournal) -> list[str]:
    return [e.op_id for e in journal.recovered]


def test_a_journal_directory_gives_each_process_the_lowest_slot_nobody_holds(tmp_path: Path) -> None:
    """Two journals on one directory write two files; a new one takes the freed slot and replays it."""
    directory = f"{tmp_path}/slots/"  # not yet there: the trailing / says "directory"
    first, second = BacklogJournal(directory), BacklogJournal(directory)
    assert (first.path.name, second.path.name) == ("slot-0.jsonl", "slot-1.jsonl")
    assert first.directory == second.directory == tmp_path / "slots"
    first.append(entry("a1"))
    second.append(entry("b1"))
    first.close()
    again = BacklogJournal(tmp_path / "slots")  # an existing directory, given without the /
    assert again.path == tmp_path / "slots" / "slot-0.jsonl"
    assert ids(again) == ["a1"] and again.adopted == {}  # slot 1 is held: never taken over
    assert [e.op_id for e in read_journal(second.path)[0]] == ["b1"]
    again.close()
    second.close()


def test_slots_nobody_holds_are_taken_over_at_start_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four processes leave writes and two come back: the first takes over every orphan, in slot order.

    Slot 2 also holds a write that slot 0 holds (a takeover cut short by a crash after the copy): it is
    read once. The orphans are emptied, not deleted, and the second process finds nothing left.
    """
    directory = tmp_path / "slots"
    directory.mkdir()
    journals = [BacklogJournal(directory) for _ in range(4)]
    for number, journal in enumerate(journals):
        journal.append(entry(f"w{number}"))
    journals[1].append(entry("done-in-1"))
    journals[1].done("done-in-1")
    journals[2].append(entry("w0"))  # already in slot 0
    journals[3].append(entry("w3b", "0.25"))
    for journal in journals:
        journal.close()
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.budget.ledger.journal"):
        first = BacklogJournal(directory)
    assert first.path.name == "slot-0.jsonl"
    assert ids(first) == ["w0", "w1", "w2", "w3", "w3b"]
    assert first.adopted == {directory / "slot-1.jsonl": 1, directory / "slot-2.jsonl": 1,
                             directory / "slot-3.jsonl": 2}  # fmt: skip
    assert [e.op_id for e in read_journal(first.path)[0]] == ids(first)  # on disk in its own slot
    for number in (1, 2, 3):
        assert (directory / f"slot-{number}.jsonl").stat().st_size == 0
    assert "took over 2 write(s) from" in caplog.text and "slot-3.jsonl" in caplog.text
    second = BacklogJournal(directory)
    assert second.path.name == "slot-1.jsonl" and ids(second) == [] and second.adopted == {}
    assert sorted(p.name for p in directory.glob("slot-*.jsonl")) == [f"slot-{n}.jsonl" for n in range(4)]
    first.close()
    second.close()


def test_an_orphan_that_cannot_be_read_stays_for_a_later_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot nobody holds whose file the disk refuses to read (injected: the tests run as root, which
    reads any file) is logged and left whole; this process's own slot works, and a later start takes it."""
    from otel_llmcost.budget.ledger import journal as journal_module

    directory = tmp_path / "slots"
    first, second = BacklogJournal(f"{directory}/"), BacklogJournal(f"{directory}/")
    first.append(entry("mine"))
    second.append(entry("kept"))
    first.close()
    second.close()
    real_read = journal_module.read_journal

    def refuse_slot_1(path: Any) -> Any:
        if Path(path).name == "slot-1.jsonl":
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(journal_module, "read_journal", refuse_slot_1)
    with caplog.at_level(logging.ERROR, logger="otel_llmcost.budget.ledger.journal"):
        journal = BacklogJournal(directory)
    assert ids(journal) == ["mine"] and journal.adopted == {}
    assert "cannot read" in caplog.text and "slot-1.jsonl" in caplog.text and "Permission denied" in caplog.text
    journal.append(entry("new"))
    journal.close()
    assert [e.op_id for e in read_journal(directory / "slot-1.jsonl")[0]] == ["kept"]
    monkeypatch.setattr(journal_module, "read_journal", real_read)
    later = BacklogJournal(directory)
    assert ids(later) == ["mine", "new", "kept"]
    later.close()


def test_the_config_file_takes_a_journal_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`journal: .../` in the config keeps its trailing / and makes the engine take a slot there."""
    monkeypatch.setenv("LLMCOST_TEST_APP", "shop")
    config = tmp_path / "llmcost.yaml"
    journal = f"{tmp_path}/backlog-${{LLMCOST_TEST_APP}}/"
    config.write_text(f"ledger: sqlite:///{tmp_path}/ledger.db\nbacklog: {{journal: '{journal}'}}\n"
                      "budgets: [{name: monthly, amount: 10}]\n")  # fmt: skip
    assert load_budget_config(config).backlog == BacklogPolicy(journal=f"{tmp_path}/backlog-shop/")
    engines = [BudgetEngine.from_config(config) for _ in range(2)]
    paths = [e._backlog.journal.path for e in engines if e._backlog.journal is not None]
    assert paths == [tmp_path / "backlog-shop" / "slot-0.jsonl", tmp_path / "backlog-shop" / "slot-1.jsonl"]
    for engine in engines:
        engine.close()


# -- syncing: group commit ("always") and the background syncer ("interval") ------------------------------------
def test_always_appends_wait_for_a_sync_and_callers_queued_behind_one_share_the_next(tmp_path: Path) -> None:
    """Eight threads append while a sync runs: none returns before a sync, and one more sync covers all eight.

    The test holds the journal's sync lock, which is what a running fdatasync holds: every append has
    written its line (it is in the file) and waits. Once released, the first caller syncs for everyone.
    """
    journal = BacklogJournal(tmp_path / "journal", sync="always")
    threads = [threading.Thread(target=journal.append, args=(entry(f"t{i}"),)) for i in range(8)]
    with journal._sync_lock:  # a sync in progress
        for thread in threads:
            thread.start()
        wait_for(lambda: journal.unsynced() == 8, "the appends never wrote their lines")
        time.sleep(0.05)  # give a wrongly early return the chance to happen
        assert all(thread.is_alive() for thread in threads)  # no append returned before a sync
        assert len(read_journal(tmp_path / "journal")[0]) == 8  # yet each line is in the file (the OS has it)
    for thread in threads:
        thread.join(DEADLINE)
    assert journal.syncs == 1 and journal.unsynced() == 0  # one fdatasync for the eight, not eight
    journal.close()


def test_interval_syncs_in_the_background_at_most_once_per_interval_and_close_syncs_the_rest(
    tmp_path: Path,
) -> None:
    """In "interval" mode an append returns at once; the syncer syncs, then waits the interval; close syncs."""
    journal = BacklogJournal(tmp_path / "journal", sync="interval", sync_interval=30.0)
    assert journal.append(entry("a"))
    wait_for(lambda: journal.unsynced() == 0, "the background syncer never synced the first line")
    assert journal.syncs == 1
    syncer = journal._syncer
    assert syncer is not None and syncer.is_alive()
    journal.append(entry("b"))
    journal.append(entry("c"))
    assert journal.unsynced() == 2 and journal.syncs == 1  # the syncer waits out its interval
    journal.close()
    assert journal.syncs == 2 and journal.unsynced() == 0  # close synced the two waiting lines
    syncer.join(DEADLINE)
    assert not syncer.is_alive()  # and the syncer ended with it
    assert [e.op_id for e in read_journal(tmp_path / "journal")[0]] == ["a", "b", "c"]


def test_the_background_syncer_ends_when_idle_and_starts_again_on_the_next_line(tmp_path: Path) -> None:
    """No thread stays behind once everything is synced; the next line gets a syncer again."""
    journal = BacklogJournal(tmp_path / "journal", sync="interval", sync_interval=0.01)
    journal.append(entry("a"))
    wait_for(lambda: journal._syncer is None, "the syncer never ended with nothing left to sync")
    assert journal.unsynced() == 0
    journal.append(entry("b"))
    wait_for(lambda: journal._syncer is None and journal.unsynced() == 0, "the second line was never synced")
    assert journal.syncs == 2
    journal.close()


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_concurrent_submitters_keep_every_write_and_each_threads_order(tmp_path: Path, sync: str) -> None:
    """8 threads × 150 costs queued at once on a dead Redis: the journal holds all 1201, each thread's in
    its order, and a new engine on a working ledger replays exactly their sum."""
    path = tmp_path / "journal"
    policy = BacklogPolicy(journal=str(path), retry_initial=600, retry_max=600, journal_sync=sync)
    engine = BudgetEngine([Budget("monthly", D("100000"))], dead_redis(), sinks=[], backlog=policy)
    engine.record_cost(D("0.5"), {})  # the first write queues: every later one finds a queue
    start = threading.Barrier(8)

    def submit(thread: int) -> None:
        start.wait()
        for i in range(150):  # the amount says who sent it and when: thread + 1 dollars, i millionths
            engine.record_cost(D(thread + 1) + D(i) / 1_000_000, {})

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    with logging_off():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
    assert engine.pending()[0] == 1201 and engine.stats.journal_errors == 0
    journal = engine._backlog.journal
    assert journal is not None
    if sync == "always":
        assert journal.unsynced() == 0  # every call returned after its line was synced
    written, bad = read_journal(path)
    assert not bad and len(written) == 1201 and len({e.op_id for e in written}) == 1201
    for thread in range(8):
        mine = [e.amount - (thread + 1) for e in written if int(e.amount) == thread + 1]
        assert mine == [D(i) / 1_000_000 for i in range(150)], thread
    expected = D("0.5") + sum(D(t + 1) * 150 + sum(D(i) for i in range(150)) / 1_000_000 for t in range(8))
    with logging_off():
        engine.close(timeout=0.1)
    engine.ledger.close()

    ledger = SQLiteLedger(tmp_path / "ledger.db")
    quick = dataclasses.replace(policy, retry_initial=0.01, retry_max=0.05)
    again = BudgetEngine([Budget("monthly", D("100000"))], ledger, sinks=[], backlog=quick)
    assert again.stats.restored == 1201
    wait_for(lambda: again.stats.replayed == 1201, "the restored writes were never replayed")
    assert again.state()[0].spend == expected and again.pending() == (0, D(0))
    again.close()
    ledger.close()


# -- the engine on a journal, in one process ----------------------------------------------------------------
def dead_redis() -> RedisLedger:
    """A Redis ledger with nothing listening on its port: every call fails at once (connection refused)."""
    return RedisLedger.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.3, socket_connect_timeout=0.3
    )


def test_closing_during_an_outage_leaves_the_spend_for_the_next_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() with the ledger down keeps the journal; the next engine replays it and fires its alerts."""
    path, journal = tmp_path / "ledger.db", tmp_path / "journal"
    SQLiteLedger(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    budgets = [Budget("monthly", D("1"))]
    policy = BacklogPolicy(journal=str(journal), retry_initial=600, retry_max=600)
    ledger = SQLiteLedger(path, timeout=0.05)
    engine = BudgetEngine(budgets, ledger, sinks=[], backlog=policy)
    tickets = [engine.reserve(D("0.4"), {}) for _ in range(2)]
    blocker.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.CRITICAL):
        engine.settle(tickets[0], D("0.45"))
        engine.settle(tickets[1], D("0.35"))
        engine.record_cost(D("0.05"), {})
    assert engine.pending() == (3, D("0.85")) and engine.stats.journal_errors == 0
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.budget"):
        engine.close(timeout=0.2)
    assert f"3 of them are kept in the backlog journal {journal}" in caplog.text
    assert "spend is lost" not in caplog.text
    ledger.close()
    blocker.execute("ROLLBACK")
    blocker.close()

    sink = ListSink()
    ledger = SQLiteLedger(path)
    engine = BudgetEngine(budgets, ledger, sinks=[sink], backlog=policy)
    assert engine.stats.restored == 3 and engine.pending() == (3, D("0.85"))
    state = engine.state()[0]  # the ledger answers: the restored writes go first
    assert engine.pending() == (0, D(0)) and engine.stats.replayed == 3
    assert state.spend == D("0.85") and state.reserved == 0  # the settles freed the other process's holds
    assert sink.levels() == ["warn", "throttle"]  # 85% of $1: alerts come from the restored spend too
    assert journal.stat().st_size == 0
    engine.close()
    ledger.close()


def test_journal_writes_older_than_max_age_are_dropped_and_reported_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What waited past max_age (across the restart) is not replayed: counted and logged lost, as in memory."""
    path = tmp_path / "journal"
    journal = BacklogJournal(path)
    journal.append(entry("old", "0.7", queued_at=time.time() - 7200))
    journal.append(entry("young", "0.2", queued_at=time.time() - 60))
    journal.close()
    policy = BacklogPolicy(journal=str(path), max_age=3600, retry_initial=600, retry_max=600)
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.budget"):
        engine = BudgetEngine([Budget("monthly", D("10"))], dead_redis(), sinks=[], backlog=policy)
    assert (engine.stats.dropped, engine.stats.lost_usd, engine.stats.restored) == (1, D("0.7"), 1)
    assert engine.pending() == (1, D("0.2"))
    lost = [r.getMessage() for r in caplog.records if "spend lost" in r.getMessage()]
    assert lost and "$0.7" in lost[0] and "waited over 3600 s" in lost[0] and str(path) in lost[0]
    assert [e.op_id for e in read_journal(path)[0]] == ["young"]
    with caplog.at_level(logging.CRITICAL):
        engine.close(timeout=0.2)
    engine.ledger.close()


def test_a_disk_that_refuses_the_journal_never_breaks_the_call(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes appends fail (EFBIG): settles return normally, the costs wait in memory, counted."""
    script = textwrap.dedent(f"""
        import json, logging, resource, signal, sys
        from decimal import Decimal
        from otel_llmcost.budget import Budget, BudgetEngine
        from otel_llmcost.budget.ledger.backlog import BacklogPolicy
        from otel_llmcost.budget.ledger.redis import RedisLedger
        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
        ledger = RedisLedger.from_url("redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.3)
        policy = BacklogPolicy(journal={str(tmp_path / "journal")!r}, retry_initial=600, retry_max=600)
        engine = BudgetEngine([Budget("monthly", Decimal("10"))], ledger, sinks=[], backlog=policy)
        for i in range(8):
            engine.record_cost(Decimal("0.1"), {{}})
        count, usd = engine.pending()
        print(json.dumps({{"pending": count, "usd": str(usd), "journal_errors": engine.stats.journal_errors,
                          "journaled": engine._backlog.journal.pending()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE,
                          cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["pending"] == 8 and D(result["usd"]) == D("0.8")  # every cost still waits
    assert 0 < result["journaled"] < 8 and result["journal_errors"] == 8 - result["journaled"]
    assert done.stderr.count("writing the backlog journal") == 1  # one error line, not one per call
    assert "a crash of the app before the ledger is back would lose them" in done.stderr
    # What did reach the disk is whole: a restart reads every journaled cost back.
    assert len(read_journal(tmp_path / "journal")[0]) == result["journaled"]


# -- configuration -------------------------------------------------------------------------------------------
def test_the_config_file_sets_the_backlog_and_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backlog:` in the budget config reaches the engine; ${VAR} in the journal path is expanded."""
    monkeypatch.setenv("LLMCOST_TEST_REPLICA", "replica-7")
    config = tmp_path / "llmcost.yaml"
    config.write_text(
        textwrap.dedent(f"""
        ledger: sqlite:///{tmp_path}/ledger.db
        backlog:
          journal: {tmp_path}/backlog-${{LLMCOST_TEST_REPLICA}}
          size: 500
          max_age: 30m
          retry_max: 10
        budgets:
          - {{name: monthly, amount: 10}}
    """)
    )
    loaded = load_budget_config(config)
    expected = BacklogPolicy(
        journal=f"{tmp_path}/backlog-replica-7", size=500, max_age=1800.0, retry_max=10.0
    )
    assert loaded.backlog == expected
    engine = BudgetEngine.from_config(config)
    assert engine._backlog.journal is not None
    assert engine._backlog.journal.path == tmp_path / "backlog-replica-7"
    engine.close()
    assert BudgetConfig().backlog is None  # no section: memory only, as before


def test_the_config_file_sets_how_the_journal_is_synced(tmp_path: Path) -> None:
    """`journal_sync` and `journal_sync_interval` reach the policy and the journal; the default is interval."""
    config = tmp_path / "llmcost.yaml"
    config.write_text(
        f"budgets: []\nbacklog:\n  journal: {tmp_path}/j\n  journal_sync: always\n  journal_sync_interval: 0.25\n"
    )
    loaded = load_budget_config(config)
    assert loaded.backlog is not None
    assert (loaded.backlog.journal_sync, loaded.backlog.journal_sync_interval) == ("always", 0.25)
    engine = BudgetEngine(loaded, "memory://", sinks=[])
    assert engine._backlog.journal is not None and engine._backlog.journal.sync_mode == "always"
    engine.close()
    config.write_text(f"budgets: []\nbacklog:\n  journal: {tmp_path}/j\n")
    default = load_budget_config(config).backlog
    assert default is not None and (default.journal_sync, default.journal_sync_interval) == ("interval", 0.05)


def test_backlog_policy_refuses_bad_sync_settings_with_what_they_mean() -> None:
    """A mode other than interval/always, or an interval that is not in (0, 60] seconds, is a ValueError."""
    for mode in ("sometimes", "ALWAYS", None, 1):
        with pytest.raises(ValueError, match="journal_sync must be one of interval, always.*survives any crash"):
            BacklogPolicy(journal="/x", journal_sync=mode)  # type: ignore[arg-type]
    for interval in (0, -1, float("nan"), float("inf"), 61, True, "0.05"):
        with pytest.raises(ValueError, match="journal_sync_interval must be a number of seconds above 0 and at most"):
            BacklogPolicy(journal="/x", journal_sync_interval=interval)  # type: ignore[arg-type]
    assert BacklogPolicy(journal="/x", journal_sync="always", journal_sync_interval=60).journal_sync == "always"
    with pytest.raises(ValueError, match="journal_sync must be one of"):
        BacklogJournal("/nonexistent/never-created", sync="fsync")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "journal: /x/${LLMCOST_TEST_UNSET}",
            "environment variable LLMCOST_TEST_UNSET (used in the journal path",
        ),
        ("size: -1", "backlog size must be a whole number >= 0"),
        ("size: 1.5", "backlog.size: expected a whole number"),
        ("max_age: forever", "backlog.max_age: 'forever' is not a duration"),
        ("journl: /x", "unknown key 'journl'; did you mean 'journal'?"),
        ("retry_initial: 10\n  retry_max: 1", "retry_max (1.0) must be >= retry_initial (10.0)"),
        (
            "journal: /x\n  journal_sync: sometimes",
            "backlog.journal_sync: backlog journal_sync must be one of interval, always, not 'sometimes'",
        ),
        ("journal: /x\n  journal_sync: true", "journal_sync must be one of interval, always, not True"),
        ("journal: /x\n  journal_sync_interval: 0", "backlog.journal_sync_interval: 0 is not a positive number"),
        ("journal: /x\n  journal_sync_interval: 2m", "at most 60, not 120.0: it bounds what a power loss can take"),
        ("journal: /x\n  journal_sync_interval: soon", "journal_sync_interval: 'soon' is not a duration"),
        ("journal_sync: always", "backlog.journal_sync: journal_sync is set but there is no journal: add backlog"),
        ("journal_sync_interval: 1", "journal_sync_interval is set but there is no journal"),
        ("journal_synk: always", "unknown key 'journal_synk'; did you mean 'journal_sync'?"),
    ],
)
def test_bad_backlog_settings_name_the_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, message: str
) -> None:
    """Each mistake in `backlog:` is a ConfigError with the file, the line and what is wrong."""
    monkeypatch.delenv("LLMCOST_TEST_UNSET", raising=False)
    config = tmp_path / "llmcost.yaml"
    config.write_text(f"budgets: []\nbacklog:\n  {section}\n")
    with pytest.raises(ConfigError) as refused:
        load_budget_config(config)
    assert str(refused.value).startswith(f"{config}:")
    assert message in str(refused.value)


# -- real crashes: a child process killed with SIGKILL -------------------------------------------------------
@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts is killed at its end, whatever happens."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("sync", ["interval", "always"])
def test_kill_9_during_a_redis_outage_then_a_new_process_counts_the_spend_once(
    tmp_path: Path, workers: list[Worker], sync: str
) -> None:
    """Settles queued in a process SIGKILLed during a Redis outage reach the ledger from the next one, once.

    Three settles time out on a frozen Redis; each call sends the oldest waiting write (the order is
    kept), so the first one's command runs when Redis thaws: it lands, unconfirmed, and stays in the
    journal. Then Redis is killed and four settles and a record are refused. The app is SIGKILLed, Redis
    restarted, a new process started on the journal: the ledger holds the eight journaled writes
    exactly once and no hold is left.
    """
    journal, prefix = tmp_path / "journal", uuid.uuid4().hex
    amounts = [D("0.011") * (i + 1) for i in range(8)]
    with DurableRedis(tmp_path / "redis") as redis_server:
        ledger = RedisLedger.from_url(redis_server.url, prefix=prefix)
        key, window = (
            BudgetKey("monthly", "global"),
            journal_worker.BUDGET.window.at(datetime.now(timezone.utc)),
        )
        app = Worker(redis_server.url, prefix, journal, sync=sync)
        workers.append(app)
        assert app.hello["ready"] and app.hello["restored"] == 0
        app.send(do="reserve", n=8, estimate="1")
        app.send(do="settle", i=0, amount="0.5")  # before the outage (and loads the settle script)
        assert ledger.spend(key, window).spent == D("0.5")

        second = Worker(redis_server.url, prefix, journal)  # the same journal while the app runs
        workers.append(second)
        assert second.hello["error"] == "JournalInUseError"
        assert f"in use by another process (pid {app.process.pid})" in second.hello["message"]
        assert second.process.wait(timeout=DEADLINE) == 3

        redis_server.freeze()
        try:
            for i in range(1, 4):
                reply = app.send(do="settle", i=i, amount=str(amounts[i]))
        finally:
            redis_server.thaw()
        assert reply["pending"] == 3
        landed = D("0.5") + amounts[1]
        wait_for(lambda: ledger.spend(key, window).spent == landed, "the thawed Redis never ran the settle")

        redis_server.kill()
        for i in range(4, 8):
            reply = app.send(do="settle", i=i, amount=str(amounts[i]))
        reply = app.send(do="record", amount="0.25")
        assert reply["pending"] == 8 and reply["journal_errors"] == 0
        app.kill()

        redis_server.start()
        assert ledger.spend(key, window).spent == landed  # what landed survived the restart (fsynced AOF)
        assert ledger.spend(key, window).reserved == D(6)  # the dead app's holds are still there
        recovery = Worker(redis_server.url, prefix, journal, retry=0.05, sync=sync)
        workers.append(recovery)
        assert recovery.hello["restored"] == 8
        assert recovery.send(do="drain", timeout=DEADLINE)["pending"] == 0
        total = D("0.5") + sum(amounts[1:8]) + D("0.25")
        assert ledger.spend(key, window).spent == total  # each write once: the landed one not again
        assert ledger.spend(key, window).reserved == 0  # the new process settled the dead one's holds
        reply = recovery.send(do="close")
        assert reply["replayed"] == 8 and reply["dropped"] == 0
        assert journal.stat().st_size == 0
        ledger.close()


def test_kill_9_with_interval_sync_keeps_lines_the_disk_never_saw(tmp_path: Path, workers: list[Worker]) -> None:
    """`journal_sync: interval`: lines written but not yet synced when the app is SIGKILLed are kept.

    The interval is 30 s, so after the syncer's first sync every later line is only in the OS's page
    cache when the kill comes (the worker reports them unsynced): a crash of the app does not take the
    page cache with it, and the next process replays every cost, settles of the dead app's holds and
    records from 8 threads at once, exactly once.
    """
    journal, prefix = tmp_path / "journal", uuid.uuid4().hex
    with DurableRedis(tmp_path / "redis") as redis_server:
        ledger = RedisLedger.from_url(redis_server.url, prefix=prefix)
        key, window = BudgetKey("monthly", "global"), journal_worker.BUDGET.window.at(datetime.now(timezone.utc))
        app = Worker(redis_server.url, prefix, journal, sync="interval", interval=30.0)
        workers.append(app)
        app.send(do="reserve", n=4, estimate="1")
        redis_server.kill()
        app.send(do="record", amount="0.001")  # the first queued line: the syncer syncs it, then sleeps 30 s
        wait_for(lambda: app.send(do="state")["unsynced"] == 0, "the first line was never synced")
        settles = [D("0.125") * (i + 1) for i in range(4)]
        for i, amount in enumerate(settles):
            app.send(do="settle", i=i, amount=str(amount))
        threads = [[str(D(t + 1) / 100 + D(i) / 100_000) for i in range(20)] for t in range(8)]
        reply = app.send(do="record_threads", amounts=threads)
        assert reply["pending"] == reply["journaled"] == 1 + 4 + 160 and reply["journal_errors"] == 0
        assert reply["unsynced"] == 4 + 160 and reply["syncs"] == 1  # in the OS, not yet on the disk
        app.kill()

        redis_server.start()
        assert ledger.spend(key, window).reserved == D(4)  # the dead app's holds
        recovery = Worker(redis_server.url, prefix, journal, retry=0.05)
        workers.append(recovery)
        assert recovery.hello["restored"] == 165
        assert recovery.send(do="drain", timeout=DEADLINE)["pending"] == 0
        total = D("0.001") + sum(settles) + sum(D(a) for mine in threads for a in mine)
        spend = ledger.spend(key, window)
        assert spend.spent == total and spend.reserved == 0
        assert recovery.send(do="close")["replayed"] == 165
        ledger.close()


def test_kill_9_of_workers_sharing_a_journal_directory_then_fewer_come_back(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """Three workers without names share a slot directory; during a Redis outage each queues two settles
    and a record, then all three are SIGKILLed. Two come back: the first takes its old slot and the two
    nobody holds, the second finds its slot empty; the ledger gets every cost once and no hold is left."""
    directory, prefix = tmp_path / "journals", uuid.uuid4().hex
    directory.mkdir()
    with DurableRedis(tmp_path / "redis") as redis_server:
        ledger = RedisLedger.from_url(redis_server.url, prefix=prefix)
        key, window = BudgetKey("monthly", "global"), journal_worker.BUDGET.window.at(datetime.now(timezone.utc))
        apps = [Worker(redis_server.url, prefix, directory) for _ in range(3)]
        workers.extend(apps)
        assert [app.hello["slot"] for app in apps] == ["slot-0.jsonl", "slot-1.jsonl", "slot-2.jsonl"]
        for app in apps:
            app.send(do="reserve", n=2, estimate="1")
        redis_server.kill()
        total = D(0)
        for number, app in enumerate(apps):
            for i in range(2):
                amount = D("0.0101") * (2 * number + i + 1)
                app.send(do="settle", i=i, amount=str(amount))
                total += amount
            reply = app.send(do="record", amount=str(D("0.003") * (number + 1)))
            total += D("0.003") * (number + 1)
            assert reply["pending"] == reply["journaled"] == 3 and reply["journal_errors"] == 0
        for app in apps:
            app.kill()

        redis_server.start()
        assert ledger.spend(key, window).reserved == D(6)  # the dead workers' holds
        first = Worker(redis_server.url, prefix, directory, retry=0.05)
        second = Worker(redis_server.url, prefix, directory, retry=0.05)
        workers.extend([first, second])
        assert (first.hello["slot"], first.hello["restored"]) == ("slot-0.jsonl", 9)
        assert (second.hello["slot"], second.hello["restored"]) == ("slot-1.jsonl", 0)
        for app in (first, second):
            assert app.send(do="drain", timeout=DEADLINE)["pending"] == 0
        spend = ledger.spend(key, window)
        assert spend.spent == total and spend.reserved == 0
        assert first.send(do="close")["replayed"] == 9
        assert [(directory / f"slot-{n}.jsonl").stat().st_size for n in range(3)] == [0, 0, 0]
        ledger.close()


def test_kill_9_mid_replay_on_sqlite_then_a_new_process_counts_the_spend_once(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """SQLite locked while 60 calls settle; the app replays 9 after the unlock, then the ledger fails again
    (a trigger refuses the 10th write) and the app is SIGKILLed.

    The next process finishes the job: every cost once. Two writes still in the journal are applied to
    the ledger by hand first, with their op ids, as a first attempt whose answer was lost (or a kill
    between the ledger's commit and the "done" mark) leaves them: not counted again.
    """
    path, journal = tmp_path / "ledger.db", tmp_path / "journal"
    SQLiteLedger(path).close()
    amounts = [D("0.001") * (i + 1) for i in range(60)]
    app = Worker(str(path), "", journal, retry=0.02)
    workers.append(app)
    app.send(do="reserve", n=60, estimate="1")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: every write of the app fails
    for i, amount in enumerate(amounts):
        reply = app.send(do="settle", i=i, amount=str(amount))
    assert reply["pending"] == 60
    blocker.execute(
        "CREATE TRIGGER fail_after_nine BEFORE INSERT ON budget_ops WHEN (SELECT COUNT(*) FROM budget_ops) >= 9"
        " BEGIN SELECT RAISE(ABORT, 'injected fault: the ledger fails again'); END"
    )
    blocker.execute("COMMIT")  # the app's background retry replays nine, then fails and backs off
    wait_for(lambda: app.send(do="drain", timeout=0)["pending"] == 51, "the app never replayed nine")
    app.kill()
    blocker.execute("DROP TRIGGER fail_after_nine")
    blocker.close()

    left, bad = read_journal(journal)
    assert not bad and len(left) == 51
    ledger = SQLiteLedger(path)
    for item in left[:2]:  # landed, but the app never heard: the journal still has them
        assert item.reservation is not None
        ledger.settle(item.reservation, item.amount, now=item.now, op_id=item.op_id)
    recovery = Worker(str(path), "", journal, retry=0.05)
    workers.append(recovery)
    assert recovery.hello["restored"] == len(left)
    reply = recovery.send(do="drain", timeout=DEADLINE)
    assert reply["pending"] == 0 and reply["dropped"] == 0
    key, window = BudgetKey("monthly", "global"), journal_worker.BUDGET.window.at(datetime.now(timezone.utc))
    spend = ledger.spend(key, window)
    assert spend.spent == sum(amounts) and spend.reserved == 0
    ops = sqlite3.connect(path)
    assert ops.execute("SELECT COUNT(*) FROM budget_ops").fetchone()[0] == 60
    ops.close()
    reply = recovery.send(do="close")
    assert reply["replayed"] == 51  # the two applied by hand too: sent again, they changed nothing
    ledger.close()
