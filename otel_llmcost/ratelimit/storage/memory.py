"""`memory://`: buckets in this process, safe across threads and asyncio tasks.

One `threading.Lock` guards the dict of states; it is held only for the arithmetic of one call and
never across an ``await``, so the async methods simply call the sync ones (an event loop never
blocks on it for longer than a decision takes). When a new key arrives and `sweep_interval` seconds
have passed since the last sweep, keys whose buckets are all full are dropped (a forgotten key is a
full key), so memory follows the number of keys in use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .. import bucket
from ..bucket import BucketPlan, Rejection, State

TOLERANCE = bucket.TOLERANCE
ONE = 1.0 - TOLERANCE


class MemoryStorage:
    """Token buckets in a dict; time from `clock` (default `time.monotonic`)."""

    def __init__(
        self,
        uri: str = "memory://",
        *,
        clock: Callable[[], float] | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        if sweep_interval <= 0:
            raise ValueError(f"sweep_interval must be positive, got {sweep_interval!r}")
        self.uri = uri
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._states: dict[str, State] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = self._clock() + sweep_interval

    def __len__(self) -> int:
        """Keys held now (full keys are dropped at the next sweep)."""
        return len(self._states)

    # The hot path: one clock read, one lock, one dict look-up and `bucket.take` written out in
    # place (a function call costs as much as the arithmetic here); `test_memory_matches_reference`
    # checks that both give the same decisions and levels.
    def acquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        now = self._clock()
        lock = self._lock
        lock.acquire()
        try:
            state = self._states.get(key)
            if state is None:
                state = self._add(key, plan, now)
            elif state[4] is not plan:
                bucket.rebase(state, plan, now)
            c0, c1, c2, r0, r1, r2 = plan.vector
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
            level2 = state[3] + elapsed * r2
            if level2 > c2:
                level2 = c2
            need = tokens - TOLERANCE
            if level0 >= ONE and level1 >= need and level2 >= need:
                state[0] = now
                state[1] = level0 - 1.0
                state[2] = level1 - tokens
                state[3] = level2 - tokens
                return None
            return bucket.rejection((level0, level1, level2), plan, tokens)
        finally:
            lock.release()

    def _add(self, key: str, plan: BucketPlan, now: float) -> State:
        # Called with the lock held. New keys are what makes the dict grow: sweep from here.
        if now >= self._next_sweep:
            self._sweep(now)
        state = self._states[key] = bucket.new_state(now, plan)
        return state

    def settle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        now = self._clock()
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = bucket.new_state(now, plan)
            bucket.settle(state, delta_tokens, now)

    def peek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        now = self._clock()
        with self._lock:
            state = self._states.get(key)
            return bucket.levels(state if state is not None else bucket.new_state(now, plan), plan, now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._states.clear()

    def _sweep(self, now: float) -> None:
        # Called with the lock held.
        self._next_sweep = now + self._sweep_interval
        full = [key for key, state in self._states.items() if bucket.full_in(state, now) <= 0.0]
        for key in full:
            del self._states[key]

    async def aacquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        return self.acquire(key, plan, tokens)

    async def asettle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        self.settle(key, plan, delta_tokens)

    async def apeek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        return self.peek(key, plan)

    async def areset(self, key: str) -> None:
        self.reset(key)

    async def aclose(self) -> None:
        self.close()
