"""The memory limiter's one-frame fast path decides exactly as the reference arithmetic in `bucket`."""

from __future__ import annotations

import asyncio
import random

import pytest

from otel_llmcost.ratelimit import Permit, RateLimiter, RateLimitExceeded, Tier, bucket
from otel_llmcost.ratelimit.storage import MemoryStorage

from .helpers import FakeClock

TIERS = [
    Tier("a", requests_per_minute=5, tokens_per_day=2_000),
    Tier("b", requests_per_minute=20, tokens_per_minute=300, tokens_per_day=5_000),
    Tier("c", tokens_per_minute=100),
    Tier("d"),
]


@pytest.mark.parametrize("seed", range(20))
def test_memory_fast_path_matches_reference(seed: int) -> None:
    """Random calls, settlements, tier changes and waits give the same decisions and levels as `bucket`."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(TIERS, "memory://", clock=clock)
    assert limiter.acquire.__qualname__ == "RateLimiter.acquire"  # the fast path is in use
    plans = limiter._plans
    state: list[object] | None = None
    refused = 0
    for _ in range(400):
        tier = rng.choice(TIERS).name if rng.random() < 0.1 else TIERS[seed % 3].name
        plan = plans[tier]
        now = clock.now
        if state is None:
            state = bucket.new_state(now, plan)
        if rng.random() < 0.2:
            tokens = rng.choice([0, 10, 100])
            actual = rng.uniform(0, 400)
            try:
                permit = limiter.acquire("k", tier, tokens)
            except RateLimitExceeded:
                assert bucket.take(state, plan, tokens, now) is not None
                refused += 1
            else:
                assert bucket.take(state, plan, tokens, now) is None
                limiter.settle(permit, actual)
                bucket.settle(state, actual - tokens, now)
        else:
            tokens = rng.choice([0, 1, 10, 99.5, 250, 1_000])
            # more than a bucket ever holds is refused up front, the state untouched
            want = bucket.take(state, plan, tokens, now) if tokens <= plan.max_tokens else (-1, bucket.INF)
            try:
                permit = limiter.acquire("k", tier, tokens)
            except RateLimitExceeded as exc:
                assert want is not None, "refused where the reference takes"
                slot, wait = want
                if slot >= 0:
                    assert exc.limit == ("requests_per_minute", "tokens_per_minute", "tokens_per_day")[slot]
                assert exc.retry_after == bucket.retry_after(wait)
                refused += 1
            else:
                assert want is None, f"granted where the reference refuses: {want}"
                assert permit == (("k", tier, tokens, True))
        got = limiter.remaining("k", tier)
        levels = bucket.levels(state, plan, now)
        expected = {name: level for name, level, cap in zip(
            ("requests_per_minute", "tokens_per_minute", "tokens_per_day"), levels, plan.capacities, strict=True
        ) if cap < bucket.INF}  # fmt: skip
        assert got == pytest.approx(expected, rel=1e-12)
        clock.advance(rng.choice([0.0, 0.0, 0.05, 1.0, 7.5, 60.0]))
    assert refused > 0  # the walk reached the limits


def test_storage_acquire_is_the_reference() -> None:
    """MemoryStorage.acquire (used directly, outside the limiter) decides as bucket.take too."""
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    plan = bucket.BucketPlan.from_tier(TIERS[0])
    results = [storage.acquire("k", plan, 100) for _ in range(6)]
    assert results[:5] == [None] * 5
    assert results[5] == (0, pytest.approx(12.0))  # 5 requests a minute: one back every 12 s


def test_fast_path_keeps_the_limiter_contract() -> None:
    """The one-frame acquire (and aacquire) of memory:// give the same errors and hooks as the generic path."""
    seen: list[RateLimitExceeded] = []
    limiter = RateLimiter(TIERS, "memory://", clock=FakeClock(), on_rejection=seen.append)
    with pytest.raises(ValueError, match="unknown rate-limit tier 'zz'; known tiers: a, b, c, d"):
        limiter.acquire("k", "zz")
    with pytest.raises(ValueError, match="estimated_tokens must be a number"):
        limiter.acquire("k", "a", "many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite number >= 0"):
        limiter.acquire("k", "a", -1)
    with pytest.raises(RateLimitExceeded) as too_big:
        limiter.acquire("k", "a", 2_001)
    assert too_big.value.retry_after == float("inf")
    for _ in range(5):
        asyncio.run(limiter.aacquire("k", "a", 1))
    with pytest.raises(RateLimitExceeded) as info:
        limiter.acquire("k", "a", 1)
    assert info.value.limit == "requests_per_minute"
    assert seen == [too_big.value, info.value]
    assert "retry after 12.000 s" in str(info.value)


@pytest.mark.parametrize(
    ("actual", "message"),
    [
        (-1, "finite number >= 0"),
        (float("nan"), "finite number >= 0"),
        ("9", "must be a number"),
        (True, "number"),
    ],
)
def test_fast_settle_refuses_bad_token_counts(actual: object, message: str) -> None:
    """The one-frame settle of memory:// refuses what the generic one refuses, with the same message."""
    limiter = RateLimiter(TIERS, "memory://", clock=FakeClock())
    assert limiter.settle.__qualname__ == "RateLimiter.settle"  # the fast path is in use
    permit = limiter.acquire("k", "a", 10)
    with pytest.raises(ValueError, match=message):
        limiter.settle(permit, actual)  # type: ignore[arg-type]
    assert limiter.remaining("k", "a")["tokens_per_day"] == 1_990  # nothing was applied


def test_fast_settle_skips_unreserved_and_unknown() -> None:
    """Settling an unreserved permit does nothing; a permit of a tier the limiter does not know is a ValueError."""
    limiter = RateLimiter(TIERS, "memory://", clock=FakeClock())
    limiter.settle(Permit("k", "a", 10, False), 500)
    assert limiter.remaining("k", "a")["tokens_per_day"] == 2_000
    limiter.settle(Permit("k", "a", 10, True), 10.0)  # no difference: nothing to do
    with pytest.raises(ValueError, match="unknown rate-limit tier 'zz'"):
        limiter.settle(Permit("k", "zz", 10, True), 20)
