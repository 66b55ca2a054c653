"""The exact cache: a response served again only for the very same request (see `keys.exact_key`).

    cache = ExactCache("sqlite:///llm-cache.db", ttl=3600)
    key = exact_key(tenant=user, provider="openai", model=model, messages=messages, params=params)
    if cacheable(params, cache_all=False):
        body = cache.get(key)                # None: call the provider, then cache.put(key, body)

Values are bytes: the caller serialises the SDK's response. Per request, ``bypass=True`` neither
reads nor writes, ``refresh=True`` on `get` returns None so the caller calls the provider and
overwrites the entry with `put`. Storage failures raise `CacheStorageError`: treat them as a miss.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .errors import CacheStorageError
from .storage import CacheStorage, open_storage
from .storage.base import Clock

__all__ = ["CacheStats", "ExactCache"]


@dataclass(frozen=True)
class CacheStats:
    """Counts since the cache was made (or `reset_stats`)."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    refreshes: int = 0
    errors: int = 0
    stores: int = 0

    @property
    def lookups(self) -> int:
        """Lookups that reached the storage (hits + misses)."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before any lookup."""
        return self.hits / self.lookups if self.lookups else 0.0


class _Counters:
    __slots__ = ("hits", "misses", "bypasses", "refreshes", "errors", "stores", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits = self.misses = self.bypasses = self.refreshes = self.errors = self.stores = 0

    def snapshot(self) -> CacheStats:
        with self.lock:
            return CacheStats(self.hits, self.misses, self.bypasses, self.refreshes, self.errors, self.stores)


class ExactCache:
    """Bytes by exact request key, in a storage chosen by URI (see the module doc).

    `ttl` is the default lifetime in seconds (None: entries live until evicted), `max_entries` the
    size bound of the storage (least recently used go first). Pass `storage` to share an opened one.
    """

    def __init__(
        self,
        storage_uri: str = "memory://",
        ttl: float | None = 3600,
        max_entries: int | None = 10_000,
        *,
        storage: CacheStorage | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.ttl = ttl
        self.storage = storage if storage is not None else open_storage(
            storage_uri, max_entries=max_entries, ttl=ttl, clock=clock
        )
        self._counts = _Counters()

    def get(self, key: str, *, bypass: bool = False, refresh: bool = False) -> bytes | None:
        """The cached value for `key`, or None (miss, expired, `bypass` or `refresh`).

        `bypass`: the storage is not read (and the caller should not `put` either); `refresh`: the
        storage is not read, the caller fetches anew and `put`s over the old entry.
        """
        c = self._counts
        if bypass or refresh:
            with c.lock:
                if bypass:
                    c.bypasses += 1
                else:
                    c.refreshes += 1
            return None
        try:
            value = self.storage.get(key)
        except CacheStorageError:
            with c.lock:
                c.errors += 1
            raise
        with c.lock:
            if value is None:
                c.misses += 1
            else:
                c.hits += 1
        return value

    def put(self, key: str, value: bytes, ttl: float | None = None, *, bypass: bool = False) -> None:
        """Store `value` for `key` (`ttl` seconds; None: the cache's ttl). `bypass=True` stores nothing."""
        if bypass:
            return
        try:
            self.storage.set(key, value, ttl if ttl is not None else self.ttl)
        except CacheStorageError:
            with self._counts.lock:
                self._counts.errors += 1
            raise
        with self._counts.lock:
            self._counts.stores += 1

    def delete(self, key: str) -> bool:
        """Forget one entry; whether there was one."""
        return self.storage.delete(key)

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, bypasses, refreshes, errors and stores so far."""
        return self._counts.snapshot()

    def reset_stats(self) -> None:
        """Start the counts again from zero."""
        self._counts = _Counters()

    def clear(self) -> None:
        """Remove every entry of the storage."""
        self.storage.clear()

    def close(self) -> None:
        """Close the storage (connections, files)."""
        self.storage.close()

    def __len__(self) -> int:
        return len(self.storage)
