"""`RateLimiter.acquire` and `settle` for ``memory://``, each in one Python frame.

A decision in memory costs about as much as a handful of Python calls, so every hop between the
limiter and the storage, and every helper call, is a sizeable share of it. A limiter whose storage is
exactly a `MemoryStorage` therefore uses the closure made here as its `acquire`: it checks the
arguments as `RateLimiter.acquire` does, reads the storage's clock, takes the storage's lock and runs
`bucket.take` written out in place; refusals and bad arguments go to the limiter's own slow paths, so
messages, hooks and errors are the same. `settle` is written out the same way (`bucket.settle`).
The memory storage never fails, so there is no outage policy to apply.
`tests/ratelimit/test_reference.py` checks that both give the decisions and levels of `bucket`.

Counted with valgrind (instructions per granted decision, CPython 3.11, load-independent): the
limiter's method calling the storage's method took ~8.8k; this frame takes ~7.7k. Within it, the
lock is taken and released by hand (``with`` costs ~1k more: its exit call builds an argument tuple),
a known key is read by subscript rather than ``dict.get``, and the `Permit` is built by
``tuple.__new__`` (~1.3k; the NamedTuple's own constructor costs twice that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from . import bucket

if TYPE_CHECKING:
    from .limiter import Permit, RateLimiter
    from .storage.memory import MemoryStorage


class Acquire(Protocol):
    def __call__(self, key: str, tier: str, estimated_tokens: float = 0) -> Permit: ...


class AsyncAcquire(Protocol):
    def __call__(self, key: str, tier: str, estimated_tokens: float = 0) -> Coroutine[Any, Any, Permit]: ...


class Settle(Protocol):
    def __call__(self, permit: Permit, actual_tokens: float) -> None: ...


def memory_acquire(limiter: RateLimiter, storage: MemoryStorage, permit_type: type) -> Acquire:
    """`limiter.acquire` on `storage`, written out in one frame (see the module doc)."""
    plans = limiter._plans
    unknown_tier = limiter._unknown_tier
    bad_estimate = limiter._bad_estimate
    reject = limiter._reject
    states = storage._states
    lock = storage._lock
    clock = storage._clock
    add = storage._add
    rebase = bucket.rebase
    rejection = bucket.rejection
    tolerance = bucket.TOLERANCE
    one = 1.0 - tolerance
    new_permit: Any = tuple.__new__  # a NamedTuple's own constructor runs Python code; this is C

    def acquire(key: str, tier: str, estimated_tokens: float = 0) -> Permit:
        try:
            plan = plans[tier]
            in_range = 0 <= estimated_tokens <= plan.max_tokens
        except KeyError:
            raise unknown_tier(tier) from None
        except TypeError:  # not a number at all: `_bad_estimate` says so
            in_range = False
        if not in_range:
            raise bad_estimate(key, plan, estimated_tokens)
        now = clock()
        lock.acquire()
        try:
            try:
                state = states[key]
            except KeyError:
                state = add(key, plan, now)
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
            need = estimated_tokens - tolerance
            if level0 >= one and level1 >= need and level2 >= need:
                state[0] = now
                state[1] = level0 - 1.0
                state[2] = level1 - estimated_tokens
                state[3] = level2 - estimated_tokens
                return new_permit(permit_type, (key, tier, estimated_tokens, True))
            refused = rejection((level0, level1, level2), plan, estimated_tokens)
        finally:
            lock.release()
        raise reject(key, plan, estimated_tokens, refused)

    acquire.__doc__ = type(limiter).acquire.__doc__
    acquire.__qualname__ = "RateLimiter.acquire"
    return acquire


def memory_aacquire(acquire: Acquire) -> AsyncAcquire:
    """`limiter.aacquire` on a memory storage: the same decision (memory never blocks)."""

    async def aacquire(key: str, tier: str, estimated_tokens: float = 0) -> Permit:
        return acquire(key, tier, estimated_tokens)

    aacquire.__qualname__ = "RateLimiter.aacquire"
    return aacquire


def memory_settle(limiter: RateLimiter, storage: MemoryStorage, check: Callable[[str, Any], None]) -> Settle:
    """`limiter.settle` on `storage`, written out in one frame: `bucket.settle` in place.

    `check` is the limiter's check of a token count, called only for a value that is not a plain
    finite int or float >= 0 (it raises the limiter's `ValueError`, or accepts e.g. a numpy float).
    """
    plans = limiter._plans
    unknown_tier = limiter._unknown_tier
    states = storage._states
    lock = storage._lock
    clock = storage._clock
    new_state = bucket.new_state
    isfinite = math.isfinite

    def settle(permit: Permit, actual_tokens: float) -> None:
        kind = actual_tokens.__class__
        if (kind is not int and kind is not float) or not isfinite(actual_tokens) or actual_tokens < 0:
            check("actual_tokens", actual_tokens)
        delta = actual_tokens - permit[2]
        if delta == 0 or not permit[3]:  # nothing to correct, or nothing was reserved
            return
        try:
            plan = plans[permit[1]]
        except KeyError:
            raise unknown_tier(permit[1]) from None
        key = permit[0]
        now = clock()
        lock.acquire()
        try:
            try:
                state = states[key]
            except KeyError:
                state = states[key] = new_state(now, plan)
            # under the plan the key is kept under now (see `bucket.settle`)
            c0, c1, c2, r0, r1, r2 = state[4].vector
            elapsed = now - state[0]
            if elapsed < 0.0:
                elapsed = 0.0
                now = state[0]
            level0 = state[1] + elapsed * r0
            if level0 > c0:
                level0 = c0
            level1 = state[2] + elapsed * r1
            if level1 > c1:
                level1 = c1
            level1 -= delta
            if level1 > c1:
                level1 = c1
            level2 = state[3] + elapsed * r2
            if level2 > c2:
                level2 = c2
            level2 -= delta
            if level2 > c2:
                level2 = c2
            state[0] = now
            state[1] = level0
            state[2] = level1
            state[3] = level2
        finally:
            lock.release()

    settle.__doc__ = type(limiter).settle.__doc__
    settle.__qualname__ = "RateLimiter.settle"
    return settle
