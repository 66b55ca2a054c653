"""`sqlite:///path`: the ingest store of one processor, in the budget ledger's own SQLite file.

Stream state, dedup marks and budget spend live in one database, so one `BEGIN IMMEDIATE … COMMIT`
holds a request's whole effect (see `store.py`); in WAL mode a committed request survives `kill -9`
(`?synchronous=FULL` also survives power loss, for a few hundred microseconds per commit).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from ..budget.ledger.sqlite import SQLiteLedger
from .events import CUMULATIVE, CostEvent
from .store import Target

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ingest_series (key BLOB PRIMARY KEY, time INTEGER NOT NULL,"
    " value REAL NOT NULL, units INTEGER NOT NULL, seen REAL NOT NULL) WITHOUT ROWID",
    # Mark keys start with the event's own time (`events.mark_key`): no other column or index is needed,
    # and old marks are pruned by key range.
    "CREATE TABLE IF NOT EXISTS ingest_marks (key BLOB PRIMARY KEY) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS ingest_series_seen ON ingest_series (seen)",
    "CREATE TABLE IF NOT EXISTS ingest_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_CHUNK = 900  # bound parameters per IN (...) query
_PRUNE_EVERY = 2000


def _chunks(items: list[bytes]) -> list[list[bytes]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


@functools.lru_cache(maxsize=64)
def _insert_marks(count: int) -> str:
    return "INSERT OR IGNORE INTO ingest_marks (key) VALUES " + ",".join(["(?)"] * count)


@functools.lru_cache(maxsize=256)
def _upsert_spend(count: int) -> str:
    return ("INSERT INTO budget_spend (budget, scope, bucket, spent, keep_until) VALUES "
            + ",".join(["(?, ?, ?, ?, ?)"] * count)
            + " ON CONFLICT (budget, scope, bucket) DO UPDATE SET spent = spent + excluded.spent")


def increment(state: tuple[int, float, int] | None, event: CostEvent, epoch_ns: int) -> int:
    """The units a cumulative point adds, given its series' last (time, value, units) — the rule of
    `store.py`; -1 for a point already seen (a resend, or older than the last one)."""
    if state is None:
        return event.units if event.start >= epoch_ns else 0
    last_time, last_value, last_units = state
    if event.time <= last_time:
        return -1
    if event.value < last_value:
        return event.units
    return max(event.units - last_units, 0)


class SQLiteIngestStore(SQLiteLedger):
    """The budget ledger plus stream state and dedup marks (see the module doc)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", timeout: float = 30.0,
                 retention: float = 7 * 86400.0, dedup_window: float = 3600.0) -> None:
        super().__init__(path, synchronous=synchronous, timeout=timeout)
        self.retention = retention
        self.dedup_window = dedup_window
        self._applies = 0
        with self._transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO ingest_meta (name, value) VALUES ('epoch_ns', ?)",
                       (str(time.time_ns()),))
            self.epoch_ns = int(db.execute("SELECT value FROM ingest_meta WHERE name = 'epoch_ns'").fetchone()[0])

    def apply(self, events: Sequence[CostEvent], event_targets: Sequence[tuple[int, ...]],
              targets: Sequence[Target], *, now: float | None = None) -> list[int]:
        at = time.time() if now is None else now
        series_keys = list({e.key for e in events if e.kind == CUMULATIVE})
        mark_keys = list({e.key for e in events if e.kind != CUMULATIVE})
        increments: list[int] = []
        with self._transaction() as db:
            states: dict[bytes, tuple[int, float, int]] = {}
            for chunk in _chunks(series_keys):
                rows = db.execute(f"SELECT key, time, value, units FROM ingest_series WHERE key IN"
                                  f" ({','.join('?' * len(chunk))})", chunk).fetchall()
                states.update((row[0], (row[1], row[2], row[3])) for row in rows)
            seen = self._marks(db, mark_keys)
            changed: dict[bytes, tuple[int, float, int]] = {}
            spend = [0] * len(targets)
            if not series_keys and not seen and len(mark_keys) == len(events):
                # The common case (spans or delta points, none counted before, no key twice): every
                # event counts in full; its units go to the targets it shares with most others.
                increments = [event.units for event in events]
            if increments and min(increments) >= 0:
                by_targets: dict[tuple[int, ...], int] = {}
                get = by_targets.get
                for where, units in zip(event_targets, increments, strict=True):
                    by_targets[where] = get(where, 0) + units
                for where, units in by_targets.items():
                    if units > 0:
                        for index in where:
                            spend[index] += units
                events = event_targets = ()  # nothing left for the general loop below
            else:
                increments = []
            for event, where in zip(events, event_targets, strict=True):
                if event.kind == CUMULATIVE:
                    state = states.get(event.key)
                    units = increment(state, event, self.epoch_ns)
                    if state is None or event.time > state[0]:
                        states[event.key] = changed[event.key] = (event.time, event.value, event.units)
                elif event.key in seen:
                    units = -1
                else:
                    seen.add(event.key)
                    units = event.units
                increments.append(units)
                if units > 0:
                    for index in where:
                        spend[index] += units
            if changed:
                db.executemany(
                    "INSERT INTO ingest_series (key, time, value, units, seen) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET time = excluded.time, value = excluded.value,"
                    " units = excluded.units, seen = excluded.seen",
                    [(key, t, v, u, at) for key, (t, v, u) in changed.items()])
            rows = [(t.key.budget, t.key.scope, t.window.bucket, units, t.window.keep_until.timestamp())
                    for t, units in zip(targets, spend, strict=True) if units]
            for first in range(0, len(rows), _CHUNK // 5):  # the ledger's own upsert (SQLiteLedger._add),
                chunk = rows[first:first + _CHUNK // 5]      # many rows per statement
                db.execute(_upsert_spend(len(chunk)), [value for row in chunk for value in row])
            self._applies += 1
            if self._applies % _PRUNE_EVERY == 0:
                self._prune_ingest(db, at)
        return increments

    @staticmethod
    def _marks(db: sqlite3.Connection, keys: list[bytes]) -> set[bytes]:
        """Insert the request's dedup marks; return those that were there already (resends).

        The common case — nothing resent — costs one batched insert: only when fewer rows went in than
        were offered are the old ones looked up (after undoing the insert, to tell them apart).
        """
        if not keys:
            return set()
        db.execute("SAVEPOINT marks")
        before = db.total_changes
        for chunk in _chunks(keys):  # one multi-row statement per chunk: half the cost of executemany
            db.execute(_insert_marks(len(chunk)), chunk)
        if db.total_changes - before == len(keys):
            db.execute("RELEASE marks")
            return set()
        db.execute("ROLLBACK TO marks")
        seen: set[bytes] = set()
        for chunk in _chunks(keys):
            rows = db.execute(f"SELECT key FROM ingest_marks WHERE key IN ({','.join('?' * len(chunk))})",
                              chunk).fetchall()
            seen.update(row[0] for row in rows)
        db.executemany("INSERT INTO ingest_marks (key) VALUES (?)", [(key,) for key in keys if key not in seen])
        db.execute("RELEASE marks")
        return seen

    def _prune_ingest(self, db: sqlite3.Connection, now: float) -> None:
        # A series not seen for `retention` belongs to an app that is gone; a mark that old cannot be
        # resent by a Collector (its retries give up within minutes).
        db.execute("DELETE FROM ingest_series WHERE seen < ?", (now - self.retention,))
        cutoff = int((now - self.dedup_window) * 1e9)
        db.execute("DELETE FROM ingest_marks WHERE key < ?", (max(cutoff, 0).to_bytes(8, "big"),))
        db.execute("DELETE FROM budget_spend WHERE keep_until < ?", (now,))

    def stream_count(self) -> int:
        with self._lock:
            if self._db is None:
                return 0
            series = self._db.execute("SELECT COUNT(*) FROM ingest_series").fetchone()[0]
            marks = self._db.execute("SELECT COUNT(*) FROM ingest_marks").fetchone()[0]
        return int(series) + int(marks)
