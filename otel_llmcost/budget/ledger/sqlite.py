"""`sqlite:///path`: a ledger in an SQLite file, kept across restarts and shared by local processes.

WAL journal (readers do not block the writer), one short ``BEGIN IMMEDIATE`` transaction per update so
that check-and-reserve is atomic across processes, a busy timeout so concurrent writers queue instead
of failing. `synchronous=NORMAL` by default: a committed update survives a crash of the process (not
necessarily of the machine); pass ``?synchronous=FULL`` for power-loss durability.
URIs follow SQLAlchemy: ``sqlite:///ledger.db`` is relative, ``sqlite:////var/lib/ledger.db`` absolute.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from .._money import from_units, to_units
from ..windows import Window
from .base import (
    DEFAULT_OP_TTL,
    DEFAULT_TTL,
    BudgetKey,
    Refusal,
    Reservation,
    Spend,
    check_amount,
    check_op,
    now_or,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    scope TEXT NOT NULL,
    bucket TEXT NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    keep_until REAL NOT NULL,
    PRIMARY KEY (budget, scope, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_spend_bucket ON budget_spend (budget, bucket);
CREATE INDEX IF NOT EXISTS budget_spend_keep ON budget_spend (keep_until);
CREATE TABLE IF NOT EXISTS budget_reservations (
    id TEXT PRIMARY KEY,
    budget TEXT NOT NULL,
    scope TEXT NOT NULL,
    bucket TEXT NOT NULL,
    amount INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_key ON budget_reservations (budget, scope, bucket);
CREATE TABLE IF NOT EXISTS budget_alerts (
    budget TEXT NOT NULL,
    scope TEXT NOT NULL,
    alert_window TEXT NOT NULL,
    level TEXT NOT NULL,
    fired_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (budget, scope, alert_window, level)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS budget_ops (
    budget TEXT NOT NULL,
    id TEXT NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (budget, id)
) WITHOUT ROWID;
"""
_PRUNE_EVERY = 10_000


def _marks(count: int) -> str:
    return ",".join("?" * count)


class SQLiteLedger:
    """Spend, reservations and fired alerts in one SQLite file (see the module doc)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", timeout: float = 30.0) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}: use NORMAL, FULL, EXTRA or OFF")
        self.path = str(path)
        self.uri = f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        self._writes = 0
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        deadline = time.monotonic() + timeout
        while True:  # WAL switch and schema take locks that a busy handler does not always wait for
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                with self._transaction() as db:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at its start (BEGIN IMMEDIATE), under this object's lock."""
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"ledger {self.uri} is closed")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _add(self, db: sqlite3.Connection, key: BudgetKey, window: Window, bucket: str, units: int) -> None:
        db.execute(
            "INSERT INTO budget_spend (budget, scope, bucket, spent, keep_until) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (budget, scope, bucket) DO UPDATE SET spent = spent + excluded.spent",
            (key.budget, key.scope, bucket, units, window.keep_until.timestamp()),
        )

    @staticmethod
    def _spent(db: sqlite3.Connection, key: BudgetKey, window: Window) -> int:
        row = db.execute(
            "SELECT COALESCE(SUM(spent), 0) FROM budget_spend WHERE budget = ? AND scope = ?"
            f" AND bucket IN ({_marks(len(window.buckets))})",
            (key.budget, key.scope, *window.buckets),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _reserved(db: sqlite3.Connection, key: BudgetKey, window: Window, now: float) -> int:
        row = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM budget_reservations WHERE budget = ? AND scope = ?"
            f" AND bucket IN ({_marks(len(window.buckets))}) AND expires_at > ?",
            (key.budget, key.scope, *window.buckets, now),
        ).fetchone()
        return int(row[0])

    def _maybe_prune(self, db: sqlite3.Connection, now: float) -> None:
        self._writes += 1
        if self._writes % _PRUNE_EVERY:
            return
        db.execute("DELETE FROM budget_spend WHERE keep_until < ?", (now,))
        db.execute("DELETE FROM budget_reservations WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM budget_alerts WHERE keep_until < ?", (now,))
        db.execute("DELETE FROM budget_ops WHERE keep_until < ?", (now,))

    @staticmethod
    def _first(db: sqlite3.Connection, budget: str, op_id: str | None, now: float, ttl: float) -> bool:
        """True (and the op remembered, in the caller's transaction) unless it was applied already."""
        if op_id is None:
            return True
        cursor = db.execute(
            "INSERT INTO budget_ops (budget, id, keep_until) VALUES (?, ?, ?)"
            " ON CONFLICT (budget, id) DO UPDATE SET keep_until = excluded.keep_until"
            " WHERE budget_ops.keep_until < ?",
            (budget, op_id, now + ttl, now),
        )
        return cursor.rowcount == 1

    # -- Ledger --
    def record(
        self,
        key: BudgetKey,
        window: Window,
        amount: Decimal,
        *,
        now: float | None = None,
        op_id: str | None = None,
        op_ttl: float = DEFAULT_OP_TTL,
    ) -> Decimal:
        units, at = to_units(check_amount(amount)), now_or(now)
        check_op(op_id, op_ttl)
        with self._transaction() as db:
            if self._first(db, key.budget, op_id, at, op_ttl):
                self._add(db, key, window, window.bucket, units)
                self._maybe_prune(db, at)
            return from_units(self._spent(db, key, window))

    def reserve(
        self,
        key: BudgetKey,
        window: Window,
        amount: Decimal,
        limit: Decimal,
        *,
        ttl: float = DEFAULT_TTL,
        now: float | None = None,
    ) -> Reservation | Refusal:
        units, cap, at = to_units(check_amount(amount)), to_units(limit), now_or(now)
        with self._transaction() as db:
            db.execute(
                "DELETE FROM budget_reservations WHERE budget = ? AND scope = ? AND expires_at <= ?",
                (key.budget, key.scope, at),
            )
            spent = self._spent(db, key, window)
            reserved = self._reserved(db, key, window, at)
            total = spent + reserved
            if total >= cap:
                return Refusal(key, window, from_units(spent), from_units(reserved), amount, limit)
            hold_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO budget_reservations (id, budget, scope, bucket, amount, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (hold_id, key.budget, key.scope, window.bucket, units, at + ttl),
            )
            # A zero row makes the scope visible to `scopes()` while its first call is in flight.
            self._add(db, key, window, window.bucket, 0)
            self._maybe_prune(db, at)
        return Reservation(hold_id, key, window, amount, at + ttl)

    def settle(
        self,
        reservation: Reservation,
        actual: Decimal,
        *,
        now: float | None = None,
        op_id: str | None = None,
        op_ttl: float = DEFAULT_OP_TTL,
    ) -> Decimal:
        units, at = to_units(check_amount(actual, "actual")), now_or(now)
        check_op(op_id, op_ttl)
        key, window = reservation.key, reservation.window
        with self._transaction() as db:
            if self._first(db, key.budget, op_id, at, op_ttl):
                db.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation.id,))
                self._add(db, key, window, window.bucket, units)
                self._maybe_prune(db, at)
            return from_units(self._spent(db, key, window))

    def spend(self, key: BudgetKey, window: Window, *, now: float | None = None) -> Spend:
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"ledger {self.uri} is closed")
            spent = self._spent(self._db, key, window)
            reserved = self._reserved(self._db, key, window, now_or(now))
        return Spend(from_units(spent), from_units(reserved))

    def scopes(self, budget: str, window: Window) -> list[str]:
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"ledger {self.uri} is closed")
            rows = self._db.execute(
                "SELECT DISTINCT scope FROM budget_spend WHERE budget = ?"
                f" AND bucket IN ({_marks(len(window.buckets))}) ORDER BY scope",
                (budget, *window.buckets),
            ).fetchall()
        return [row[0] for row in rows]

    def mark_alert(self, key: BudgetKey, alert_id: str, level: str, *, keep_until: datetime) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO budget_alerts (budget, scope, alert_window, level, fired_at, keep_until)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.budget, key.scope, alert_id, level, time.time(), keep_until.timestamp()),
            )
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
