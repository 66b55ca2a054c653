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

    # `RateLimiter.acquire` does not come here: it runs the same decision in one frame (`fastpath`).
    def acquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        now = self._clock()
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._add(key, plan, now)
            return bucket.take(state, plan, tokens, now)

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
