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
A (re)build never blocks the call that needs it: a sync indexes at most `inline_sync` entries inline
(a few ms), and a background thread (one per cache, started on demand, gone when idle) catches up the
rest page by page, holding the namespace's lock ~2 ms per chunk, so a 100k namespace on a fresh
replica is searchable at once (partially: `warming()`, `stats.warming_lookups`) instead of after
minutes of hnswlib inserts. With `index_dir`, the saved graph is read instead and only what was stored
since is caught up. The same thread builds the HNSW graph when this process's own stores grow a
namespace past exact search: the store leaves the index exact (and searchable) instead of spending
seconds on the graph inside the app's call.
Entries the storage expired or evicted are dropped from the index when a lookup meets them.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import weakref
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
    warmups: int = 0
    """Catch-ups handed to the background: a namespace had more to index than a sync does inline."""
    warming_lookups: int = 0
    """Lookups (hits and misses) served while their namespace's index was still catching up with the
    storage: a miss among them may be an entry not indexed yet. Many of them mean replicas start cold;
    `index_dir` shortens the catch-up."""


_HEADER = struct.Struct(">I")


def _encode(namespace_id: str, query_text: str, payload: bytes) -> bytes:
    meta = json.dumps({"ns": namespace_id, "q": query_text}, ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(meta)) + meta + payload


def _decode(blob: bytes) -> tuple[str, str, bytes]:
    (size,) = _HEADER.unpack_from(blob)
    meta = json.loads(blob[_HEADER.size : _HEADER.size + size].decode("utf-8"))
    return str(meta["ns"]), str(meta["q"]), blob[_HEADER.size + size :]


_log = logging.getLogger(__name__)

_PAGE = 1000
"""Entries the background catch-up fetches per storage call."""
_HOLD = 0.002
"""Seconds the catch-up holds a namespace's lock per chunk of graph inserts (and the inline share): a
lookup arriving meanwhile waits at most about this long. 5 ms added ~4.5 ms to the median lookup during a
catch-up here, 2 ms ~1.3-1.6 ms (benchmarks/semantic_warmup_bench.py, busy machine, noisy)."""
_YIELD = 0.0005
"""Seconds the catch-up pauses after a chunk when a lookup or store waited for the lock meanwhile."""
_INLINE_LOAD_BYTES = 1 << 20
"""A saved index up to this size is read inline on first use; a bigger one in the background (reading
one took ~5.5 ms per MiB here: a 4.9 MiB graph of 3,000 384-d vectors, 27 ms)."""
_CLOSE_WAIT = 2.0
"""Seconds close() waits for the catch-up thread to leave its current step."""


class _Local:
    """One namespace's local index and how far it has read the storage.

    Everything the storage held up to `cursor` (in `epoch`) is in `index`, so a saved (index, cursor)
    pair never skips an entry. While `warming`, the background catch-up owns `cursor` and lookups do
    not sync; `generation` changes when the index is started again (epoch change), so a catch-up step
    begun before drops what it fetched; `gone` says the namespace left this cache (LRU, clear).
    """

    __slots__ = ("index", "cursor", "epoch", "synced_at", "lock", "loaded", "warming", "generation", "gone",
                 "load_path", "contended")

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.epoch = ""
        self.loaded = False
        self.cursor = 0
        self.synced_at = float("-inf")
        self.warming = False
        self.generation = 0
        self.gone = False
        self.load_path: str | None = None
        """A saved index too big to read inline, which the catch-up reads first."""
        self.contended = False
        """A lookup or store waited for the lock: the catch-up lets it in before its next chunk."""


def _acquire(local: _Local) -> None:
    """Take the namespace's lock, telling the catch-up when we had to wait (it then yields)."""
    if not local.lock.acquire(blocking=False):
        local.contended = True
        local.lock.acquire()


_CACHES: weakref.WeakSet[SemanticCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _warm(ref: weakref.ref[SemanticCache]) -> None:
    """The catch-up thread: one page step per warming namespace in turn, until none is left."""
    while True:
        cache = ref()
        if cache is None:
            return
        job = cache._next_warm_job()
        if job is None:
            return
        cache._warm_run(*job)
        del cache, job


class SemanticCache:
    """Answers by meaning within a namespace (see the module doc).

    `k`: candidates put to the policy per lookup. `ttl` (seconds, None: no expiry) and `max_entries`
    go to the storage. `index_factory(dim)` makes a namespace's index (default `VectorIndex`).
    `index_dir`: where `save_indexes` (and `close`) write the namespaces' HNSW graphs, and where a
    namespace's index is read from when first used, then topped up from the storage, instead of
    being rebuilt from every stored vector (a 100k graph takes minutes of CPU to build, a second to
    read). A saved index is used only while the storage keeps the epoch it was saved in.

    `inline_sync`: entries a sync (a namespace's first use, then every `sync_interval`) fetches and
    indexes while the caller waits; the rest goes to the background catch-up. 250 by measurement here
    (384-d, loopback, busy 2-core machine): fetching and indexing 250 / 1,000 entries into an exact
    index took 3.4 / 14 ms from Redis, 1.6 / 8.4 ms from SQLite, 0.4 / 3.1 ms from memory. Into an
    HNSW graph only what fits ~2 ms of measured insert time is added inline (a few entries: ~1 ms each
    at 100k); turning an exact index into a graph is always left to the catch-up, which builds the
    graph off the lock and swaps it in.
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
        inline_sync: int = 250,
    ) -> None:
        if np is None:  # pragma: no cover - depends on the environment
            raise ImportError("the semantic cache needs numpy: pip install 'otel-llmcost[embeddings]'")
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one candidate")
        if isinstance(inline_sync, bool) or not isinstance(inline_sync, int) or inline_sync < 1:
            raise ValueError(f"inline_sync={inline_sync!r}: index at least one entry per sync inline")
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
        self.inline_sync = inline_sync
        self._locals: OrderedDict[str, _Local] = OrderedDict()
        self._lock = threading.Lock()  # _locals, the warm queue, the catch-up thread's handle, counts
        self._counts: dict[str, int] = dict.fromkeys(SemanticStats.__dataclass_fields__, 0)
        self._warm_queue: OrderedDict[str, _Local] = OrderedDict()
        self._warmer: threading.Thread | None = None
        self._warmer_pid = 0  # a forked child inherits the handle, not the thread
        self._warm_failing = False
        self._closed = False
        # seconds per graph insert as last measured (wall time, so the machine's load counts): sizes the
        # chunks the catch-up adds per lock hold and the share of a sync indexed inline
        self._insert_cost = 0.002
        _CACHES.add(self)

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
                    dropped_id, dropped = self._locals.popitem(last=False)
                    dropped.gone = True  # stops its catch-up, if one runs
                    self._warm_queue.pop(dropped_id, None)
            else:
                self._locals.move_to_end(ns_id)
            return local

    def _sync(self, ns_id: str, local: _Local) -> None:
        """Index the namespace's entries stored since the last sync, when due. Call with local.lock held.

        Inline work is bounded so a call never waits long for it: at most `inline_sync` entries are
        fetched, and only what is cheap to index now is added (an exact index filled up to its limit,
        or the graph inserts that fit in `_HOLD`); the rest, and whatever lies past the page, is left
        to the background catch-up, which owns the cursor until it is done.
        """
        if local.warming:
            return
        if not local.loaded:
            local.loaded = True
            if self._load(ns_id, local):
                self._start_warming(ns_id, local)
                return
        now = self._clock()
        if now - local.synced_at < self.sync_interval:
            return
        batch = self.storage.fetch_vectors(ns_id, after=local.cursor, limit=self.inline_sync)
        if local.epoch and batch.epoch != local.epoch:
            # The storage's contents were recreated (e.g. Redis restarted empty): our cursor means
            # nothing there and our entries are gone. Start the namespace's index again.
            self._restart(local)
            batch = self.storage.fetch_vectors(ns_id, after=0, limit=self.inline_sync)
        local.epoch = batch.epoch
        local.synced_at = now
        # Ids already held are this process's own stores (or a replica storing the same query):
        # an id is the hash of namespace and query text, so its vector is the same.
        fresh = [(e, v) for e, v in batch.entries if e not in local.index]
        share = self._inline_share(local.index, len(fresh))
        if share:
            self._add(local, fresh[:share])
        if share == len(fresh):
            local.cursor = batch.cursor
            if not batch.more:
                return
        # else the cursor stays: the catch-up fetches this page again and skips what is indexed
        self._start_warming(ns_id, local)

    def _inline_share(self, index: VectorIndex, n: int) -> int:
        """How many of n new entries to index while a caller waits (see `_sync`)."""
        if n == 0:
            return 0
        if not index.is_graph:
            # ~2.5 µs an entry; crossing the limit would build the whole graph: that is left to the
            # catch-up, which builds it off the lock
            return max(0, min(n, index.exact_limit - len(index)))
        return min(n, int(_HOLD / self._insert_cost))

    def _add(self, local: _Local, entries: Sequence[tuple[str, bytes]]) -> None:
        """Add stored (id, vector bytes) pairs to the namespace's index. Call with local.lock held."""
        if not entries:
            return
        ids = [e for e, _ in entries]
        vectors = np.frombuffer(b"".join(v for _, v in entries), dtype=np.float32).reshape(len(ids), self.dim)
        graph = local.index.is_graph
        start = time.perf_counter()
        local.index.add(ids, vectors)
        if graph:
            per = (time.perf_counter() - start) / len(ids)
            self._insert_cost = 0.8 * self._insert_cost + 0.2 * max(per, 1e-6)

    def _restart(self, local: _Local) -> None:
        """Drop the namespace's index and read the storage again from its start. Call with local.lock held."""
        local.index = self._new_index(self.dim)
        local.cursor = 0
        local.epoch = ""
        local.load_path = None
        local.generation += 1

    # -- the background catch-up --
    def _start_warming(self, ns_id: str, local: _Local) -> None:
        """Hand the namespace to the catch-up thread. Call with local.lock held."""
        local.warming = True
        self._count("warmups")
        self._enqueue(ns_id, local)

    def _enqueue(self, ns_id: str, local: _Local) -> None:
        with self._lock:
            if self._closed or local.gone:
                return
            self._warm_queue[ns_id] = local
            self._ensure_warmer_locked()

    def _ensure_warmer_locked(self) -> None:
        """Start the catch-up thread unless it runs (in this process). Call with self._lock held."""
        if self._warmer is not None and self._warmer_pid == os.getpid():
            return
        self._warmer_pid = os.getpid()
        self._warmer = threading.Thread(
            target=_warm, args=(weakref.ref(self),), name="llmcost-semantic-warmup", daemon=True
        )
        try:
            self._warmer.start()
        except RuntimeError as exc:  # no thread to be had: the inline syncs go on, a page at a time
            self._warmer = None
            _log.warning("semantic cache: cannot start the index catch-up thread (%s); namespaces are "
                         "indexed %d entries per sync instead", exc, self.inline_sync)  # fmt: skip
            for queued in self._warm_queue.values():
                queued.warming = False
            self._warm_queue.clear()

    def _next_warm_job(self) -> tuple[str, _Local] | None:
        """The next namespace to catch up, round robin; None (and the thread ends) when there is none."""
        with self._lock:
            if self._closed or not self._warm_queue:
                if self._warmer is threading.current_thread():
                    self._warmer = None
                return None
            return self._warm_queue.popitem(last=False)

    def _warm_run(self, ns_id: str, local: _Local) -> None:
        """One catch-up step for the namespace, queued again while more remains. Never raises: a step
        that fails ends the catch-up, and the next sync (which reports storage errors to its caller)
        starts another."""
        try:
            more = self._warm_step(ns_id, local)
        except Exception as exc:  # noqa: BLE001 - a background thread has nobody to raise to
            with local.lock:
                local.warming = False
                local.synced_at = self._clock()
            if not self._closed and not self._warm_failing:
                self._warm_failing = True
                _log.warning("semantic cache: catching up a namespace's index with %s failed (%s: %s); "
                             "lookups use what is indexed, the next sync tries again",
                             self.storage.uri, type(exc).__name__, exc)  # fmt: skip
            return
        if self._warm_failing:
            self._warm_failing = False
            _log.warning("semantic cache: catching up with %s works again", self.storage.uri)
        if more:
            self._enqueue(ns_id, local)

    def _stale(self, local: _Local, generation: int) -> bool:
        return self._closed or local.gone or local.generation != generation

    def _warm_step(self, ns_id: str, local: _Local) -> bool:
        """Fetch one page past the cursor and index it; whether the namespace has more to catch up.

        Inserts go into the live index in chunks sized to hold the lock about `_HOLD` seconds (hnswlib
        releases the GIL while inserting, and lookups get the lock between chunks), so every entry is
        searchable as soon as its chunk is in. Turning the exact index into a graph is one big step:
        that graph is built off the lock and swapped in (`_adopt`).
        """
        with local.lock:
            if local.gone or not local.warming or self._closed:
                return False
            generation, cursor, epoch, load_path = local.generation, local.cursor, local.epoch, local.load_path
        if load_path is not None:
            self._warm_load(ns_id, local, generation)
            return True
        batch = self.storage.fetch_vectors(ns_id, after=cursor, limit=_PAGE)
        if epoch and batch.epoch != epoch:
            with local.lock:
                if not self._stale(local, generation):
                    self._restart(local)
            return True
        entries = batch.entries
        done = 0
        while done < len(entries):
            with local.lock:
                if self._stale(local, generation):
                    return not local.gone and not self._closed
                index = local.index
                if not index.is_graph and len(index) + len(entries) - done > index.exact_limit:
                    break
                n = len(entries) - done if not index.is_graph else max(1, int(_HOLD / self._insert_cost))
                self._add(local, [(e, v) for e, v in entries[done : done + n] if e not in index])
                graph = index.is_graph
            done += n
            if graph and local.contended:
                local.contended = False
                time.sleep(_YIELD)
        with local.lock:
            due = local.index.needs_graph  # stores grew the exact index past its limit
        if (done < len(entries) or due) and not self._warm_convert(local, generation, entries[done:]):
            return not local.gone and not self._closed
        with local.lock:
            if self._stale(local, generation):
                return not local.gone and not self._closed
            local.cursor = batch.cursor
            local.epoch = batch.epoch
            if batch.more:
                return True
            local.warming = False
            local.synced_at = self._clock()
            return False

    def _warm_convert(self, local: _Local, generation: int, rest: Sequence[tuple[str, bytes]]) -> bool:
        """Build the graph that the exact index plus `rest` make, off the lock, and swap it in."""
        with local.lock:
            if self._stale(local, generation):
                return False
            ids = local.index.ids()
            vectors = local.index.vectors(ids)
        held = set(ids)
        rest = [(e, v) for e, v in rest if e not in held]
        graph = self._new_index(self.dim)
        if rest:
            new = np.frombuffer(b"".join(v for _, v in rest), dtype=np.float32).reshape(len(rest), self.dim)
            ids = ids + [e for e, _ in rest]
            vectors = np.concatenate([vectors, new])
        graph.add(ids, vectors)
        return self._adopt(local, generation, graph)

    def _adopt(self, local: _Local, generation: int, index: VectorIndex,
               then: Callable[[], None] | None = None) -> bool:
        """Make `index` (built off the lock) the namespace's index, carrying over the entries the live
        one gained meanwhile (stores); `then` runs under the same lock hold. Whether it was adopted.

        Entries removed from the live index meanwhile may come back: harmless, as a lookup that meets
        one finds it gone from the storage and removes it again.
        """
        for attempt in range(3):
            with local.lock:
                if self._stale(local, generation):
                    return False
                live = local.index
                missing = [e for e in live.ids() if e not in index]
                if attempt == 2 or len(missing) * self._insert_cost <= _HOLD:
                    if missing:
                        index.add(missing, live.vectors(missing))
                    local.index = index
                    if then is not None:
                        then()
                    return True
                vectors = live.vectors(missing)
            index.add(missing, vectors)  # many stores meanwhile: add them off the lock, then look again
        return False  # pragma: no cover - the last attempt always adopts

    def _warm_load(self, ns_id: str, local: _Local, generation: int) -> None:
        """Read the namespace's saved index off the lock and adopt it with its cursor and epoch."""
        saved = self._read_saved(ns_id)
        with local.lock:
            if self._stale(local, generation):
                return
            local.load_path = None
        if saved is None:  # unreadable after all: the catch-up reads the storage from the start
            return
        index, cursor, epoch = saved

        def position() -> None:
            local.cursor = cursor
            local.epoch = epoch

        self._adopt(local, generation, index, position)

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
            _acquire(local)  # one lock per namespace: lookups in other namespaces go on meanwhile
            try:
                self._sync(ns_id, local)
                candidates = local.index.search(vector, self.k)
                warming = local.warming
            finally:
                local.lock.release()
            if warming:  # served from what is indexed so far; the catch-up goes on in the background
                self._count("warming_lookups")
                self._ensure_warming()
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
            _acquire(local)
            try:
                self._sync(ns_id, local)
                # Past the exact-search limit the graph is built by the catch-up thread, off this call.
                local.index.add([entry_id], vector[None, :], convert=False)
                if local.index.needs_graph and not local.warming:
                    self._start_warming(ns_id, local)
            finally:
                local.lock.release()
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

    def warming(self) -> frozenset[str]:
        """Namespaces (ids) whose index is still catching up with the storage in the background; with
        `local_index_sizes` it shows how far each has got."""
        with self._lock:
            return frozenset(ns for ns, local in self._locals.items() if local.warming)

    def _ensure_warming(self) -> None:
        """Restart the catch-up thread where it does not run (a forked child) while namespaces wait."""
        if self._warmer is not None and self._warmer_pid == os.getpid():
            return
        with self._lock:
            if self._warm_queue and not self._closed:
                self._ensure_warmer_locked()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, no catch-up thread, and namespaces whose lock a thread of the
        parent held (their index may be half-written) dropped, to be rebuilt from the storage."""
        self._lock = threading.Lock()
        self._warmer = None
        for ns_id, local in list(self._locals.items()):
            if local.lock.locked():
                local.gone = True
                del self._locals[ns_id]
                self._warm_queue.pop(ns_id, None)
            elif local.warming:
                self._warm_queue[ns_id] = local  # the one the parent's thread was on is queued again

    def clear(self) -> None:
        """Remove every entry from the storage and drop the local indexes (stopping their catch-ups)."""
        with self._lock:
            for local in self._locals.values():
                local.gone = True
            self._locals.clear()
            self._warm_queue.clear()
        self.storage.clear()

    def _paths(self, ns_id: str) -> tuple[str, str]:
        assert self.index_dir is not None
        base = os.path.join(self.index_dir, ns_id)
        return base + ".vix", base + ".json"

    def _load(self, ns_id: str, local: _Local) -> bool:
        """Start from the namespace's saved index, if there is a readable one. Call with local.lock held.

        A small file is read at once; a bigger one (a 100k graph is ~200 MB, ~a second to read) is left
        to the catch-up: True then."""
        if self.index_dir is None:
            return False
        index_path, _ = self._paths(ns_id)
        try:
            size = os.path.getsize(index_path)
        except OSError:
            return False  # none saved: built from the storage
        if size > _INLINE_LOAD_BYTES:
            local.load_path = index_path
            return True
        saved = self._read_saved(ns_id)
        if saved is not None:
            local.index, local.cursor, local.epoch = saved
        return False

    def _read_saved(self, ns_id: str) -> tuple[VectorIndex, int, str] | None:
        """The namespace's saved index, cursor and epoch; None when missing, unreadable or of another dim."""
        index_path, meta_path = self._paths(ns_id)
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            index = VectorIndex.load(index_path)
            cursor, epoch = int(meta["cursor"]), str(meta["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: rebuilt from the storage
        if index.dim != self.dim:
            return None
        return index, cursor, epoch

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
        """Stop the catch-up, save the HNSW indexes (with `index_dir`) and close the storage."""
        with self._lock:
            self._closed = True
            self._warm_queue.clear()
            warmer = self._warmer if self._warmer_pid == os.getpid() else None
        if warmer is not None and warmer is not threading.current_thread():
            warmer.join(_CLOSE_WAIT)  # it stops between chunks; a graph build in progress may take longer
        self.save_indexes()
        self.storage.close()

    def __repr__(self) -> str:
        return f"SemanticCache(storage={self.storage.uri!r}, dim={self.dim}, k={self.k})"

