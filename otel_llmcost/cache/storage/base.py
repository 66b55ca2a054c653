"""What every cache storage offers: a byte store with TTL and LRU, plus semantic entries per namespace.

Two kinds of entry share one size bound (`max_entries`) and one LRU order:

- plain entries (the exact cache): ``get`` / ``set`` / ``delete`` of bytes by string key;
- semantic entries: ``add(namespace, entry_id, vector, payload)``; ``entry`` reads one back (and
  counts as an access); ``fetch_vectors(namespace, after=cursor, limit=n)`` returns the vectors added
  since a cursor, oldest first, at most `n` of them (a page) with the cursor to continue from, so a
  process rebuilds its local index page by page and follows other replicas' additions.

Expiry is checked against the storage's clock (``time.time`` unless a test passes another), so TTLs
behave the same on every backend; Redis also expires keys on its own so nothing lingers.
Every failure of the backend raises `CacheStorageError`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ..errors import CacheConfigError

__all__ = [
    "Clock",
    "SemanticEntry",
    "CacheStorage",
    "VectorBatch",
    "check_name",
    "check_page",
    "check_limits",
    "redact_uri",
]

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def check_name(kind: str, value: str) -> str:
    """A namespace or entry id as storage keys take it: 1-128 of ``A-Z a-z 0-9 _ . -``.

    No separator can appear in one, so no (namespace, id) pair can spell another's key."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise ValueError(f"{kind} {value!r} is not a valid cache name: use 1-128 of A-Z a-z 0-9 _ . -")
    return value


def check_page(limit: int | None) -> None:
    """Refuses a page size that would return nothing (and so never move the cursor)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}: fetch at least one entry per page, or None for all")


def check_limits(max_entries: int | None, default_ttl: float | None) -> None:
    if max_entries is not None and max_entries < 1:
        raise CacheConfigError(f"max_entries={max_entries!r}: use a positive number or None (no bound)")
    if default_ttl is not None and default_ttl <= 0:
        raise CacheConfigError(f"ttl={default_ttl!r}: use a positive number of seconds or None (no expiry)")


@dataclass(frozen=True)
class SemanticEntry:
    """One semantic entry as read back: its vector (float32 bytes) and the caller's payload."""

    entry_id: str
    vector: bytes
    payload: bytes


@dataclass(frozen=True)
class VectorBatch:
    """Vectors of one namespace added after a cursor, and the cursor to pass next time.

    `epoch` names the storage's contents: it changes when they are recreated (a Redis server restarted
    empty, a SQLite file replaced), and a cursor of another epoch means nothing: start again from 0.
    `more`: the page stopped at its `limit`, so entries past `cursor` may remain (fetch again from
    `cursor`); False when the storage was read to its end.
    """

    entries: list[tuple[str, bytes]]
    cursor: int
    epoch: str = ""
    more: bool = False


@runtime_checkable
class CacheStorage(Protocol):
    """The primitives the caches call (see the module doc). Implementations are thread-safe."""

    uri: str
    max_entries: int | None
    default_ttl: float | None

    def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired; a hit makes the key most recently used."""

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store (or replace) a value; `ttl` seconds (None: the storage's default_ttl)."""

    def delete(self, key: str) -> bool:
        """Remove a value; whether there was one."""

    def add(
        self, namespace: str, entry_id: str, vector: bytes, payload: bytes, ttl: float | None = None
    ) -> None:
        """Store a semantic entry (replacing one with the same id in the namespace)."""

    def entry(self, namespace: str, entry_id: str) -> SemanticEntry | None:
        """A semantic entry of the namespace, or None when absent or expired; counts as an access."""

    def remove(self, namespace: str, entry_id: str) -> bool:
        """Remove a semantic entry; whether there was one."""

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> VectorBatch:
        """Live entries of the namespace added after cursor `after` (0: all), oldest first, and the epoch.

        At most `limit` entries (None: all); the batch's cursor then continues after the last entry
        read (expired ones skipped count as read, so a page of expired entries still moves on) and
        `more` says whether to ask again. A cursor is opaque: pass back only one this storage gave."""

    def __len__(self) -> int:
        """Entries stored, both kinds (may count expired ones not yet purged)."""

    def clear(self) -> None:
        """Remove every entry of this storage (its prefix / table), both kinds."""

    def close(self) -> None:
        """Release connections and files; further calls are errors."""


def redact_uri(uri: str) -> str:
    """`uri` without its password: storage URIs end up in log lines and error messages."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:  # not a URI we can take apart: say nothing of it rather than leak it
        return "<cache storage>"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def now_clock(clock: Clock | None) -> Clock:
    return clock if clock is not None else time.time
