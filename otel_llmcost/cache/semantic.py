"""The semantic cache: an answer served again for a close paraphrase, only inside its namespace.

    cache = SemanticCache(embedder, policy, "redis://cache:6379/0", ttl=3600)
    ns = Namespace.for_request(tenant=user, provider="openai", model=model, messages=messages, params=params)
    _, text, _ = split_conversation(messages)
    hit = cache.lookup(ns, text)        # Hit | None
    ... on a miss, call the provider, then cache.store(ns, text, response_bytes)

How a lookup goes: the query text is embedded (`Embedder`), the namespace's local vector index gives
the `k` nearest stored queries, and each candidate, nearest first, is read back from the storage and
put to the `HitPolicy` (threshold plus the look-alike trap guards); the first one it accepts is the
hit. The storage read is keyed by namespace and the stored payload names its namespace, which is
checked again, so an entry is never served outside the namespace that stored it, whatever the index
returns.

One local index per namespace (`VectorIndex`: exact search while small, HNSW beyond), built from the
storage the first time a namespace is used in this process and topped up from it every
`sync_interval` seconds (other replicas' entries, with Redis). At most `max_local_namespaces` indexes
are kept; the least recently used is dropped and rebuilt from the storage when asked again. Each
namespace's index has a lock of its own, so a lookup never waits for another namespace's sync or
rebuild.
Entries the storage expired or evicted are dropped from the index when a lookup meets them.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with the embeddings extra
    np = None  # type: ignore[assignment]

from .errors import CacheStorageError
from .index import VectorIndex
from .keys import Namespace, stable_hash
from .storage import CacheStorage, open_storage
from .storage.base import Clock

__all__ = [
    "Decision",
    "Embedder",
    "Hit",
    "HitPolicy",
    "LookupContext",
    "SemanticCache",
    "SemanticStats",
]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of `dim` dimensions (n × dim)."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class Decision(Protocol):
    """A policy's verdict on one candidate: `hit`, its `tier` ("high" | "medium" | None) and why."""

    @property
    def hit(self) -> bool: ...

    @property
    def tier(self) -> str | None: ...

    @property
    def reason(self) -> str: ...


@runtime_checkable
class HitPolicy(Protocol):
    """Decides whether a stored query's answer may serve a new query, given their similarity."""

    def decide(self, query: str, candidate: str, similarity: float) -> Decision: ...


@dataclass(frozen=True)
class Hit:
    """A semantic-cache hit: the stored answer and why it was served."""

    payload: bytes
    similarity: float
    query_text: str
    """The stored query whose answer this is (not the query asked)."""
    tier: str
    entry_id: str
    reason: str = ""


@dataclass(frozen=True)
class LookupContext:
    """Per-request cache control: `bypass` (neither read nor write) or `refresh` (read nothing, store anew)."""

    bypass: bool = False
    refresh: bool = False


@dataclass(frozen=True)
class SemanticStats:
    """Counts since the cache was made."""

    hits: int = 0
    hits_high: int = 0
    hits_medium: int = 0
    misses: int = 0
    rejected: int = 0
    """Candidates found but refused by the policy (counted once per lookup that had any)."""
    bypasses: int = 0
    errors: int = 0
    stores: int = 0


_HEADER = struct.Struct(">I")


def _encode(namespace_id: str, query_text: str, payload: bytes) -> bytes:
    meta = json.dumps({"ns": namespace_id, "q": query_text}, ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(meta)) + meta + payload


def _decode(blob: bytes) -> tuple[str, str, bytes]:
    (size,) = _HEADER.unpack_from(blob)
    meta = json.loads(blob[_HEADER.size : _HEADER.size + size].decode("utf-8"))
    return str(meta["ns"]), str(meta["q"]), blob[_HEADER.size + size :]


class _Local:
    """One namespace's local index and how far it has read the storage."""

    __slots__ = ("index", "cursor", "epoch", "synced_at", "lock", "loaded")

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.epoch = ""
        self.loaded = False
        self.cursor = 0
        self.synced_at = float("-inf")


class SemanticCache:
    """Answers by meaning within a namespace (see the module doc).

    `k`: candidates put to the policy per lookup. `ttl` (seconds, None: no expiry) and `max_entries`
    go to the storage. `index_factory(dim)` makes a namespace's index (default `VectorIndex`).
    `index_dir`: where `save_indexes` (and `close`) write the namespaces' HNSW graphs, and where a
    namespace's index is read from when first used, then topped up from the storage, instead of
    being rebuilt from every stored vector (a 100k graph takes minutes of CPU to build, a second to
    read). A saved index is used only while the storage keeps the epoch it was saved in.
    """

    def __init__(
        self,
        embedder: Embedder,
        policy: HitPolicy,
        storage_uri: str = "memory://",
        ttl: float | None = 3600,
        max_entries: int | None = 10_000,
        *,
        storage: CacheStorage | None = None,
        k: int = 4,
        sync_interval: float = 1.0,
        max_local_namespaces: int = 10_000,
        index_factory: Callable[[int], VectorIndex] | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if np is None:  # pragma: no cover - depends on the environment
            raise ImportError("the semantic cache needs numpy: pip install 'otel-llmcost[embeddings]'")
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one candidate")
        self.embedder = embedder
        self.policy = policy
        self.dim = int(embedder.dim)
        self.ttl = ttl
        self.k = k
        self.sync_interval = sync_interval
        self.max_local_namespaces = max_local_namespaces
        self._clock = clock if clock is not None else time.time
        self.storage = storage if storage is not None else open_storage(
            storage_uri, max_entries=max_entries, ttl=ttl, clock=clock
        )
        self.index_dir = os.fspath(index_dir) if index_dir is not None else None
        self._new_index = index_factory if index_factory is not None else (lambda dim: VectorIndex(dim))
        self._locals: OrderedDict[str, _Local] = OrderedDict()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(SemanticStats.__dataclass_fields__, 0)

    # -- helpers --
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _embed(self, text: str) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed([text]), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (1, self.dim):
            raise ValueError(f"the embedder returned shape {vectors.shape}, expected (1, {self.dim})")
        return np.ascontiguousarray(vectors[0])

    def _local(self, ns_id: str) -> _Local:
        """The namespace's local index (made when missing), most recently used."""
        with self._lock:
            local = self._locals.get(ns_id)
            if local is None:
                local = _Local(self._new_index(self.dim))
                self._locals[ns_id] = local
                while len(self._locals) > self.max_local_namespaces:
                    self._locals.popitem(last=False)
            else:
                self._locals.move_to_end(ns_id)
            return local

    def _sync(self, ns_id: str, local: _Local) -> None:
        """Add the namespace's entries stored since the last sync, when due. Call with local.lock held."""
        if not local.loaded:
            local.loaded = True
            self._load(ns_id, local)
        now = self._clock()
        if now - local.synced_at >= self.sync_interval:
            batch = self.storage.fetch_vectors(ns_id, after=local.cursor)
            if local.epoch and batch.epoch != local.epoch:
                # The storage's contents were recreated (e.g. Redis restarted empty): our cursor means
                # nothing there and our entries are gone. Start the namespace's index again.
                local.index = self._new_index(self.dim)
                batch = self.storage.fetch_vectors(ns_id, after=0)
            local.epoch = batch.epoch
            # Ids already held are this process's own stores (or a replica storing the same query):
            # an id is the hash of namespace and query text, so its vector is the same.
            fresh = [(e, v) for e, v in batch.entries if e not in local.index]
            if fresh:
                ids = [e for e, _ in fresh]
                vecs = np.frombuffer(b"".join(v for _, v in fresh), dtype=np.float32)
                local.index.add(ids, vecs.reshape(len(ids), self.dim))
            local.cursor = batch.cursor
            local.synced_at = now

    # -- API --
    def lookup(self, namespace: Namespace, query_text: str, context: LookupContext | None = None,
               on_reject: Callable[[Decision], None] | None = None) -> Hit | None:
        """The best stored answer the policy accepts for `query_text` in `namespace`, or None.

        `on_reject` is given each candidate decision the policy refused, so a caller can count the false
        hits its guards avoided. Raises CacheStorageError when the storage fails (treat as a miss) and
        whatever the embedder or the policy raise.
        """
        if context is not None and (context.bypass or context.refresh):
            self._count("bypasses")
            return None
        ns_id = namespace.id
        vector = self._embed(query_text)
        try:
            local = self._local(ns_id)
            with local.lock:  # one lock per namespace: lookups in other namespaces go on meanwhile
                self._sync(ns_id, local)
                candidates = local.index.search(vector, self.k)
            rejected = False
            for entry_id, similarity in candidates:
                entry = self.storage.entry(ns_id, entry_id)
                if entry is None:  # expired or evicted from the storage
                    with local.lock:
                        local.index.remove(entry_id)
                    continue
                stored_ns, stored_query, payload = _decode(entry.payload)
                if stored_ns != ns_id:  # never serve across namespaces, whatever the index said
                    continue
                decision = self.policy.decide(query_text, stored_query, float(similarity))
                if not decision.hit:
                    rejected = True
                    if on_reject is not None:
                        on_reject(decision)
                    continue
                tier = decision.tier or "high"
                with self._lock:
                    self._counts["hits"] += 1
                    self._counts["hits_medium" if tier == "medium" else "hits_high"] += 1
                return Hit(payload, float(similarity), stored_query, tier, entry_id, decision.reason)
        except CacheStorageError:
            self._count("errors")
            raise
        with self._lock:
            self._counts["misses"] += 1
            if rejected:
                self._counts["rejected"] += 1
        return None

    def store(
        self,
        namespace: Namespace,
        query_text: str,
        payload: bytes,
        ttl: float | None = None,
        context: LookupContext | None = None,
    ) -> str | None:
        """Keep `payload` as the answer to `query_text` in `namespace`; the entry id (None on bypass).

        Storing the same query text again in the namespace replaces its entry.
        """
        if context is not None and context.bypass:
            return None
        ns_id = namespace.id
        entry_id = stable_hash({"ns": ns_id, "q": query_text})[:40]
        vector = self._embed(query_text)
        blob = _encode(ns_id, query_text, bytes(payload))
        try:
            self.storage.add(ns_id, entry_id, vector.tobytes(), blob, ttl if ttl is not None else self.ttl)
            local = self._local(ns_id)
            with local.lock:
                self._sync(ns_id, local)
                local.index.add([entry_id], vector[None, :])
        except CacheStorageError:
            self._count("errors")
            raise
        self._count("stores")
        return entry_id

    def forget(self, namespace: Namespace, entry_id: str) -> bool:
        """Remove one entry (e.g. an answer found wrong); whether there was one."""
        ns_id = namespace.id
        with self._lock:
            local = self._locals.get(ns_id)
        if local is not None:
            with local.lock:
                local.index.remove(entry_id)
        return self.storage.remove(ns_id, entry_id)

    @property
    def stats(self) -> SemanticStats:
        """Hits (by tier), misses, policy rejections, bypasses, errors and stores so far."""
        with self._lock:
            return SemanticStats(**self._counts)

    def local_index_sizes(self) -> dict[str, int]:
        """Entries in each namespace's local index (by namespace id): for tests and diagnostics."""
        with self._lock:
            locals_ = list(self._locals.items())
        return {ns: len(local.index) for ns, local in locals_}

    def clear(self) -> None:
        """Remove every entry from the storage and drop the local indexes."""
        with self._lock:
            self._locals.clear()
        self.storage.clear()

    def _paths(self, ns_id: str) -> tuple[str, str]:
        assert self.index_dir is not None
        base = os.path.join(self.index_dir, ns_id)
        return base + ".vix", base + ".json"

    def _load(self, ns_id: str, local: _Local) -> None:
        """Start from the namespace's saved index, if there is a readable one. Call with local.lock held."""
        if self.index_dir is None:
            return
        index_path, meta_path = self._paths(ns_id)
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            index = VectorIndex.load(index_path)
        except (OSError, ValueError, KeyError):
            return  # none saved, or unreadable: rebuilt from the storage
        if index.dim != self.dim:
            return
        local.index = index
        local.cursor = int(meta["cursor"])
        local.epoch = str(meta["epoch"])

    def save_indexes(self) -> int:
        """Write each local HNSW index (not the small exact ones) to `index_dir`; how many were written."""
        if self.index_dir is None:
            return 0
        os.makedirs(self.index_dir, exist_ok=True)
        with self._lock:
            locals_ = list(self._locals.items())
        written = 0
        for ns_id, local in locals_:
            with local.lock:
                if not local.index.is_graph or not local.epoch:
                    continue
                index_path, meta_path = self._paths(ns_id)
                local.index.save(index_path)
                tmp = meta_path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({"cursor": local.cursor, "epoch": local.epoch, "dim": self.dim}, f)
                os.replace(tmp, meta_path)
                written += 1
        return written

    def close(self) -> None:
        """Save the HNSW indexes (with `index_dir`) and close the storage."""
        self.save_indexes()
        self.storage.close()

    def __repr__(self) -> str:
        return f"SemanticCache(storage={self.storage.uri!r}, dim={self.dim}, k={self.k})"

