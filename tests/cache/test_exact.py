"""ExactCache on every backend: hits, misses, TTL, bypass and refresh, tenant isolation, failures."""

from __future__ import annotations

import time
from typing import Any

import pytest

from otel_llmcost.cache import CacheStorageError, ExactCache, exact_key, open_storage

from .conftest import FakeClock, RedisServer


def _request(tenant: str | None, question: str = "What is 2+2?", **params: Any) -> str:
    return exact_key(
        tenant=tenant,
        provider="openai",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        params={"temperature": 0, **params},
    )


@pytest.fixture
def cache(backend_uri: str, clock: FakeClock) -> Any:
    """An ExactCache with a 60 s TTL on the backend under test."""
    c = ExactCache(backend_uri, ttl=60, max_entries=100, clock=clock)
    yield c
    c.clear()
    c.close()


def test_miss_then_hit_and_stats(cache: ExactCache) -> None:
    """A stored response is served for the same key; hits and misses are counted."""
    key = _request("acme")
    assert cache.get(key) is None
    cache.put(key, b'{"choices": []}')
    assert cache.get(key) == b'{"choices": []}'
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.stores) == (1, 1, 1)
    assert stats.hit_rate == 0.5


def test_ttl_from_cache_and_per_put(cache: ExactCache, clock: FakeClock) -> None:
    """Entries expire after the cache's TTL, or after the TTL given to put."""
    cache.put("a", b"1")
    cache.put("b", b"2", ttl=5)
    clock.advance(6)
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    clock.advance(55)
    assert cache.get("a") is None


def test_bypass_neither_reads_nor_writes(cache: ExactCache) -> None:
    """get(bypass=True) returns None even when stored; put(bypass=True) stores nothing."""
    cache.put("k", b"old")
    assert cache.get("k", bypass=True) is None
    cache.put("other", b"x", bypass=True)
    assert cache.get("other") is None
    assert cache.get("k") == b"old"
    assert cache.stats.bypasses == 1


def test_refresh_returns_none_then_put_overwrites(cache: ExactCache) -> None:
    """get(refresh=True) returns None so the caller refetches; its put replaces the old entry."""
    cache.put("k", b"stale")
    assert cache.get("k", refresh=True) is None
    cache.put("k", b"fresh")
    assert cache.get("k") == b"fresh"
    assert cache.stats.refreshes == 1


def test_lru_eviction_through_the_cache(backend_uri: str, clock: FakeClock) -> None:
    """With max_entries=2 the least recently read entry is evicted first."""
    c = ExactCache(backend_uri, ttl=None, max_entries=2, clock=clock)
    try:
        c.put("a", b"a")
        clock.advance(2)
        c.put("b", b"b")
        clock.advance(2)
        assert c.get("a") == b"a"
        clock.advance(2)
        c.put("c", b"c")
        assert c.get("b") is None
        assert c.get("a") == b"a" and c.get("c") == b"c"
    finally:
        c.clear()
        c.close()


def test_tenant_b_never_gets_tenant_a_entry_by_exact_replay(cache: ExactCache) -> None:
    """The very same request replayed by another tenant (or with no tenant) misses."""
    cache.put(_request("tenant-a"), b"A's private answer")
    assert cache.get(_request("tenant-b")) is None
    assert cache.get(_request(None)) is None
    assert cache.get(_request("tenant-a ")) is None
    assert cache.get(_request("tenant-a")) == b"A's private answer"


def test_any_param_change_misses(cache: ExactCache) -> None:
    """A request differing in one sampling parameter never gets the stored answer."""
    cache.put(_request("acme", max_tokens=10), b"short answer")
    assert cache.get(_request("acme", max_tokens=11)) is None
    assert cache.get(_request("acme", max_tokens=10, seed=1)) is None
    assert cache.get(_request("acme", max_tokens=10)) == b"short answer"


def test_storage_errors_are_raised_and_counted(own_redis: RedisServer) -> None:
    """With Redis down get and put raise CacheStorageError (the caller falls back) and count errors; both work after a restart."""
    c = ExactCache(own_redis.url, ttl=60)
    c.put("k", b"v")
    own_redis.kill()
    with pytest.raises(CacheStorageError, match="failed during get"):
        c.get("k")
    with pytest.raises(CacheStorageError, match="failed during set"):
        c.put("k", b"v2")
    assert c.stats.errors == 2
    own_redis.start()
    assert c.get("k") is None  # the restarted server is empty
    c.put("k", b"v3")
    assert c.get("k") == b"v3"
    c.close()


def test_memory_hit_is_fast() -> None:
    """A memory hit takes well under 20 µs (median of many; the benchmark has the exact figure)."""
    c = ExactCache("memory://", ttl=3600)
    key = _request("acme")
    c.put(key, b"x" * 2000)
    for _ in range(1000):
        c.get(key)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10_000):
            c.get(key)
        samples.append((time.perf_counter() - start) / 10_000)
    assert min(samples) < 20e-6


def test_shared_storage_instance(clock: FakeClock) -> None:
    """An ExactCache can use a storage opened elsewhere (one storage, several caches)."""
    storage = open_storage("memory://", clock=clock)
    a = ExactCache(storage=storage)
    b = ExactCache(storage=storage)
    a.put("k", b"v")
    assert b.get("k") == b"v"
