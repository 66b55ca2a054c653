"""Clock skew: limiters whose local clocks disagree by minutes still agree on Redis (server TIME)."""

from __future__ import annotations

import pytest

from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimiter, RateLimitExceeded

from .conftest import Backend
from .helpers import FakeClock, RedisServer


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_skewed_clients_agree_on_redis(redis_server: RedisServer, skew: float) -> None:
    """A limiter 10 minutes ahead (or behind) sees the bucket another one emptied as empty, with the same wait."""
    prefix = {"key_prefix": f"test:skew:{skew}"}
    clock_a, clock_b = FakeClock(1_000.0), FakeClock(1_000.0 + skew)
    a = RateLimiter(DEFAULT_TIERS, redis_server.url, clock=clock_a, storage_options=prefix)
    b = RateLimiter(DEFAULT_TIERS, redis_server.url, clock=clock_b, storage_options=prefix)
    for _ in range(10):
        a.acquire("k", "free")
    clock_b.advance(3_600)  # even an hour more on b's clock refills nothing
    with pytest.raises(RateLimitExceeded) as from_a:
        a.acquire("k", "free")
    with pytest.raises(RateLimitExceeded) as from_b:
        b.acquire("k", "free")
    assert from_b.value.retry_after == pytest.approx(from_a.value.retry_after, abs=0.5)
    assert 4.0 < from_b.value.retry_after <= 6.0  # b's clock is minutes off, yet it waits for a's burst
    assert b.remaining("k", "free") == pytest.approx(a.remaining("k", "free"), abs=0.2)
    assert clock_a.reads == 0 and clock_b.reads == 0  # Redis never asked the clients' clocks
    a.close()
    b.close()


def test_memory_storage_uses_the_injected_clock(clock: FakeClock) -> None:
    """memory:// reads the limiter's clock (which is what makes fake-clock tests possible)."""
    limiter = RateLimiter(DEFAULT_TIERS, "memory://", clock=clock)
    limiter.acquire("k", "free")
    assert clock.reads >= 1


def test_redis_time_moves_buckets(backend: Backend) -> None:
    """Whatever clock is injected, the storage's own time refills the bucket (fake clock on memory, server on Redis)."""
    limiter = backend.make({"t": {"tokens_per_minute": 60}})
    limiter.acquire("k", "t", 60)
    backend.pass_time(0.3)
    left = limiter.remaining("k", "t")["tokens_per_minute"]  # 1 token/s
    assert 0.3 - 1e-6 <= left < 1.5
    if backend.exact:
        assert left == pytest.approx(0.3)
