"""Details of the Redis storage: one key per rate-limited key, expiry once full, script loading."""

from __future__ import annotations

import math
import struct
import uuid

import pytest
import redis

from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimiter

from .helpers import RedisServer


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_one_string_per_key_that_expires_when_full(redis_server: RedisServer, prefix: str) -> None:
    """All buckets of a key live in one Redis key, which expires once every bucket would be full again."""
    limiter = RateLimiter(DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": prefix})
    limiter.acquire("user:1", "free", 1_000)
    client = redis.Redis.from_url(redis_server.url)
    assert client.keys(f"{prefix}:*") == [f"{prefix}:user:1".encode()]
    t, *levels = struct.unpack("dddd", client.get(f"{prefix}:user:1")[:32])
    assert levels == [9.0, math.inf, 49_000.0]  # free sets no tokens/min limit: an infinite level
    ttl = client.pttl(f"{prefix}:user:1") / 1000
    assert 1_700 < ttl <= 1_729 + 1  # 1000 tokens at 50000/day come back in 1728 s
    limiter.reset("user:1")
    assert client.exists(f"{prefix}:user:1") == 0
    limiter.close()
    client.close()


def test_storage_is_made_without_a_server() -> None:
    """Making a Redis limiter needs no server: with none there, calls fail open until one answers."""
    limiter = RateLimiter(DEFAULT_TIERS, "redis://127.0.0.1:1/0")
    assert not limiter.acquire("k", "free").reserved
    limiter.close()


def test_a_key_prefix_separates_limiters(redis_server: RedisServer, prefix: str) -> None:
    """Limiters with different key prefixes do not share buckets on one server."""
    a = RateLimiter(DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": prefix + "a"})
    b = RateLimiter(DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": prefix + "b"})
    for _ in range(10):
        a.acquire("k", "free")
    assert b.acquire("k", "free").reserved
    a.close()
    b.close()


def test_script_is_reloaded_after_a_flush(redis_server: RedisServer, prefix: str) -> None:
    """A server that lost its script cache (restart, SCRIPT FLUSH) gets the script again transparently."""
    limiter = RateLimiter(DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": prefix})
    limiter.acquire("k", "free")
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()
    assert limiter.acquire("k", "free").reserved
    assert limiter.storage_errors == 0
    limiter.close()
    client.close()


async def test_script_is_reloaded_in_a_pipeline(redis_server: RedisServer, prefix: str) -> None:
    """Async calls sent together as a pipeline also get the script loaded again after SCRIPT FLUSH."""
    import asyncio

    limiter = RateLimiter(DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": prefix})
    try:
        await limiter.aacquire("k", "pro")
        client = redis.Redis.from_url(redis_server.url)
        client.script_flush()
        client.close()
        permits = await asyncio.gather(*(limiter.aacquire("k", "pro") for _ in range(5)))
        assert all(p.reserved for p in permits)
        assert limiter.storage_errors == 0
        assert (await limiter.aremaining("k", "pro"))["requests_per_minute"] == pytest.approx(54, abs=0.5)
    finally:
        await limiter.aclose()
