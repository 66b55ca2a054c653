"""A Redis that goes away mid-test: fail open (allow, warn once, count) or fail closed (raise), and
recover by itself once the server is back."""

from __future__ import annotations

import logging
import time

import pytest

from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimiter, RateLimitExceeded, RateLimitStorageError

from .helpers import RedisServer

LOGGER = "otel_llmcost.ratelimit"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_fail_open_allows_warns_once_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed: calls pass unreserved with one warning for the outage, counted; after a restart limits apply again."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, storage_retry_interval=0)
    assert limiter.acquire("k", "free").reserved
    own_redis.stop()
    permits = [limiter.acquire("k", "free", 100) for _ in range(15)]  # more than the tier allows
    assert not any(p.reserved for p in permits)
    limiter.settle(permits[0], 5_000)  # nothing was reserved: nothing to correct, no error
    assert limiter.storage_errors == 15  # the settle of an unreserved permit asks nothing
    outage = warnings_of(caplog)
    assert len(outage) == 1 and "unavailable" in outage[0] and "allowing calls" in outage[0]
    assert "ConnectionError" in outage[0]

    own_redis.start()  # empty: the server kept nothing
    assert limiter.acquire("k", "free").reserved
    assert len(warnings_of(caplog)) == 2 and "answers again" in warnings_of(caplog)[1]
    for _ in range(9):
        limiter.acquire("k", "free")
    with pytest.raises(RateLimitExceeded):
        limiter.acquire("k", "free")
    limiter.close()


def test_fail_closed_raises_and_recovers(own_redis: RedisServer) -> None:
    """With on_storage_error='closed', a dead Redis raises RateLimitStorageError; after a restart calls pass."""
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, on_storage_error="closed", storage_retry_interval=0)
    permit = limiter.acquire("k", "free", 100)
    own_redis.stop()
    with pytest.raises(RateLimitStorageError, match=r"127\.0\.0\.1") as info:
        limiter.acquire("k", "free", 100)
    assert info.value.uri == own_redis.url
    with pytest.raises(RateLimitStorageError):
        limiter.settle(permit, 50)
    own_redis.start()
    assert limiter.acquire("k", "free", 100).reserved
    limiter.close()


def test_failed_storage_is_left_alone_then_retried(own_redis: RedisServer) -> None:
    """After a failure the limiter decides by policy without asking Redis for storage_retry_interval, then tries again."""
    interval = 1.0
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, storage_retry_interval=interval)
    own_redis.stop()
    assert not limiter.acquire("k", "free").reserved
    failed_at = time.monotonic()
    own_redis.start()
    permit = limiter.acquire("k", "free")
    if time.monotonic() - failed_at < interval:  # (a slow machine may take longer to restart Redis)
        assert not permit.reserved  # within the interval: decided by the policy, Redis not asked
    time.sleep(max(0.0, failed_at + interval + 0.05 - time.monotonic()))
    assert limiter.acquire("k", "free").reserved
    limiter.close()


def test_recovery_under_steady_traffic(own_redis: RedisServer) -> None:
    """Calls during an outage do not postpone the next try: a busy limiter finds a restarted Redis too."""
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, storage_retry_interval=0.3)
    own_redis.stop()
    assert not limiter.acquire("k", "free").reserved
    own_redis.start()
    started = time.monotonic()
    while not limiter.acquire("k", "free").reserved:
        assert time.monotonic() - started < 5, "never tried the storage again"
        time.sleep(0.02)
    limiter.close()


async def test_async_fail_open_and_recover(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """aacquire follows the same policy: unreserved permits and one warning while Redis is down, limits after."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, storage_retry_interval=0)
    try:
        assert (await limiter.aacquire("k", "free", 10)).reserved
        own_redis.stop()
        permits = [await limiter.aacquire("k", "free", 10) for _ in range(12)]
        assert not any(p.reserved for p in permits)
        await limiter.asettle(permits[0], 99)
        assert len(warnings_of(caplog)) == 1
        own_redis.start()
        assert (await limiter.aacquire("k", "free", 10)).reserved
        left = await limiter.aremaining("k", "free")
        assert left["requests_per_minute"] == pytest.approx(9, abs=0.5)
    finally:
        await limiter.aclose()


async def test_async_fail_closed_raises(own_redis: RedisServer) -> None:
    """aacquire with on_storage_error='closed' raises RateLimitStorageError while Redis is down."""
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, on_storage_error="closed", storage_retry_interval=0)
    try:
        await limiter.aacquire("k", "free")
        own_redis.stop()
        with pytest.raises(RateLimitStorageError):
            await limiter.aacquire("k", "free")
        own_redis.start()
        assert (await limiter.aacquire("k", "free")).reserved
    finally:
        await limiter.aclose()
