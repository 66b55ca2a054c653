"""A semantic-cache namespace that must be (re)built never blocks the call that needs it.

Replica A's entries are written straight into a real storage (20,000 would take minutes through
`SemanticCache.store`); replica B, a fresh process in effect, indexes a bounded share inline and the
rest in its catch-up thread. `GatedStorage` holds that thread's fetches until the test lets them
through, so what B has indexed at a given moment is known exactly, with no timing assumption.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otel_llmcost.cache import Namespace, SemanticCache, VectorIndex
from otel_llmcost.cache.semantic import _encode  # the stored format, to seed a storage fast
from otel_llmcost.cache.storage import CacheStorage, open_storage

from .conftest import FakeClock, RedisServer
from .helpers import HashedBagOfWords, ThresholdPolicy

DIM = 64
WARMUP_THREAD = "llmcost-semantic-warmup"
DEADLINE = 300.0  # seconds: a bound for a hung test, not a speed expectation


def ns(tenant: str = "acme") -> Namespace:
    return Namespace.for_request(
        tenant=tenant, provider="openai", model="gpt-4o-mini",
        messages=[{"role": "user", "content": "x"}], tools=None, params={"temperature": 0},
    )


class GatedStorage:
    """A real storage whose `fetch_vectors`, when called by the catch-up thread, first waits for a
    permit (`allow(n)`) or for the gate to open (`open()`); it records every fetch."""

    def __init__(self, inner: CacheStorage) -> None:
        self.inner = inner
        self.fetches: list[tuple[str, str, int, int | None]] = []  # (thread, namespace, after, limit)
        self.waiting = threading.Event()
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()

    def allow(self, pages: int) -> None:
        for _ in range(pages):
            self._permits.release()

    def open(self) -> None:
        self._open.set()

    def shut(self) -> None:
        self._open.clear()
        self.waiting.clear()

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> Any:
        name = threading.current_thread().name
        if name == WARMUP_THREAD:
            self.waiting.set()
            while not self._open.is_set() and not self._permits.acquire(timeout=0.02):
                pass
        self.fetches.append((name, namespace, after, limit))
        return self.inner.fetch_vectors(namespace, after, limit)

    def background_fetches(self, namespace: str) -> list[int]:
        return [after for thread, n, after, _ in self.fetches if thread == WARMUP_THREAD and n == namespace]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {DEADLINE} s for: {what}")
        time.sleep(0.02)


def catch_up_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WARMUP_THREAD]


def seed(storage: CacheStorage, namespace: Namespace, n: int, start: int = 0) -> list[str]:
    """n entries of random unit vectors (never close to the test's questions), as replica A stores them."""
    rng = np.random.default_rng(start)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"fill{start + i:07d}" for i in range(n)]
    for i, entry_id in enumerate(ids):
        payload = _encode(namespace.id, f"filler question {start + i}", b"filler")
        storage.add(namespace.id, entry_id, vectors[i].tobytes(), payload, None)
    return ids


@pytest.fixture
def shared_storage(backend_uri: str, clock: FakeClock) -> Iterator[Callable[[], CacheStorage]]:
    """Opens storages that reach the same entries, as replicas do (memory://: one object shared)."""
    opened: list[CacheStorage] = []
    memory: list[CacheStorage] = []

    def make() -> CacheStorage:
        if backend_uri == "memory://" and memory:
            return memory[0]
        storage = open_storage(backend_uri, max_entries=None, ttl=None, clock=clock)
        opened.append(storage)
        if backend_uri == "memory://":
            memory.append(storage)
        return storage

    yield make
    cleaner = open_storage(backend_uri, clock=clock)  # the replicas closed theirs
    cleaner.clear()
    cleaner.close()


def replica(storage: Any, clock: FakeClock, **kwargs: Any) -> SemanticCache:
    kwargs.setdefault("inline_sync", 250)
    return SemanticCache(HashedBagOfWords(DIM), ThresholdPolicy(), storage=storage, clock=clock, **kwargs)


def index_ids(cache: SemanticCache, namespace: Namespace) -> list[str]:
    local = cache._locals[namespace.id]
    with local.lock:
        return local.index.ids()


def test_fetch_vectors_pages_oldest_first(make_storage: Any, clock: FakeClock) -> None:
    """Pages of `limit` entries come oldest first and chain by cursor; expired and removed entries are
    skipped; an entry stored again moves to the end; `more` is False once the storage is read out."""
    s = make_storage(max_entries=None)
    for i in range(25):
        s.add("ns", f"e{i:02d}", np.full(4, i, dtype=np.float32).tobytes(), b"p", ttl=5 if i == 3 else None)
    s.remove("ns", "e07")
    s.add("ns", "e01", np.full(4, 1, dtype=np.float32).tobytes(), b"again")
    clock.advance(10)  # e03 expires
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        batch = s.fetch_vectors("ns", after=cursor, limit=10)
        assert len(batch.entries) <= 10 and batch.epoch
        seen += [e for e, _ in batch.entries]
        cursor, pages = batch.cursor, pages + 1
        if not batch.more:
            break
        assert pages < 10
    expected = [f"e{i:02d}" for i in range(25) if i not in (1, 3, 7)] + ["e01"]
    assert seen == expected
    assert s.fetch_vectors("ns", after=cursor, limit=10).entries == []
    assert [e for e, _ in s.fetch_vectors("ns").entries] == expected  # no limit: all, as before
    with pytest.raises(ValueError, match="limit=0"):
        s.fetch_vectors("ns", limit=0)


def test_first_lookup_returns_at_once_and_the_rest_is_caught_up(
    shared_storage: Callable[[], CacheStorage], clock: FakeClock
) -> None:
    """Replica B's first lookup on 20,000 stored entries indexes only its inline share and returns while
    the catch-up is held; the catch-up then indexes every entry, and the newest entry's twin hits."""
    a = replica(shared_storage(), clock)
    filler = seed(a.storage, ns(), 20_000)
    a.store(ns(), "What is the capital of Peru?", b"Lima")  # the newest entry: indexed last by B
    gated = GatedStorage(shared_storage())
    b = replica(gated, clock)
    done: list[Any] = []
    first = threading.Thread(target=lambda: done.append(b.lookup(ns(), "what is the capital of peru")))
    first.start()
    first.join(DEADLINE)
    assert done == [None]  # it returned (the catch-up is still held at its first fetch): a plain miss
    assert b.local_index_sizes()[ns().id] == 250
    assert b.warming() == {ns().id}
    assert (b.stats.warmups, b.stats.warming_lookups, b.stats.misses) == (1, 1, 1)
    gated.waiting.wait(DEADLINE)
    assert b.local_index_sizes()[ns().id] == 250  # nothing more until the catch-up may fetch
    gated.allow(2)  # two pages: the exact index fills, then turns into a graph built off the lock
    wait_until(lambda: b.local_index_sizes()[ns().id] == 2_250, "two pages indexed")
    assert b.warming() == {ns().id} and b.lookup(ns(), "what is the capital of peru") is None
    gated.open()
    wait_until(lambda: not b.warming(), "B's catch-up")
    ids = index_ids(b, ns())
    stored = [e for e, _ in b.storage.fetch_vectors(ns().id).entries]
    assert len(ids) == len(set(ids)) == 20_001 and sorted(ids) == sorted(stored)
    assert set(filler) < set(ids)
    hit = b.lookup(ns(), "what is the capital of peru")
    assert hit is not None and hit.payload == b"Lima"
    assert b.stats.warming_lookups == 2  # the lookups after the catch-up are normal ones
    cursors = gated.background_fetches(ns().id)
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)  # page after page, none twice
    wait_until(lambda: not catch_up_threads(), "the idle catch-up thread to exit")
    a.close()
    b.close()


def _n(i: int) -> str:
    """A number as three words: texts that differ by it differ in three hashed words, not one."""
    return f"{i} {7 * i + 3} {13 * i + 5}"


def test_stores_during_catch_up_are_neither_lost_nor_doubled(
    shared_storage: Callable[[], CacheStorage], clock: FakeClock
) -> None:
    """A keeps storing, and B stores and looks up from several threads, while B catches up: at the end B's
    index holds each stored entry exactly once, and every answer stored meanwhile is served by B."""
    a = replica(shared_storage(), clock)
    seed(a.storage, ns(), 6_000)
    gated = GatedStorage(shared_storage())
    b = replica(gated, clock, index_factory=lambda dim: VectorIndex(dim, expansion_search=256))  # ~exact recall
    assert b.lookup(ns(), "anything at all") is None
    questions: list[tuple[SemanticCache, str]] = []
    for i in range(20):  # while the catch-up is held at its first page
        questions += [(a, f"question {_n(i)} asked on replica alpha"), (b, f"what does replica beta say to {_n(i)}")]
    for cache, q in questions:
        cache.store(ns(), q, q.encode())
    errors: list[BaseException] = []
    stop = threading.Event()

    def busy(replica_b: SemanticCache, worker: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                q = f"worker w{worker} asks question {_n(i)}"
                (a if i % 2 else replica_b).store(ns(), q, q.encode())
                questions.append((a if i % 2 else replica_b, q))
                replica_b.lookup(ns(), f"question {_n(i // 2)} asked on replica alpha")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            i += 1

    workers = [threading.Thread(target=busy, args=(b, w)) for w in range(3)]
    for w in workers:
        w.start()
    gated.allow(3)
    wait_until(lambda: len(gated.background_fetches(ns().id)) >= 3, "three pages")
    gated.open()
    wait_until(lambda: not b.warming(), "B's catch-up")
    stop.set()
    for w in workers:
        w.join(DEADLINE)
    assert errors == []
    clock.advance(5)  # the next lookup syncs what A stored after the catch-up's last page
    assert b.lookup(ns(), "no such question") is None
    wait_until(lambda: not b.warming(), "B's second catch-up, if the sync had more than its share")
    stored = [e for e, _ in b.storage.fetch_vectors(ns().id).entries]
    ids = index_ids(b, ns())
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(stored)
    assert len(stored) == 6_000 + len({q for _, q in questions})
    for _, q in questions:
        hit = b.lookup(ns(), q)
        assert hit is not None and hit.payload == q.encode(), q
    a.close()
    b.close()


def test_epoch_change_mid_catch_up_restarts_it(own_redis: RedisServer, clock: FakeClock) -> None:
    """Redis emptied (FLUSHALL) after B's catch-up indexed a few pages: the catch-up starts again from the
    new contents, so B ends with exactly what was stored after the flush and serves none of the old."""
    import redis

    url = own_redis.url
    a = replica(open_storage(url, max_entries=None, ttl=None, clock=clock), clock)
    seed(a.storage, ns(), 5_000)
    a.store(ns(), "an old question about rain", b"old")
    gated = GatedStorage(open_storage(url, max_entries=None, ttl=None, clock=clock))
    b = replica(gated, clock)
    assert b.lookup(ns(), "an old question about snow") is None
    gated.allow(2)
    wait_until(lambda: b.local_index_sizes()[ns().id] == 2_250, "two pages indexed")
    client = redis.Redis.from_url(own_redis.url)
    client.flushall()
    client.close()
    new = seed(a.storage, ns(), 1_500, start=100_000)
    a.store(ns(), "a new question about snow", b"new")
    gated.open()
    wait_until(lambda: not b.warming(), "B's catch-up after the flush")
    stored = [e for e, _ in b.storage.fetch_vectors(ns().id).entries]
    assert len(stored) == 1_501 and set(new) < set(stored)
    assert sorted(index_ids(b, ns())) == sorted(stored)
    assert b.lookup(ns(), "an old question about rain") is None
    hit = b.lookup(ns(), "a new question about snow")
    assert hit is not None and hit.payload == b"new"
    a.close()
    b.close()


def test_redis_restarted_empty_mid_catch_up(own_redis: RedisServer, clock: FakeClock) -> None:
    """Redis killed during B's catch-up: the catch-up ends (lookups keep what is indexed); once Redis is
    back empty, B's next sync starts the namespace again and follows what A stores there."""
    a = replica(open_storage(own_redis.url, max_entries=None, ttl=None, clock=clock), clock)
    seed(a.storage, ns(), 3_000)
    gated = GatedStorage(open_storage(own_redis.url, max_entries=None, ttl=None, clock=clock))
    b = replica(gated, clock)
    assert b.lookup(ns(), "a question about hail") is None
    gated.waiting.wait(DEADLINE)
    own_redis.kill()
    gated.open()
    wait_until(lambda: not b.warming(), "the catch-up to give up")
    assert b.local_index_sizes()[ns().id] == 250  # what was indexed stays
    own_redis.start()  # empty
    a.store(ns(), "a question about hail", b"hail")
    clock.advance(5)
    hit = b.lookup(ns(), "a question about hail")
    assert hit is not None and hit.payload == b"hail"
    assert b.local_index_sizes()[ns().id] == 1
    a.close()
    b.close()


def test_lru_eviction_stops_the_catch_up(shared_storage: Callable[[], CacheStorage], clock: FakeClock) -> None:
    """A namespace evicted from B's local indexes (LRU) while catching up: its catch-up stops at once and
    the thread, left idle, exits; asked again, the namespace starts over."""
    seed(shared_storage(), ns("big"), 3_000)
    seed(shared_storage(), ns("small"), 10)
    gated = GatedStorage(shared_storage())
    b = replica(gated, clock, max_local_namespaces=1)
    assert b.lookup(ns("big"), "first question") is None
    gated.waiting.wait(DEADLINE)
    assert b.lookup(ns("small"), "second question") is None  # evicts "big"
    assert b.warming() == frozenset() and set(b.local_index_sizes()) == {ns("small").id}
    gated.open()
    wait_until(lambda: not catch_up_threads(), "the idle catch-up thread to exit")
    assert len(gated.background_fetches(ns("big").id)) <= 1  # the one held at eviction, dropped
    gated.shut()
    assert b.lookup(ns("big"), "first question") is None
    assert b.local_index_sizes()[ns("big").id] == 250 and b.warming() == {ns("big").id}
    gated.open()
    wait_until(lambda: not b.warming(), "the second catch-up")
    assert b.local_index_sizes()[ns("big").id] == 3_000
    b.close()


def test_saved_index_is_read_in_the_background_then_topped_up(tmp_path: Path, clock: FakeClock) -> None:
    """With index_dir, a saved graph too big to read inline is read by the catch-up: the first lookup
    does not fetch from the storage, the catch-up starts at the saved cursor, and old and new entries hit."""
    uri = f"sqlite:///{tmp_path}/sem.db"
    a = replica(open_storage(uri, max_entries=None, ttl=None, clock=clock), clock)
    seed(a.storage, ns(), 6_000)
    a.store(ns(), "an old question about fog", b"fog")
    first = replica(open_storage(uri, max_entries=None, ttl=None, clock=clock), clock, index_dir=tmp_path / "ix")
    first.lookup(ns(), "warm me up")
    wait_until(lambda: not first.warming(), "the first replica's catch-up")
    first.close()
    assert (tmp_path / "ix" / f"{ns().id}.vix").stat().st_size > 1 << 20
    a.store(ns(), "a new question about frost", b"frost")
    gated = GatedStorage(open_storage(uri, max_entries=None, ttl=None, clock=clock))
    b = replica(gated, clock, index_dir=tmp_path / "ix")
    b.lookup(ns(), "an old question about fog")  # a hit if the graph was read by then, else a miss
    assert [f for f in gated.fetches if f[0] != WARMUP_THREAD] == []  # nothing fetched inline
    assert b.warming() == {ns().id}
    gated.open()
    wait_until(lambda: not b.warming(), "B's catch-up")
    assert gated.background_fetches(ns().id)[0] > 0  # from the saved cursor, not from scratch
    assert b.local_index_sizes()[ns().id] == 6_002
    for query, answer in (("an old question about fog", b"fog"), ("a new question about frost", b"frost")):
        hit = b.lookup(ns(), query)
        assert hit is not None and hit.payload == answer
    a.close()
    b.close()


def test_catch_up_resumes_in_a_forked_child(clock: FakeClock) -> None:
    """A process forked while a catch-up is held: the child has no catch-up thread, starts one on its next
    lookup and completes the namespace; the parent's goes on apart."""
    storage = GatedStorage(open_storage("memory://", max_entries=None, ttl=None, clock=clock))
    seed(storage.inner, ns(), 3_000)
    b = replica(storage, clock)
    assert b.lookup(ns(), "a question") is None
    storage.waiting.wait(DEADLINE)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            storage.open()
            b.lookup(ns(), "a question")
            wait_until(lambda: not b.warming(), "the child's catch-up")
            code = 0 if b.local_index_sizes()[ns().id] == 3_000 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.warming() == {ns().id}  # the parent's catch-up is still held
    storage.open()
    wait_until(lambda: not b.warming(), "the parent's catch-up")
    assert b.local_index_sizes()[ns().id] == 3_000
    b.close()


def test_inline_sync_must_be_positive() -> None:
    """inline_sync below 1 is refused with what to do."""
    with pytest.raises(ValueError, match="inline_sync=0"):
        SemanticCache(HashedBagOfWords(DIM), ThresholdPolicy(), inline_sync=0)


def test_stores_past_the_exact_limit_leave_the_graph_to_the_catch_up(clock: FakeClock) -> None:
    """The store that grows a namespace past exact search does not build the HNSW graph in the app's
    call (seconds at the default limit): the index stays exact, searchable and complete, and the
    catch-up thread builds the graph off the call and swaps it in."""
    storage = GatedStorage(open_storage("memory://", max_entries=None, ttl=None, clock=clock))
    cache = replica(storage, clock, index_factory=lambda dim: VectorIndex(dim, exact_limit=64))
    namespace = ns()
    questions = [f"question number {i} about topic {i * 7919 % 1000}" for i in range(80)]
    for i, question in enumerate(questions):
        cache.store(namespace, question, f"answer {i}".encode())
    local = cache._locals[namespace.id]
    with local.lock:
        assert not local.index.is_graph and local.index.needs_graph and len(local.index) == 80
    storage.waiting.wait(DEADLINE)  # the catch-up thread waits at the gate: nothing was built inline
    hit = cache.lookup(namespace, questions[70])
    assert hit is not None and hit.payload == b"answer 70"  # the exact index still answers meanwhile
    storage.open()
    wait_until(lambda: local.index.is_graph and not local.warming, "the graph built by the catch-up")
    assert sorted(index_ids(cache, namespace)) == sorted(e for e, _ in storage.inner.fetch_vectors(namespace.id).entries)
    hit = cache.lookup(namespace, questions[5])
    assert hit is not None and hit.payload == b"answer 5"
    cache.close()
