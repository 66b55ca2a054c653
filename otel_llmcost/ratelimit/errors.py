"""Errors the rate limiter raises on purpose: each says what happened and what to do."""

from __future__ import annotations

import math

from ..errors import CallRefused, LLMCostError


class RateLimitError(LLMCostError):
    """Base of the rate limiter's errors."""


class RateLimitExceeded(RateLimitError, CallRefused):
    """A call was refused: one of its tier's buckets has no room for it now.

    Attributes:
        key: the rate-limited key (user, tenant, API key, ...).
        tier: the tier the call was checked against.
        limit: which limit refused it: ``"requests_per_minute"``, ``"tokens_per_minute"`` or
            ``"tokens_per_day"``. When several refuse, the one that frees up last.
        retry_after: seconds until every bucket of the tier has room for the same call (rounded up to
            the microsecond); ``math.inf`` when the call asks for more tokens than the limit holds
            at all, so it can never pass on this tier.
        requested: what the call asked of that limit (1 request, or its estimated tokens).
        capacity: the size of that limit (requests or tokens per period).
    """

    def __init__(
        self,
        *,
        key: str,
        tier: str,
        limit: str,
        retry_after: float,
        requested: float,
        capacity: float,
    ) -> None:
        self.key = key
        self.tier = tier
        self.limit = limit
        self.retry_after = retry_after
        self.requested = requested
        self.capacity = capacity
        # The message is written when asked for (str, repr, logging): a refusal costs no formatting.
        super().__init__()

    def __str__(self) -> str:
        return self._message()

    def __repr__(self) -> str:
        return f"RateLimitExceeded({self._message()!r})"

    def _message(self) -> str:
        what = "requests" if self.limit.startswith("requests") else "tokens"
        per = self.limit.rsplit("_", 1)[-1]
        head = f"rate limit exceeded for key {self.key!r} on tier {self.tier!r}"
        if math.isinf(self.retry_after):
            return (
                f"{head}: the call asks for {_num(self.requested)} {what}, more than {self.limit} allows "
                f"at all ({_num(self.capacity)} {what} per {per}); it can never pass on this tier: "
                f"lower the estimate, split the call or use a larger tier"
            )
        asked = "another request" if what == "requests" else f"{_num(self.requested)} more tokens"
        return (
            f"{head}: {self.limit} ({_num(self.capacity)} {what} per {per}) has no room for {asked}; "
            f"retry after {self.retry_after:.3f} s"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor: tell pickle how to rebuild (errors cross process boundaries).
        return (_rebuild, (self.key, self.tier, self.limit, self.retry_after, self.requested, self.capacity))


def _rebuild(
    key: str, tier: str, limit: str, retry_after: float, requested: float, capacity: float
) -> RateLimitExceeded:
    return RateLimitExceeded(
        key=key, tier=tier, limit=limit, retry_after=retry_after, requested=requested, capacity=capacity
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class RateLimitStorageError(RateLimitError, CallRefused):
    """The rate-limit storage (e.g. Redis) could not be reached or answered with an error.

    Raised by the storages; the limiter lets it through only with ``on_storage_error="closed"``
    (with ``"open"`` it allows the call and logs one warning per outage). `uri` names the storage.
    """

    def __init__(self, message: str, *, uri: str) -> None:
        self.uri = uri
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_storage_error, (str(self), self.uri))


def _rebuild_storage_error(message: str, uri: str) -> RateLimitStorageError:
    return RateLimitStorageError(message, uri=uri)
