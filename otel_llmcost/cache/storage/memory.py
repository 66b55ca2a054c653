"""`memory://`: entries in this process, an LRU of bounded size with TTL, guarded by one lock."""

from __future__ import annotations

import threading
import uuid
from bisect import bisect_right
from collections import OrderedDict

from .base import Clock, SemanticEntry, VectorBatch, check_limits, check_name, check_page, now_clock

# One LRU over both kinds of entry: plain keys are ("k", key), semantic ones ("v", namespace, id).
_Key = tuple[str, ...]


class _Item:
    __slots__ = ("value", "expires_at", "vector", "seq")

    def __init__(self, value: bytes, expires_at: float, vector: bytes | None = None, seq: int = 0) -> None:
        self.value = value
        self.expires_at = expires_at
        self.vector = vector
        self.seq = seq


_INF = float("inf")


class _Space:
    """One namespace's entry ids by sequence number, searchable by cursor.

    `live` maps each id to its current seq; `seqs` / `ids` list every add in seq order (append-only, so
    sorted), which lets a page start by bisection instead of walking the namespace from an end. Removed
    or re-added ids leave stale rows there (their seq is no longer `live[id]`); they are skipped, and
    the lists are rebuilt once stale rows outnumber live ones.
    """

    __slots__ = ("live", "seqs", "ids")

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.seqs: list[int] = []
        self.ids: list[str] = []

    def add(self, entry_id: str, seq: int) -> None:
        self.live[entry_id] = seq
        self.seqs.append(seq)
        self.ids.append(entry_id)
        self._compact()

    def discard(self, entry_id: str) -> None:
        self.live.pop(entry_id, None)
        self._compact()

    def _compact(self) -> None:
        if len(self.seqs) > 2 * len(self.live) + 64:
            rows = sorted((seq, entry_id) for entry_id, seq in self.live.items())
            self.seqs = [seq for seq, _ in rows]
            self.ids = [entry_id for _, entry_id in rows]

    def after(self, cursor: int) -> int:
        """The position of the first row past `cursor`."""
        return bisect_right(self.seqs, cursor)


class MemoryStorage:
    """In-process storage (see `otel_llmcost.cache.storage.base` for the operations)."""

    def __init__(
        self,
        *,
        max_entries: int | None = 10_000,
        default_ttl: float | None = None,
        clock: Clock | None = None,
        uri: str = "memory://",
    ) -> None:
        check_limits(max_entries, default_ttl)
        self.uri = uri
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = now_clock(clock)
        self._lock = threading.Lock()
        self._items: OrderedDict[_Key, _Item] = OrderedDict()
        # namespace -> its ids by seq (seq increasing with each add: the cursor of fetch_vectors)
        self._spaces: dict[str, _Space] = {}
        self._seq = 0
        self._epoch = uuid.uuid4().hex

    def _expiry(self, ttl: float | None) -> float:
        ttl = self.default_ttl if ttl is None else ttl
        return _INF if ttl is None else self._clock() + ttl

    def _drop(self, key: _Key) -> None:
        self._items.pop(key, None)
        if key[0] == "v":
            space = self._spaces.get(key[1])
            if space is not None:
                space.discard(key[2])
                if not space.live:
                    del self._spaces[key[1]]

    def _insert(self, key: _Key, item: _Item) -> None:
        if key in self._items:
            self._drop(key)
        self._items[key] = item
        if self.max_entries is not None:
            while len(self._items) > self.max_entries:
                oldest = next(iter(self._items))
                self._drop(oldest)

    def _live(self, key: _Key) -> _Item | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item

    # -- plain entries --
    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(("k", key))
            return None if item is None else item.value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        value = bytes(value)
        with self._lock:
            self._insert(("k", key), _Item(value, self._expiry(ttl)))

    def delete(self, key: str) -> bool:
        with self._lock:
            present = ("k", key) in self._items
            self._drop(("k", key))
            return present

    # -- semantic entries --
    def add(
        self, namespace: str, entry_id: str, vector: bytes, payload: bytes, ttl: float | None = None
    ) -> None:
        check_name("namespace", namespace)
        check_name("entry id", entry_id)
        with self._lock:
            self._seq += 1
            key = ("v", namespace, entry_id)
            self._insert(key, _Item(bytes(payload), self._expiry(ttl), bytes(vector), self._seq))
            space = self._spaces.get(namespace)
            if space is None:
                space = self._spaces[namespace] = _Space()
            space.add(entry_id, self._seq)

    def entry(self, namespace: str, entry_id: str) -> SemanticEntry | None:
        with self._lock:
            item = self._live(("v", namespace, entry_id))
            if item is None or item.vector is None:
                return None
            return SemanticEntry(entry_id, item.vector, item.value)

    def remove(self, namespace: str, entry_id: str) -> bool:
        key = ("v", namespace, entry_id)
        with self._lock:
            present = key in self._items
            self._drop(key)
            return present

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> VectorBatch:
        check_page(limit)
        with self._lock:
            now = self._clock()
            space = self._spaces.get(namespace)
            if space is None:
                return VectorBatch([], after, self._epoch)
            found: list[tuple[str, bytes]] = []
            expired: list[str] = []
            cursor = after
            pos = space.after(after)
            end = len(space.seqs)
            while pos < end and (limit is None or len(found) < limit):
                seq, entry_id = space.seqs[pos], space.ids[pos]
                pos += 1
                cursor = seq
                if space.live.get(entry_id) != seq:  # removed, or added again later (a later row)
                    continue
                item = self._items[("v", namespace, entry_id)]
                if item.expires_at <= now:
                    expired.append(entry_id)
                elif item.vector is not None:
                    found.append((entry_id, item.vector))
            for entry_id in expired:  # after the walk: dropping may compact the lists walked
                self._drop(("v", namespace, entry_id))
            return VectorBatch(found, cursor, self._epoch, more=pos < end)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._spaces.clear()

    def close(self) -> None:
        self.clear()
