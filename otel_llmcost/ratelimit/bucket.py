"""The token-bucket strategy: a tier's buckets and the arithmetic every storage follows.

Each key has up to three buckets, one per limit of its tier (`LIMIT_NAMES`): requests per minute,
tokens per minute, tokens per day. A bucket holds at most its capacity and refills continuously at
``capacity / period`` per second. A call takes 1 from the requests bucket and its estimated tokens
from each token bucket, from all of them or from none. A limit the tier does not set is a bucket of
infinite level, so the same three-slot state serves every tier and a change of tier keeps the tokens
a key has (capped at the new capacity) while a newly enforced limit starts full.

`settle` may take a token bucket below zero when a call used more than it reserved: the bucket then
refills from below zero and the key's next call waits until there is room again.

This module holds the reference arithmetic in Python, used by the memory storage; the Redis storage
runs the same steps in Lua (``storage/lua/bucket.lua``). State is a list ``[t, level0, level1, level2,
plan]``: the time of the last update (seconds, the storage's clock), the three levels as they were
then, and the plan they were kept under (a key whose tier changed is rebased on its next call).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from .tiers import LIMIT_NAMES, Tier

INF = math.inf
#: Seconds per period of each limit, in slot order.
PERIODS: tuple[float, float, float] = (60.0, 60.0, 86_400.0)
#: Float slack when comparing a level with a cost, so waiting exactly `retry_after` is enough.
TOLERANCE = 1e-9

#: What a refused take returns: (slot of the limit that frees up last, seconds until all have room).
Rejection = tuple[int, float]
#: Per-key state kept by a storage: [t, level0, level1, level2, plan].
State = list[Any]


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """A tier compiled for the hot path: capacities and refill rates per slot, as plain floats."""

    tier: str
    capacities: tuple[float, float, float]
    rates: tuple[float, float, float]
    #: capacities then rates, unpacked in one step by the memory storage
    vector: tuple[float, float, float, float, float, float] = field(repr=False)
    #: the most tokens one call may ask for: the smaller token capacity (the largest float when
    #: none, so that an infinite estimate still fails the limiter's range check)
    max_tokens: float = field(repr=False)
    #: the tier's limits for the Lua script: capacity and period per slot joined by spaces
    #: (capacity -1: no limit); a key's state in Redis is kept under it
    signature: str = field(repr=False)

    @classmethod
    def from_tier(cls, tier: Tier) -> BucketPlan:
        caps = tuple(
            float(value) if (value := getattr(tier, name)) is not None else INF for name in LIMIT_NAMES
        )
        rates = tuple(0.0 if cap == INF else cap / period for cap, period in zip(caps, PERIODS, strict=True))
        words: list[str] = []
        for cap, period in zip(caps, PERIODS, strict=True):
            words += ["-1", "0"] if cap == INF else [repr(cap), repr(period)]
        c0, c1, c2 = caps
        r0, r1, r2 = rates
        return cls(
            tier=tier.name,
            capacities=(c0, c1, c2),
            rates=(r0, r1, r2),
            vector=(c0, c1, c2, r0, r1, r2),
            max_tokens=min(c1, c2, sys.float_info.max),
            signature=" ".join(words),
        )


def new_state(now: float, plan: BucketPlan) -> State:
    """The state of a key never seen (or forgotten because full): every bucket full."""
    return [now, INF, INF, INF, plan]


def take(state: State, plan: BucketPlan, tokens: float, now: float) -> Rejection | None:
    """Refill to `now`, then take 1 request and `tokens` tokens from every bucket, or nothing.

    Returns None when taken (state updated), or the `Rejection` (state unchanged).
    """
    if state[4] is not plan:
        rebase(state, plan, now)
    c0, c1, c2, r0, r1, r2 = plan.vector
    elapsed = now - state[0]
    if elapsed < 0.0:  # a clock that went back refills nothing, and t never moves back
        elapsed = 0.0
        now = state[0]
    level0 = state[1] + elapsed * r0
    if level0 > c0:
        level0 = c0
    level1 = state[2] + elapsed * r1
    if level1 > c1:
        level1 = c1
    level2 = state[3] + elapsed * r2
    if level2 > c2:
        level2 = c2
    need = tokens - TOLERANCE
    if level0 >= 1.0 - TOLERANCE and level1 >= need and level2 >= need:
        state[0] = now
        state[1] = level0 - 1.0
        state[2] = level1 - tokens
        state[3] = level2 - tokens
        return None
    return rejection((level0, level1, level2), plan, tokens)


def rejection(levels: tuple[float, float, float], plan: BucketPlan, tokens: float) -> Rejection:
    """The limit that frees up last for this call, and the seconds until every bucket has room."""
    level0, level1, level2 = levels
    r0, r1, r2 = plan.rates
    slot, wait = 0, 0.0
    # A short bucket is a limited one, so its rate is > 0.
    if level0 < 1.0 - TOLERANCE and (1.0 - level0) / r0 > wait:
        slot, wait = 0, (1.0 - level0) / r0
    if level1 < tokens - TOLERANCE and (tokens - level1) / r1 > wait:
        slot, wait = 1, (tokens - level1) / r1
    if level2 < tokens - TOLERANCE and (tokens - level2) / r2 > wait:
        slot, wait = 2, (tokens - level2) / r2
    return slot, wait


def refill(state: State, plan: BucketPlan, now: float) -> tuple[float, float, float]:
    """The three levels at `now` under `plan`, which must be the state's own plan
    (infinite for limits the plan does not set); state unchanged."""
    elapsed = max(0.0, now - state[0])
    c0, c1, c2, r0, r1, r2 = plan.vector
    return (
        min(c0, state[1] + elapsed * r0),
        min(c1, state[2] + elapsed * r1),
        min(c2, state[3] + elapsed * r2),
    )


def settle(state: State, delta_tokens: float, now: float) -> None:
    """Charge `delta_tokens` more (positive) or refund (negative) on the token buckets.

    Applied under the plan the key is kept under now (a call settled after its key changed tier
    does not move the key back). A refund never fills a bucket beyond its capacity; a charge may
    take it below zero.
    """
    plan: BucketPlan = state[4]
    level0, level1, level2 = refill(state, plan, now)
    state[0] = max(now, state[0])
    state[1] = level0
    state[2] = min(plan.capacities[1], level1 - delta_tokens)
    state[3] = min(plan.capacities[2], level2 - delta_tokens)


def rebase(state: State, plan: BucketPlan, now: float) -> None:
    """Move a key to another tier's plan at `now` (its tier changed since its last call).

    The levels are refilled to `now` under the plan they were kept under, then capped at the new
    capacities; a limit the new plan does not set becomes an infinite level (no limit), and a limit
    the old plan did not set starts full.
    """
    old: BucketPlan = state[4]
    if old.vector != plan.vector:
        levels = refill(state, old, now)
        if now > state[0]:
            state[0] = now
        for slot, cap in enumerate(plan.capacities):
            state[slot + 1] = INF if cap == INF else min(cap, levels[slot])
    state[4] = plan


def levels(state: State, plan: BucketPlan, now: float) -> tuple[float, float, float]:
    """The three levels at `now` as `plan` sees them (whatever plan the state was kept under)."""
    if state[4] is not plan:
        state = list(state)
        rebase(state, plan, now)
    return refill(state, plan, now)


def full_in(state: State, now: float) -> float:
    """Seconds until every bucket of the state is full again under the plan it was last used with."""
    plan: BucketPlan = state[4]
    levels = refill(state, plan, now)
    wait = 0.0
    for level, cap, rate in zip(levels, plan.capacities, plan.rates, strict=True):
        if level < cap:
            wait = max(wait, (cap - level) / rate)
    return wait


def retry_after(seconds: float) -> float:
    """`seconds` rounded up to the microsecond, so that waiting it is always enough (inf stays inf)."""
    return math.ceil(seconds * 1e6) / 1e6 if seconds < INF else INF
