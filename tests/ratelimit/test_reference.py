"""The memory storage's inlined hot path decides exactly as the reference arithmetic in `bucket`."""

from __future__ import annotations

import random

import pytest

from otel_llmcost.ratelimit import Tier, bucket
from otel_llmcost.ratelimit.bucket import BucketPlan
from otel_llmcost.ratelimit.storage import MemoryStorage

from .helpers import FakeClock

PLANS = [
    BucketPlan.from_tier(Tier("a", requests_per_minute=5, tokens_per_day=2_000)),
    BucketPlan.from_tier(Tier("b", requests_per_minute=20, tokens_per_minute=300, tokens_per_day=5_000)),
    BucketPlan.from_tier(Tier("c", tokens_per_minute=100)),
    BucketPlan.from_tier(Tier("d")),
]


@pytest.mark.parametrize("seed", range(20))
def test_memory_matches_reference(seed: int) -> None:
    """Random calls, settlements, tier changes and waits give the same decisions and levels on both."""
    rng = random.Random(seed)
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    state: list[object] | None = None
    for _ in range(400):
        plan = rng.choice(PLANS) if rng.random() < 0.1 else PLANS[seed % 3]
        now = clock.now
        if state is None:
            state = bucket.new_state(now, plan)
        if rng.random() < 0.2:
            delta = rng.uniform(-200, 400)
            storage.settle("k", plan, delta)
            bucket.settle(state, delta, now)
        else:
            tokens = rng.choice([0, 1, 10, 99.5, 250, 1_000])
            got = storage.acquire("k", plan, tokens)
            want = bucket.take(state, plan, tokens, now)
            assert got == want
        assert storage.peek("k", plan) == pytest.approx(bucket.levels(state, plan, now), rel=1e-12)
        clock.advance(rng.choice([0.0, 0.0, 0.05, 1.0, 7.5, 60.0]))
