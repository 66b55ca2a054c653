"""`memory://`: entries in this process, an LRU of bounded size with TTL, guarded by one lock."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

from .base import Clock, SemanticEntry, VectorBatch, check_limits, check_name, now_clock

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
        # namespace -> {entry id: seq}, seq increasing with each add
        self._spaces: dict[str, dict[str, int]] = {}
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
                space.pop(key[2], None)
                if not space:
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
            self._spaces.setdefault(namespace, {})[entry_id] = self._seq

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

    def fetch_vectors(self, namespace: str, after: int = 0) -> VectorBatch:
        with self._lock:
            now = self._clock()
            space = self._spaces.get(namespace, {})
            found: list[tuple[int, str, bytes]] = []
            expired: list[str] = []
            # a namespace's dict is in seq order (a re-add moves its id to the end): read back from the end
            for entry_id, seq in reversed(space.items()):
                if seq <= after:
                    break
                item = self._items[("v", namespace, entry_id)]
                if item.expires_at <= now:
                    expired.append(entry_id)
                elif item.vector is not None:
                    found.append((seq, entry_id, item.vector))
            for entry_id in expired:
                self._drop(("v", namespace, entry_id))
            found.sort()
            cursor = max([after, *(s for s, _, _ in found)])
            return VectorBatch([(e, v) for _, e, v in found], cursor, self._epoch)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._spaces.clear()

    def close(self) -> None:
        self.clear()
