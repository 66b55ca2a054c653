"""Token-bucket behaviour, the same test body on memory:// and on a real Redis."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimitExceeded, Tier

from .conftest import Backend

Approx = Callable[..., Any]

DAILY = {"daily": Tier("daily", requests_per_minute=10, tokens_per_day=1_000)}
PER_MINUTE = {"minute": Tier("minute", requests_per_minute=1_000, tokens_per_minute=600)}


def burst(limiter: Any, key: str, tier: str, tokens: float = 0) -> int:
    """Acquire until refused; return how many were granted."""
    granted = 0
    while True:
        try:
            limiter.acquire(key, tier, tokens)
        except RateLimitExceeded:
            return granted
        granted += 1
        assert granted < 10_000, "never refused"


def test_burst_then_reject_with_retry_after(backend: Backend, approx: Approx) -> None:
    """A full free bucket grants 10 requests at once; the 11th is refused for ~6 s (one request's refill)."""
    limiter = backend.make(DEFAULT_TIERS)
    assert burst(limiter, "user:1", "free", 100) == 10
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("user:1", "free", 100)
    exc = info.value
    assert (exc.limit, exc.key, exc.tier) == ("requests_per_minute", "user:1", "free")
    assert exc.retry_after == approx(6.0)
    assert 0 < exc.retry_after <= 6.0
    assert exc.capacity == 10 and exc.requested == 1
    assert "requests_per_minute" in str(exc) and "user:1" in str(exc) and "retry after" in str(exc)


def test_refill_with_fake_clock(clock: Any) -> None:
    """On memory://, time is the injected clock: a request comes back every 6 s, never beyond capacity."""
    from otel_llmcost.ratelimit import RateLimiter

    limiter = RateLimiter(DEFAULT_TIERS, "memory://", clock=clock)
    assert burst(limiter, "k", "free") == 10
    clock.advance(5.999)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "free")
    assert info.value.retry_after == pytest.approx(0.001, abs=1e-6)
    clock.advance(info.value.retry_after)  # waiting exactly retry_after is enough
    limiter.acquire("k", "free")
    clock.advance(3_600)  # an hour refills the bucket to its capacity, no further
    assert burst(limiter, "k", "free") == 10
    assert limiter.remaining("k", "free")["tokens_per_day"] == pytest.approx(50_000, abs=1)


def test_refill_over_time(backend: Backend, approx: Approx) -> None:
    """An emptied tokens-per-minute bucket refills at capacity/60 per second: after retry_after the call passes."""
    limiter = backend.make(PER_MINUTE)
    limiter.acquire("k", "minute", 600)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "minute", 5)
    assert info.value.limit == "tokens_per_minute"
    assert info.value.retry_after == approx(0.5, 0.2)  # 5 tokens at 10 tokens/s
    assert info.value.retry_after <= 0.5
    backend.pass_time(info.value.retry_after)
    limiter.acquire("k", "minute", 5)


def test_tokens_per_day_independent_of_requests(backend: Backend, approx: Approx) -> None:
    """A call refused for tokens/day leaves the requests bucket alone, and small calls still pass."""
    limiter = backend.make(DAILY)
    limiter.acquire("k", "daily", 900)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "daily", 200)
    assert info.value.limit == "tokens_per_day"
    assert info.value.retry_after == approx(100 / (1_000 / 86_400), 10.0)  # 100 tokens short: 8640 s
    assert info.value.requested == 200 and info.value.capacity == 1_000
    left = limiter.remaining("k", "daily")
    assert left["requests_per_minute"] == approx(9, 0.5)  # the refused call took nothing
    assert left["tokens_per_day"] == approx(100, 0.1)
    limiter.acquire("k", "daily", 100)  # exactly what is left passes
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "daily", 1)
    assert info.value.limit == "tokens_per_day"


def test_requests_per_minute_independent_of_tokens(backend: Backend) -> None:
    """Zero-token calls use up requests/min while tokens/day stays full."""
    limiter = backend.make(DAILY)
    assert burst(limiter, "k", "daily", 0) == 10
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "daily", 0)
    assert info.value.limit == "requests_per_minute"
    assert limiter.remaining("k", "daily")["tokens_per_day"] == pytest.approx(1_000)


def test_refused_call_reserves_nothing(backend: Backend, approx: Approx) -> None:
    """All buckets or none: a call refused by one bucket takes nothing from the others."""
    tiers = {"t": Tier("t", requests_per_minute=5, tokens_per_minute=1_000, tokens_per_day=500)}
    limiter = backend.make(tiers)
    limiter.acquire("k", "t", 400)
    before = limiter.remaining("k", "t")
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "t", 200)  # fits tokens/min (600 left) but not tokens/day (100 left)
    assert info.value.limit == "tokens_per_day"
    after = limiter.remaining("k", "t")
    for name in before:  # only refill since: nothing taken (a taken call would be 1 request or 200 tokens)
        assert before[name] - 1e-9 <= after[name] < before[name] + 0.5


def test_the_limit_that_frees_last_is_reported(backend: Backend, approx: Approx) -> None:
    """When several buckets refuse, the error names the one with the longest wait and that wait."""
    tiers = {"t": Tier("t", requests_per_minute=1, tokens_per_day=100)}
    limiter = backend.make(tiers)
    limiter.acquire("k", "t", 100)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "t", 50)  # requests: 60 s away; tokens: 50 tokens at 100/day = 43200 s
    assert info.value.limit == "tokens_per_day"
    assert info.value.retry_after == approx(43_200, 10.0)


def test_settle_refunds_unused_tokens(backend: Backend, approx: Approx) -> None:
    """settle with fewer tokens than estimated gives the difference back."""
    limiter = backend.make(DEFAULT_TIERS)
    permit = limiter.acquire("k", "free", 5_000)
    assert limiter.remaining("k", "free")["tokens_per_day"] == approx(45_000, 5)
    limiter.settle(permit, 1_200)
    assert limiter.remaining("k", "free")["tokens_per_day"] == approx(48_800, 5)
    assert limiter.remaining("k", "free")["requests_per_minute"] == approx(9, 0.5)  # the request stays used


def test_settle_charges_extra_and_may_go_negative(backend: Backend, approx: Approx) -> None:
    """settle with more tokens than estimated charges the difference, below zero if need be; the next call waits."""
    limiter = backend.make(DEFAULT_TIERS)
    permit = limiter.acquire("k", "free", 1_000)
    limiter.settle(permit, 60_000)
    assert limiter.remaining("k", "free")["tokens_per_day"] == approx(-10_000, 5)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "free", 0)  # even a call estimated at 0 tokens waits for the debt to clear
    assert info.value.limit == "tokens_per_day"
    assert info.value.retry_after == approx(10_000 / (50_000 / 86_400), 10.0)  # 17280 s


def test_refund_never_fills_past_capacity(backend: Backend) -> None:
    """A refund on a bucket that refilled meanwhile stops at capacity."""
    limiter = backend.make(PER_MINUTE)
    permit = limiter.acquire("k", "minute", 300)
    backend.pass_time(0.2)
    limiter.settle(permit, 0)
    assert limiter.remaining("k", "minute")["tokens_per_minute"] == pytest.approx(600)


async def test_async_acquire_and_settle(backend: Backend, approx: Approx) -> None:
    """aacquire/asettle follow the same rules as their sync twins."""
    limiter = backend.make(DEFAULT_TIERS)
    try:
        permit = await limiter.aacquire("k", "free", 2_000)
        await limiter.asettle(permit, 500)
        left = await limiter.aremaining("k", "free")
        assert left["tokens_per_day"] == approx(49_500, 5)
        for _ in range(9):
            await limiter.aacquire("k", "free", 1)
        with pytest.raises(RateLimitExceeded) as info:
            await limiter.aacquire("k", "free", 1)
        assert info.value.limit == "requests_per_minute"
        await limiter.areset("k")
        await limiter.aacquire("k", "free", 1)
    finally:
        await limiter.aclose()


def test_oversized_call_can_never_pass(backend: Backend) -> None:
    """An estimate above a token capacity is refused with retry_after = inf, and nothing is reserved."""
    limiter = backend.make(DEFAULT_TIERS)
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "free", 50_001)
    assert info.value.limit == "tokens_per_day"
    assert math.isinf(info.value.retry_after)
    assert "can never pass" in str(info.value)
    assert limiter.remaining("k", "free")["requests_per_minute"] == pytest.approx(10)


def test_on_rejection_hook_sees_every_rejection(backend: Backend) -> None:
    """on_rejection is called with each RateLimitExceeded before it is raised; a failing hook changes nothing."""
    seen: list[RateLimitExceeded] = []
    limiter = backend.make(DEFAULT_TIERS, on_rejection=seen.append)
    burst(limiter, "k", "free")
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "free")
    assert seen[-1] is info.value and len(seen) == 2

    def broken(exc: RateLimitExceeded) -> None:
        raise RuntimeError("metrics down")

    limiter2 = backend.make(DEFAULT_TIERS, on_rejection=broken)
    burst(limiter2, "other", "free")
    with pytest.raises(RateLimitExceeded):
        limiter2.acquire("other", "free")


def test_tier_upgrade_keeps_tokens(backend: Backend) -> None:
    """free -> pro: the key keeps the requests it had left; capacity and refill are pro's from the next call."""
    limiter = backend.make(DEFAULT_TIERS)
    for _ in range(7):
        limiter.acquire("k", "free")
    assert burst(limiter, "k", "pro") == 3  # 3 left, not a fresh 60
    limiter.reset("k")
    assert limiter.remaining("k", "pro")["requests_per_minute"] == pytest.approx(60)


def test_tier_downgrade_caps_tokens(backend: Backend) -> None:
    """pro -> free: the tokens left are capped at free's capacity."""
    limiter = backend.make(DEFAULT_TIERS)
    for _ in range(20):
        limiter.acquire("k", "pro", 1_000)  # 40 requests and 480k tokens left on pro
    assert burst(limiter, "k", "free") == 10
    assert limiter.remaining("k", "free")["tokens_per_day"] == pytest.approx(50_000, abs=1)


def test_settle_after_a_tier_change_keeps_the_new_tier(backend: Backend, approx: Approx) -> None:
    """A call acquired on the old tier and settled after the key moved up does not move the key back."""
    tiers = {
        "small": Tier("small", requests_per_minute=1_000, tokens_per_minute=100),
        "big": Tier("big", requests_per_minute=1_000, tokens_per_minute=60_000),  # 1000 tokens/s
    }
    limiter = backend.make(tiers)
    permit = limiter.acquire("k", "small", 100)  # small is empty now
    limiter.acquire("k", "big", 0)  # the key moves up; its tokens refill at big's rate
    backend.pass_time(0.2)
    limiter.settle(permit, 0)  # the 100 reserved on small come back: on big, not capped at small's 100
    left = limiter.remaining("k", "big")["tokens_per_minute"]
    assert (
        left >= 300 - 1e-6
    )  # 100 back plus 0.2 s or more of refill at 1000/s; capped at 100 it would be 100
    if backend.exact:
        assert left == pytest.approx(300)


def test_tier_that_adds_a_limit_starts_it_full(backend: Backend) -> None:
    """A limit the old tier did not set starts full; a limit the new tier drops stops counting."""
    tiers = {
        "daily": Tier("daily", requests_per_minute=100, tokens_per_day=1_000),
        "minute": Tier("minute", requests_per_minute=100, tokens_per_minute=300),
    }
    limiter = backend.make(tiers)
    limiter.acquire("k", "daily", 900)
    limiter.acquire("k", "minute", 300)  # tokens/min starts full; tokens/day is not this tier's
    back = limiter.remaining("k", "daily")["tokens_per_day"]
    assert back == pytest.approx(1_000, abs=1)  # dropped while on "minute", so full again


def test_unknown_tier_names_known_ones(backend: Backend) -> None:
    """An unknown tier is a ValueError that lists the configured tiers."""
    limiter = backend.make(DEFAULT_TIERS)
    with pytest.raises(ValueError, match="'gold'.*enterprise, free, pro"):
        limiter.acquire("k", "gold", 1)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_bad_estimates_are_value_errors(backend: Backend, bad: float) -> None:
    """Negative, NaN or infinite token counts are ValueErrors, for acquire and settle alike."""
    limiter = backend.make(DEFAULT_TIERS)
    with pytest.raises(ValueError, match="estimated_tokens"):
        limiter.acquire("k", "free", bad)
    permit = limiter.acquire("k", "free", 1)
    with pytest.raises(ValueError, match="actual_tokens"):
        limiter.settle(permit, bad)


def test_keys_are_independent(backend: Backend) -> None:
    """Each key has its own buckets."""
    limiter = backend.make(DEFAULT_TIERS)
    assert burst(limiter, "user:a", "free") == 10
    assert burst(limiter, "user:b", "free") == 10
    assert burst(limiter, "tenant:a", "free") == 10
