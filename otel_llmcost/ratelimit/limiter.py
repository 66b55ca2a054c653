"""`RateLimiter`: acquire before an LLM call, settle after it.

    limiter = RateLimiter(DEFAULT_TIERS, "redis://localhost:6379/0")
    permit = limiter.acquire("user:42", "free", estimated_tokens=1_200)   # or raises RateLimitExceeded
    response = client.chat.completions.create(...)
    limiter.settle(permit, actual_tokens=response.usage.total_tokens)

`acquire` checks every bucket of the key's tier (requests per minute, tokens per minute, tokens per
day) and reserves 1 request and the estimated tokens on all of them at once, or on none.
`settle` corrects the reservation with the real usage: unused tokens go back, extra tokens are charged,
which may take a bucket below zero so that the key's next call waits (its `retry_after` says how long).
The async twins `aacquire` / `asettle` do the same from asyncio code.

The key is any string that names who is limited: a user, a tenant, an API key, any attribution
attribute. A key's tier is whatever the call says; a key moved to another tier keeps its tokens, up to
the new capacity, from its next call on.

When the storage fails (Redis gone), ``on_storage_error="open"`` (default) lets calls through,
logging one warning per outage and counting them in `storage_errors`; ``"closed"`` raises
`RateLimitStorageError`. After a failure the storage is left alone for `storage_retry_interval`
seconds (calls are decided by the policy at once), then tried again; the first success ends the outage.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from . import bucket, fastpath
from .bucket import BucketPlan, Rejection
from .errors import RateLimitExceeded, RateLimitStorageError
from .storage import MemoryStorage, RateLimitStorage, storage_from_uri
from .storage.base import redact
from .tiers import LIMIT_NAMES, Tier, TiersConfig, load_tiers

_log = logging.getLogger("otel_llmcost.ratelimit")

StoragePolicy = Literal["open", "closed"]


class Permit(NamedTuple):
    """A granted call, to hand back to `RateLimiter.settle` once its real usage is known.

    Settle each permit once: a second settle would count the difference again.
    """

    key: str
    tier: str
    estimated_tokens: float
    #: False when granted without the storage (``on_storage_error="open"`` during an outage):
    #: nothing was reserved, and settling it does nothing.
    reserved: bool = True


# A NamedTuple's own constructor runs Python code; this makes the same tuple in C (the hot path).
_new_permit: Any = tuple.__new__


class RateLimiter:
    """Token buckets per key and tier (see the module doc).

    Args:
        tiers: the tiers by name (see `load_tiers`), e.g. `DEFAULT_TIERS`.
        storage_uri: ``memory://`` (this process) or ``redis://host:port/db`` (shared), see
            `storage_from_uri`.
        clock: seconds, monotonic, for the memory storage (tests pass a fake one); Redis uses the
            server's TIME and ignores it.
        on_storage_error: ``"open"`` allows calls while the storage is unreachable, ``"closed"``
            raises `RateLimitStorageError`.
        on_rejection: called with each `RateLimitExceeded` before it is raised (e.g. to count it);
            an exception from it is logged, never raised.
        storage_options: keyword options for the storage (e.g. ``key_prefix``, ``socket_timeout``).
        storage_retry_interval: seconds a failed storage is left alone before it is tried again.
    """

    def __init__(
        self,
        tiers: TiersConfig,
        storage_uri: str = "memory://",
        clock: Callable[[], float] | None = None,
        on_storage_error: StoragePolicy = "open",
        on_rejection: Callable[[RateLimitExceeded], None] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        storage_retry_interval: float = 1.0,
    ) -> None:
        if on_storage_error not in ("open", "closed"):
            raise ValueError(f"on_storage_error must be 'open' or 'closed', got {on_storage_error!r}")
        if storage_retry_interval < 0:
            raise ValueError(f"storage_retry_interval must be >= 0, got {storage_retry_interval!r}")
        self.tiers: dict[str, Tier] = load_tiers(tiers)
        self.storage: RateLimitStorage = storage_from_uri(
            storage_uri, clock=clock, **dict(storage_options or {})
        )
        self.on_storage_error: StoragePolicy = on_storage_error
        self.on_rejection = on_rejection
        #: decisions and settlements made without the storage because it failed
        self.storage_errors = 0
        self._plans: dict[str, BucketPlan] = {}
        for name, tier in self.tiers.items():
            self._plans[name] = BucketPlan.from_tier(tier)
        self._retry_interval = storage_retry_interval
        self._outage = False
        self._retry_at = 0.0
        self._outage_lock = threading.Lock()
        self._acquire = self.storage.acquire
        if type(self.storage) is MemoryStorage:  # the decision in one frame (see `fastpath`)
            self.acquire = fastpath.memory_acquire(self, self.storage, Permit)  # type: ignore[method-assign]
            self.aacquire = fastpath.memory_aacquire(self.acquire)  # type: ignore[method-assign]
            self.settle = fastpath.memory_settle(self, self.storage, _check_tokens)  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return (
            f"RateLimiter(tiers={sorted(self.tiers)}, storage={redact(self.storage.uri)!r}, "
            f"on_storage_error={self.on_storage_error!r})"
        )

    # -- sync --
    def acquire(self, key: str, tier: str, estimated_tokens: float = 0) -> Permit:
        """Reserve 1 request and `estimated_tokens` on every bucket of `tier` for `key`, or raise.

        Raises `RateLimitExceeded` (with `.limit`, `.retry_after`, ...) when a bucket has no room,
        `ValueError` for an unknown tier or a negative or non-finite estimate, and
        `RateLimitStorageError` only with ``on_storage_error="closed"``.
        """
        try:
            plan = self._plans[tier]
            in_range = 0 <= estimated_tokens <= plan.max_tokens
        except KeyError:
            raise self._unknown_tier(tier) from None
        except TypeError:  # not a number at all: `_bad_estimate` says so
            in_range = False
        if not in_range:
            raise self._bad_estimate(key, plan, estimated_tokens)
        if self._outage:
            return self._acquire_in_outage(key, plan, estimated_tokens)
        try:
            rejected = self._acquire(key, plan, estimated_tokens)
        except RateLimitStorageError as exc:
            return self._without_storage(key, tier, estimated_tokens, exc)
        if rejected is None:
            return _new_permit(Permit, (key, tier, estimated_tokens, True))
        raise self._reject(key, plan, estimated_tokens, rejected)

    def _acquire_in_outage(self, key: str, plan: BucketPlan, tokens: float) -> Permit:
        if time.monotonic() < self._retry_at:
            return self._without_storage(key, plan.tier, tokens, None)
        try:
            rejected = self._acquire(key, plan, tokens)
        except RateLimitStorageError as exc:
            return self._without_storage(key, plan.tier, tokens, exc)
        self._recovered()
        if rejected is None:
            return _new_permit(Permit, (key, plan.tier, tokens, True))
        raise self._reject(key, plan, tokens, rejected)

    def settle(self, permit: Permit, actual_tokens: float) -> None:
        """Correct `permit`'s reservation with the tokens the call really used.

        Fewer than estimated: the difference goes back (never past capacity). More: the difference
        is charged, possibly below zero, so the key's next call waits until the buckets recover.
        Does nothing for a permit granted without the storage (``permit.reserved`` false). When the
        storage fails, the correction is dropped (``"open"``) or `RateLimitStorageError` is raised
        (``"closed"``).
        """
        plan, delta = self._settlement(permit, actual_tokens)
        if plan is None:
            return
        if self._outage and time.monotonic() < self._retry_at:
            self._without_storage(permit.key, permit.tier, 0, None)
            return
        try:
            self.storage.settle(permit.key, plan, delta)
        except RateLimitStorageError as exc:
            self._without_storage(permit.key, permit.tier, 0, exc)
            return
        if self._outage:
            self._recovered()

    def remaining(self, key: str, tier: str) -> dict[str, float]:
        """What `key` has left now of each limit `tier` sets (may be negative after a charge)."""
        plan = self._plan(tier)
        return self._remaining(plan, self.storage.peek(key, plan))

    def reset(self, key: str) -> None:
        """Forget `key`: all its buckets are full again."""
        self.storage.reset(key)

    def close(self) -> None:
        """Close the storage's connections."""
        self.storage.close()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- asyncio --
    async def aacquire(self, key: str, tier: str, estimated_tokens: float = 0) -> Permit:
        """`acquire` for asyncio: the Redis storage awaits ``redis.asyncio``; memory never blocks."""
        try:
            plan = self._plans[tier]
            in_range = 0 <= estimated_tokens <= plan.max_tokens
        except KeyError:
            raise self._unknown_tier(tier) from None
        except TypeError:  # not a number at all: `_bad_estimate` says so
            in_range = False
        if not in_range:
            raise self._bad_estimate(key, plan, estimated_tokens)
        outage = self._outage
        if outage and time.monotonic() < self._retry_at:
            return self._without_storage(key, tier, estimated_tokens, None)
        try:
            rejected = await self.storage.aacquire(key, plan, estimated_tokens)
        except RateLimitStorageError as exc:
            return self._without_storage(key, tier, estimated_tokens, exc)
        if outage:
            self._recovered()
        if rejected is None:
            return _new_permit(Permit, (key, tier, estimated_tokens, True))
        raise self._reject(key, plan, estimated_tokens, rejected)

    async def asettle(self, permit: Permit, actual_tokens: float) -> None:
        """`settle` for asyncio."""
        plan, delta = self._settlement(permit, actual_tokens)
        if plan is None:
            return
        if self._outage and time.monotonic() < self._retry_at:
            self._without_storage(permit.key, permit.tier, 0, None)
            return
        try:
            await self.storage.asettle(permit.key, plan, delta)
        except RateLimitStorageError as exc:
            self._without_storage(permit.key, permit.tier, 0, exc)
            return
        if self._outage:
            self._recovered()

    async def aremaining(self, key: str, tier: str) -> dict[str, float]:
        """`remaining` for asyncio."""
        plan = self._plan(tier)
        return self._remaining(plan, await self.storage.apeek(key, plan))

    async def areset(self, key: str) -> None:
        """`reset` for asyncio."""
        await self.storage.areset(key)

    async def aclose(self) -> None:
        """`close` for asyncio."""
        await self.storage.aclose()

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- slow paths --
    def _plan(self, tier: str) -> BucketPlan:
        plan = self._plans.get(tier)
        if plan is None:
            raise self._unknown_tier(tier)
        return plan

    def _unknown_tier(self, tier: object) -> ValueError:
        return ValueError(f"unknown rate-limit tier {tier!r}; known tiers: {', '.join(sorted(self._plans))}")

    def _bad_estimate(self, key: str, plan: BucketPlan, tokens: Any) -> Exception:
        _check_tokens("estimated_tokens", tokens)
        # A valid estimate out of range is larger than a token bucket can ever hold.
        c1, c2 = plan.capacities[1], plan.capacities[2]
        slot = 1 if c1 <= c2 else 2
        return self._reject(key, plan, tokens, (slot, math.inf))

    def _reject(self, key: str, plan: BucketPlan, tokens: float, rejection: Rejection) -> RateLimitExceeded:
        slot, wait = rejection
        exc = RateLimitExceeded(
            key=key,
            tier=plan.tier,
            limit=LIMIT_NAMES[slot],
            retry_after=bucket.retry_after(wait),
            requested=tokens if slot else 1,
            capacity=plan.capacities[slot],
        )
        hook = self.on_rejection
        if hook is not None:
            try:
                hook(exc)
            except Exception:
                _log.exception("on_rejection hook %r failed; the rejection stands", hook)
        return exc

    def _settlement(self, permit: Permit, actual_tokens: float) -> tuple[BucketPlan | None, float]:
        _check_tokens("actual_tokens", actual_tokens)
        delta = actual_tokens - permit.estimated_tokens
        if not permit.reserved or delta == 0:
            return None, 0.0
        return self._plan(permit.tier), delta

    def _without_storage(
        self, key: str, tier: str, tokens: float, exc: RateLimitStorageError | None
    ) -> Permit:
        """Decide by the policy when the storage failed (`exc`) or is being left alone (None)."""
        with self._outage_lock:
            self.storage_errors += 1
            if exc is not None:  # only a failure postpones the next try, not the calls in between
                self._retry_at = time.monotonic() + self._retry_interval
            first = not self._outage
            self._outage = True
        if first:
            action = "allowing calls" if self.on_storage_error == "open" else "refusing calls"
            _log.warning(
                "rate-limit storage unavailable (%s); %s (on_storage_error=%r) until it answers again",
                exc,
                action,
                self.on_storage_error,
            )
        if self.on_storage_error == "closed":
            if exc is not None:
                raise exc
            uri = redact(self.storage.uri)
            raise RateLimitStorageError(
                f"rate-limit storage {uri} is unavailable (next try within {self._retry_interval:g} s); "
                f"on_storage_error='closed' refuses the call",
                uri=uri,
            )
        return _new_permit(Permit, (key, tier, tokens, False))

    def _recovered(self) -> None:
        with self._outage_lock:
            was_out = self._outage
            self._outage = False
        if was_out:
            _log.warning(
                "rate-limit storage answers again; limits are enforced (%d decisions were made without it)",
                self.storage_errors,
            )

    @staticmethod
    def _remaining(plan: BucketPlan, levels: tuple[float, float, float]) -> dict[str, float]:
        return {
            name: level
            for name, cap, level in zip(LIMIT_NAMES, plan.capacities, levels, strict=True)
            if cap < math.inf
        }


def _check_tokens(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of tokens, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
