"""SemanticCache on every backend, with a real (small) embedder and threshold policy from helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from otel_llmcost.cache import (
    CacheStorageError,
    LookupContext,
    Namespace,
    SemanticCache,
    VectorIndex,
    open_storage,
)

from .conftest import FakeClock, RedisServer
from .helpers import HashedBagOfWords, RefuseWord, ThresholdPolicy

SYSTEM = {"role": "system", "content": "You answer questions about the weather."}


def ns(tenant: str | None = "acme", **changes: Any) -> Namespace:
    request: dict[str, Any] = {
        "tenant": tenant,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "messages": [SYSTEM, {"role": "user", "content": "ignored: the last user text is the query"}],
        "tools": None,
        "params": {"temperature": 0},
    }
    request.update(changes)
    return Namespace.for_request(**request)


@pytest.fixture
def make_cache(backend_uri: str, clock: FakeClock) -> Iterator[Any]:
    """SemanticCaches on the backend under test (same storage URI for every one made), closed afterwards."""
    made: list[SemanticCache] = []

    def make(policy: Any = None, **kwargs: Any) -> SemanticCache:
        kwargs.setdefault("ttl", 600)
        cache = SemanticCache(HashedBagOfWords(), policy or ThresholdPolicy(), backend_uri, clock=clock, **kwargs)
        made.append(cache)
        return cache

    yield make
    if made:
        made[0].clear()
    for cache in made:
        cache.close()


def test_paraphrase_hits_and_other_question_misses(make_cache: Any) -> None:
    """A stored answer serves the same words in another order/case; a different question misses."""
    cache = make_cache()
    cache.store(ns(), "Will it rain in Paris tomorrow?", b"answer: yes")
    hit = cache.lookup(ns(), "tomorrow in paris, will it rain")
    assert hit is not None
    assert hit.payload == b"answer: yes"
    assert hit.tier == "high" and hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert hit.query_text == "Will it rain in Paris tomorrow?"
    assert cache.lookup(ns(), "How do I bake bread without yeast?") is None
    stats = cache.stats
    assert (stats.hits, stats.hits_high, stats.misses, stats.stores) == (1, 1, 1, 1)


def test_medium_tier_is_reported(make_cache: Any) -> None:
    """A candidate between the medium and high thresholds is a hit of tier "medium"."""
    cache = make_cache(ThresholdPolicy(high=0.999, medium=0.5))
    cache.store(ns(), "will it rain in paris tomorrow", b"yes")
    hit = cache.lookup(ns(), "will it rain in paris today")
    assert hit is not None and hit.tier == "medium" and 0.5 <= hit.similarity < 0.999
    assert cache.stats.hits_medium == 1


def test_policy_refusal_falls_through_to_next_candidate(make_cache: Any) -> None:
    """When the policy refuses the nearest candidate, the next one it accepts is served."""
    cache = make_cache(RefuseWord("not", high=0.99, medium=0.6))
    cache.store(ns(), "is it not raining in paris", b"trap answer")
    cache.store(ns(), "is it raining in paris now", b"real answer")
    hit = cache.lookup(ns(), "is it raining in paris")
    assert hit is not None and hit.payload == b"real answer"
    only_trap = make_cache(RefuseWord("not", high=0.99, medium=0.6))
    only_trap.clear()
    only_trap.store(ns(), "is it not raining in paris", b"trap answer")
    assert only_trap.lookup(ns(), "is it raining in paris") is None
    assert only_trap.stats.rejected == 1


def test_tenant_b_never_gets_tenant_a_answer_by_paraphrase(make_cache: Any) -> None:
    """Tenant B asking A's question (verbatim or paraphrased) misses; so does a call with no tenant."""
    cache = make_cache()
    cache.store(ns("tenant-a"), "What is my account balance?", b"A's balance: 1,234")
    for tenant in ("tenant-b", None, "tenant-a ", "TENANT-A", "tenant-a\x00"):
        assert cache.lookup(ns(tenant), "What is my account balance?") is None
        assert cache.lookup(ns(tenant), "my account balance, what is it") is None
    assert cache.lookup(ns("tenant-a"), "my account balance, what is it") is not None


def test_crafted_tenant_ids_miss(make_cache: Any) -> None:
    """Tenant ids crafted with separators to mimic another namespace's fields never reach its entries."""
    cache = make_cache()
    cache.store(ns("acme"), "what is the secret plan", b"secret")
    for crafted in ("acme:openai:gpt-4o-mini", "acme|openai", 'acme", "provider": "openai', "acme/openai", "*"):
        assert cache.lookup(ns(crafted), "what is the secret plan") is None


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "gpt-4o"},
        {"provider": "azure"},
        {"messages": [{"role": "system", "content": "You answer questions about money."}, {"role": "user", "content": "x"}]},
        {"system": "Answer in French."},
        {"tools": [{"type": "function", "function": {"name": "get_weather"}}]},
        {"params": {"temperature": 0, "max_tokens": 5}},
        {"response_format": {"type": "json_object"}},
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "I am in Berlin."},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "x"},
            ]
        },
    ],
    ids=["model", "provider", "system-message", "system-arg", "tools", "params", "format", "history"],
)
def test_other_prompt_tools_model_or_history_never_match(make_cache: Any, changes: dict[str, Any]) -> None:
    """The same question under another model, provider, system prompt, tools, params, format or earlier turns misses."""
    cache = make_cache()
    cache.store(ns(), "will it rain tomorrow", b"stored")
    assert cache.lookup(ns(**changes), "will it rain tomorrow") is None
    assert cache.lookup(ns(), "will it rain tomorrow") is not None


def test_shared_global_index_still_serves_only_within_namespace(make_cache: Any) -> None:
    """Even with one index shared by every namespace (returning other tenants' ids), lookups serve only their own namespace's entries."""
    shared = VectorIndex(64)
    cache = make_cache(index_factory=lambda dim: shared)
    cache.store(ns("tenant-a"), "what is my password hint", b"A's hint")
    assert len(shared) == 1
    assert cache.lookup(ns("tenant-b"), "what is my password hint") is None
    cache.store(ns("tenant-b"), "what is my favourite colour", b"B's colour")
    hit = cache.lookup(ns("tenant-b"), "what is my password hint")
    assert hit is None or hit.payload == b"B's colour"
    hit_a = cache.lookup(ns("tenant-a"), "what is my favourite colour")
    assert hit_a is None or hit_a.payload == b"A's hint"


def test_bypass_and_refresh(make_cache: Any) -> None:
    """LookupContext(bypass) and (refresh) return None without reading; store with bypass stores nothing."""
    cache = make_cache()
    cache.store(ns(), "will it snow", b"old")
    assert cache.lookup(ns(), "will it snow", LookupContext(refresh=True)) is None
    assert cache.lookup(ns(), "will it snow", LookupContext(bypass=True)) is None
    assert cache.store(ns(), "will it hail", b"x", context=LookupContext(bypass=True)) is None
    assert cache.lookup(ns(), "will it hail") is None
    cache.store(ns(), "will it snow", b"new")  # refresh then store: the same query's entry is replaced
    hit = cache.lookup(ns(), "will it snow")
    assert hit is not None and hit.payload == b"new"
    assert cache.stats.bypasses == 2


def test_entries_expire(make_cache: Any, clock: FakeClock) -> None:
    """An entry past its TTL is not served and leaves the local index."""
    cache = make_cache(ttl=60)
    cache.store(ns(), "will it rain in rome", b"yes")
    cache.store(ns(), "will it be windy in oslo", b"maybe", ttl=600)
    clock.advance(61)
    assert cache.lookup(ns(), "will it rain in rome") is None
    assert cache.local_index_sizes()[ns().id] == 1


def test_new_process_rebuilds_index_from_storage(backend_uri: str, clock: FakeClock) -> None:
    """A second cache on the same storage (a restart, another replica) finds the first one's entries, and new ones after sync_interval."""
    # memory:// is one process's own: two caches on one storage object stand for the two processes
    shared = open_storage(backend_uri, clock=clock) if backend_uri == "memory://" else None
    first = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), backend_uri, storage=shared, clock=clock)
    second = SemanticCache(
        HashedBagOfWords(), ThresholdPolicy(), backend_uri, storage=shared, clock=clock, sync_interval=5
    )
    try:
        first.store(ns(), "will it rain in lisbon", b"lisbon: no")
        hit = second.lookup(ns(), "in lisbon will it rain")
        assert hit is not None and hit.payload == b"lisbon: no"
        first.store(ns(), "will it rain in madrid", b"madrid: yes")
        assert second.lookup(ns(), "will it rain in madrid") is None  # synced less than 5 s ago
        clock.advance(6)
        hit = second.lookup(ns(), "will it rain in madrid")
        assert hit is not None and hit.payload == b"madrid: yes"
    finally:
        first.clear()
        first.close()
        second.close()


def test_sqlite_semantic_entries_survive_restart(tmp_path: Any, clock: FakeClock) -> None:
    """Entries stored before the cache is closed are served by a cache opened on the same file."""
    uri = f"sqlite:///{tmp_path}/sem.db"
    before = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), uri, clock=clock)
    before.store(ns(), "what is the capital of peru", b"Lima")
    before.close()
    after = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), uri, clock=clock)
    hit = after.lookup(ns(), "the capital of peru is what")
    assert hit is not None and hit.payload == b"Lima"
    after.close()


def test_local_index_lru_rebuilds_dropped_namespaces(make_cache: Any) -> None:
    """With room for one local index, a namespace whose index was dropped is rebuilt from storage."""
    cache = make_cache(max_local_namespaces=1, sync_interval=0)
    cache.store(ns("a"), "question for a", b"A")
    cache.store(ns("b"), "question for b", b"B")
    assert list(cache.local_index_sizes()) == [ns("b").id]
    hit = cache.lookup(ns("a"), "question for a")
    assert hit is not None and hit.payload == b"A"


def test_forget_removes_an_entry(make_cache: Any) -> None:
    """forget() removes an entry from the storage and the index."""
    cache = make_cache()
    entry_id = cache.store(ns(), "is the sky green", b"wrong answer")
    assert cache.forget(ns(), entry_id) is True
    assert cache.lookup(ns(), "is the sky green") is None


def test_lookup_embeds_once(make_cache: Any) -> None:
    """A lookup calls the embedder once, with the query text alone."""
    cache = make_cache()
    cache.store(ns(), "a b c", b"x")
    calls = cache.embedder.calls
    cache.lookup(ns(), "a b c")
    assert cache.embedder.calls == calls + 1


def test_embedder_of_wrong_shape_is_refused() -> None:
    """An embedder returning vectors of another dimension raises ValueError naming the shapes."""

    class Wrong(HashedBagOfWords):
        def embed(self, texts: Any) -> Any:
            return super().embed(texts)[:, :10]

    cache = SemanticCache(Wrong(), ThresholdPolicy())
    with pytest.raises(ValueError, match="expected"):
        cache.lookup(ns(), "x")


def test_redis_down_raises_then_recovers(own_redis: RedisServer, clock: FakeClock) -> None:
    """With Redis killed, lookup and store raise CacheStorageError (the caller calls the provider); after a restart they work."""
    storage = open_storage(own_redis.url, clock=clock)
    cache = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), storage=storage, clock=clock, sync_interval=0)
    cache.store(ns(), "will it rain in york", b"yes")
    assert cache.lookup(ns(), "will it rain in york") is not None
    own_redis.kill()
    with pytest.raises(CacheStorageError, match="redis://127.0.0.1"):
        cache.lookup(ns(), "will it rain in york")
    with pytest.raises(CacheStorageError):
        cache.store(ns(), "will it rain in leeds", b"no")
    assert cache.stats.errors == 2
    own_redis.start()
    assert cache.lookup(ns(), "will it rain in york") is None  # the new server is empty
    cache.store(ns(), "will it rain in york", b"yes again")
    hit = cache.lookup(ns(), "will it rain in york")
    assert hit is not None and hit.payload == b"yes again"
    cache.close()


def test_entry_claiming_another_namespace_is_never_served(make_cache: Any) -> None:
    """An entry filed under namespace B whose payload says it belongs to A (a bug or tampering) is not served in B."""
    from otel_llmcost.cache.semantic import _encode

    cache = make_cache()
    a, b = ns("tenant-a"), ns("tenant-b")
    vector = cache.embedder.embed(["what is my pin"])[0]
    cache.storage.add(b.id, "planted", vector.tobytes(), _encode(a.id, "what is my pin", b"A's pin"))
    assert cache.lookup(b, "what is my pin") is None


def test_concurrent_tenants_get_only_their_own_answers(make_cache: Any) -> None:
    """Eight threads, one tenant each, storing and looking up the same questions at once: each gets only its own answers."""
    import threading

    cache = make_cache(sync_interval=0)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                cache.store(ns(f"tenant-{t}"), f"shared question number {i}", f"{t}:{i}".encode())
                hit = cache.lookup(ns(f"tenant-{t}"), f"question number {i} shared")
                assert hit is not None and hit.payload.startswith(f"{t}:".encode())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_replica_follows_after_redis_restarts_empty(own_redis: RedisServer, clock: FakeClock) -> None:
    """After Redis restarts empty, a replica drops its stale index and finds what another replica stores next."""
    a = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), own_redis.url, clock=clock, sync_interval=1)
    b = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), own_redis.url, clock=clock, sync_interval=1)
    for i in range(5):
        a.store(ns(), f"old question {i} about rain", b"old")
    assert b.lookup(ns(), "old question 0 about rain") is not None
    own_redis.kill()
    own_redis.start()
    a.store(ns(), "new question about snow", b"new")  # seq restarts at 1 on the new server
    clock.advance(2)
    hit = b.lookup(ns(), "new question about snow")
    assert hit is not None and hit.payload == b"new"
    assert b.local_index_sizes()[ns().id] == 1  # the old entries left the index
    a.close()
    b.close()


class _CountingStorage:
    """Delegates to a real storage and records the cursors fetch_vectors is asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fetched_after: list[int] = []

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> Any:
        self.fetched_after.append(after)
        return self.inner.fetch_vectors(namespace, after, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_saved_graph_is_read_back_and_topped_up(tmp_path: Any, clock: FakeClock) -> None:
    """With index_dir, close() saves a namespace's HNSW graph; a new cache reads it, fetches only newer entries, and serves old and new."""
    uri = f"sqlite:///{tmp_path}/sem.db"
    small = lambda dim: VectorIndex(dim, exact_limit=4)  # noqa: E731 - graphs from 5 entries on
    first = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), uri, clock=clock, index_factory=small, index_dir=tmp_path / "ix")
    for i in range(8):
        first.store(ns(), f"stored question {i} on weather", f"answer {i}".encode())
    first.close()
    assert (tmp_path / "ix" / f"{ns().id}.vix").exists()
    writer = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), uri, clock=clock)
    writer.store(ns(), "a question stored after the save", b"late")
    writer.close()
    storage = _CountingStorage(open_storage(uri, clock=clock))
    second = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), storage=storage, clock=clock, index_factory=small, index_dir=tmp_path / "ix")  # type: ignore[arg-type]
    hit = second.lookup(ns(), "stored question 3 on weather")
    assert hit is not None and hit.payload == b"answer 3"
    assert storage.fetched_after[0] > 0  # it started from the saved cursor, not from scratch
    late = second.lookup(ns(), "a question stored after the save")
    assert late is not None and late.payload == b"late"
    second.close()


def test_saved_graph_of_another_epoch_is_not_used(tmp_path: Any, clock: FakeClock) -> None:
    """A saved index whose storage was replaced (new epoch) is dropped: nothing stale is served."""
    small = lambda dim: VectorIndex(dim, exact_limit=4)  # noqa: E731
    first = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), f"sqlite:///{tmp_path}/a.db", clock=clock, index_factory=small, index_dir=tmp_path / "ix")
    for i in range(8):
        first.store(ns(), f"stored question {i} on weather", b"from a")
    first.close()
    second = SemanticCache(HashedBagOfWords(), ThresholdPolicy(), f"sqlite:///{tmp_path}/b.db", clock=clock, index_factory=small, index_dir=tmp_path / "ix")
    assert second.lookup(ns(), "stored question 3 on weather") is None
    assert second.local_index_sizes()[ns().id] == 0
    second.close()
