"""`sqlite:///path.db`: entries in one SQLite file that outlives the process (WAL, LRU by last access).

One table (``llmcost_cache`` unless ``?table=`` names another) holds both kinds of entry; its
``seq`` column (AUTOINCREMENT, renewed on every write) is the cursor of `fetch_vectors` (a page is
``ORDER BY seq LIMIT n`` on the (namespace, seq) index). Last access
is written at most every `touch_interval` seconds per entry, so a hot hit stays a read. The size bound
is kept by this process's count of rows, re-read from the file every 256 writes and whenever it says
the bound is passed, so processes sharing the file keep it too (give or take their last 256 writes); eviction drops expired rows first, then least recently
accessed ones. WAL lets readers in other processes go on while one writes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import CacheConfigError, CacheStorageError
from .base import Clock, SemanticEntry, VectorBatch, check_limits, check_name, check_page, now_clock

_NO_EXPIRY = 1e308
_RECOUNT_EVERY = 256
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
T = TypeVar("T")


class SQLiteStorage:
    """Storage in a SQLite file (see `otel_llmcost.cache.storage.base` for the operations)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = 10_000,
        default_ttl: float | None = None,
        clock: Clock | None = None,
        table: str = "llmcost_cache",
        touch_interval: float = 1.0,
        timeout: float = 30.0,
        synchronous: str = "NORMAL",
        uri: str | None = None,
    ) -> None:
        check_limits(max_entries, default_ttl)
        if _TABLE.fullmatch(table) is None:
            raise CacheConfigError(f"table={table!r}: use a plain SQL name (letters, digits, _)")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise CacheConfigError(f"synchronous={synchronous!r}: use OFF, NORMAL, FULL or EXTRA")
        self.path = os.fspath(path)
        self.uri = uri or f"sqlite:///{self.path}"
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = now_clock(clock)
        self._t = table
        self._touch = touch_interval
        self._lock = threading.Lock()
        try:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            t = self._t
            self._db.executescript(
                f"""
                CREATE TABLE IF NOT EXISTS {t} (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT NOT NULL UNIQUE,
                    namespace TEXT,
                    entry_id TEXT,
                    vector BLOB,
                    value BLOB NOT NULL,
                    expires_at REAL NOT NULL,
                    accessed_at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS {t}_lru ON {t}(accessed_at);
                CREATE INDEX IF NOT EXISTS {t}_exp ON {t}(expires_at);
                CREATE INDEX IF NOT EXISTS {t}_ns ON {t}(namespace, seq) WHERE namespace IS NOT NULL;
                CREATE TABLE IF NOT EXISTS {t}_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                """
            )
            self._db.execute(f"INSERT OR IGNORE INTO {t}_meta VALUES ('epoch', ?)", (uuid.uuid4().hex,))
            self._epoch = str(self._db.execute(f"SELECT value FROM {t}_meta WHERE name='epoch'").fetchone()[0])
            self._count = int(self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            self._writes = 0
        except (sqlite3.Error, OSError) as exc:
            raise CacheStorageError(self.uri, "open", exc) from exc

    # -- plumbing --
    def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise CacheStorageError(self.uri, operation, exc) from exc

    @contextmanager
    def _write(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _expiry(self, now: float, ttl: float | None) -> float:
        ttl = self.default_ttl if ttl is None else ttl
        return _NO_EXPIRY if ttl is None else now + ttl

    def _read(self, db: sqlite3.Connection, key: str) -> tuple[Any, ...] | None:
        """(value, vector) of a live row, touching it; None (and the row deleted) when expired."""
        t = self._t
        row = db.execute(f"SELECT value, vector, expires_at, accessed_at FROM {t} WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        now = self._clock()
        if row[2] <= now:
            if db.execute(f"DELETE FROM {t} WHERE key=? AND expires_at<=?", (key, now)).rowcount > 0:
                self._count = max(0, self._count - 1)
            return None
        if now - row[3] >= self._touch:
            db.execute(f"UPDATE {t} SET accessed_at=? WHERE key=?", (now, key))
        return row[0], row[1]

    def _put(
        self,
        db: sqlite3.Connection,
        key: str,
        namespace: str | None,
        entry_id: str | None,
        vector: bytes | None,
        value: bytes,
        ttl: float | None,
    ) -> None:
        t = self._t
        now = self._clock()
        with self._write(db):
            existed = db.execute(f"SELECT 1 FROM {t} WHERE key=?", (key,)).fetchone() is not None
            db.execute(
                f"INSERT OR REPLACE INTO {t} (key, namespace, entry_id, vector, value, expires_at, accessed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, namespace, entry_id, vector, value, self._expiry(now, ttl), now),
            )
            if not existed:
                self._count += 1
            self._writes += 1
            if self._writes % _RECOUNT_EVERY == 0:  # other processes' rows count too
                self._count = int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            if self.max_entries is not None and self._count > self.max_entries:
                self._evict(db, now, self.max_entries)

    def _evict(self, db: sqlite3.Connection, now: float, bound: int) -> None:
        t = self._t
        db.execute(f"DELETE FROM {t} WHERE expires_at<=?", (now,))
        count = int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
        if count > bound:
            db.execute(
                f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} ORDER BY accessed_at, seq LIMIT ?)",
                (count - bound,),
            )
            count = bound
        self._count = count

    def _delete(self, db: sqlite3.Connection, key: str) -> bool:
        gone = db.execute(f"DELETE FROM {self._t} WHERE key=?", (key,)).rowcount > 0
        if gone:
            self._count = max(0, self._count - 1)
        return gone

    # -- plain entries --
    def get(self, key: str) -> bytes | None:
        def op(db: sqlite3.Connection) -> bytes | None:
            row = self._read(db, "k:" + key)
            return None if row is None else bytes(row[0])

        return self._run("get", op)

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        data = bytes(value)
        self._run("set", lambda db: self._put(db, "k:" + key, None, None, None, data, ttl))

    def delete(self, key: str) -> bool:
        return self._run("delete", lambda db: self._delete(db, "k:" + key))

    # -- semantic entries --
    def add(
        self, namespace: str, entry_id: str, vector: bytes, payload: bytes, ttl: float | None = None
    ) -> None:
        check_name("namespace", namespace)
        check_name("entry id", entry_id)
        vec, data = bytes(vector), bytes(payload)
        key = f"v:{namespace}:{entry_id}"
        self._run("add", lambda db: self._put(db, key, namespace, entry_id, vec, data, ttl))

    def entry(self, namespace: str, entry_id: str) -> SemanticEntry | None:
        def op(db: sqlite3.Connection) -> SemanticEntry | None:
            row = self._read(db, f"v:{namespace}:{entry_id}")
            if row is None or row[1] is None:
                return None
            return SemanticEntry(entry_id, bytes(row[1]), bytes(row[0]))

        return self._run("entry", op)

    def remove(self, namespace: str, entry_id: str) -> bool:
        return self._run("remove", lambda db: self._delete(db, f"v:{namespace}:{entry_id}"))

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> VectorBatch:
        check_page(limit)

        def op(db: sqlite3.Connection) -> VectorBatch:
            # Expired rows are filtered in the query, so a page holds `limit` live rows when there are
            # that many, and the cursor (the last row's seq) never points back at a skipped one.
            rows = db.execute(
                f"SELECT seq, entry_id, vector FROM {self._t} "
                "WHERE namespace=? AND seq>? AND expires_at>? ORDER BY seq LIMIT ?",
                (namespace, after, self._clock(), -1 if limit is None else limit),
            ).fetchall()
            cursor = rows[-1][0] if rows else after
            more = limit is not None and len(rows) == limit
            return VectorBatch([(r[1], bytes(r[2])) for r in rows], int(cursor), self._epoch, more)

        return self._run("fetch_vectors", op)

    def __len__(self) -> int:
        return self._run("len", lambda db: int(db.execute(f"SELECT count(*) FROM {self._t}").fetchone()[0]))

    def clear(self) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(f"DELETE FROM {self._t}")
            self._count = 0

        self._run("clear", op)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
                raise CacheStorageError(self.uri, "close", exc) from exc
