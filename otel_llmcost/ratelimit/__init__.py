"""Rate limits per key and tier: token buckets for requests per minute, tokens per minute and tokens
per day, in memory or shared through Redis.

    from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimiter, RateLimitExceeded

    limiter = RateLimiter(DEFAULT_TIERS, "redis://localhost:6379/0")
    try:
        permit = limiter.acquire("user:42", "free", estimated_tokens=1_200)
    except RateLimitExceeded as exc:
        ...  # exc.limit, exc.retry_after
    else:
        response = call_the_model()
        limiter.settle(permit, actual_tokens=response.usage.total_tokens)

Strategy (`bucket`) apart from storage (`storage`, chosen by URI): see `RateLimiter` for the rules.
"""

from __future__ import annotations

from .errors import RateLimitError, RateLimitExceeded, RateLimitStorageError
from .limiter import Permit, RateLimiter
from .storage import RateLimitStorage, register_storage, storage_from_uri
from .tiers import DEFAULT_TIERS, LIMIT_NAMES, Tier, load_tiers

__all__ = [
    "DEFAULT_TIERS",
    "LIMIT_NAMES",
    "Permit",
    "RateLimitError",
    "RateLimitExceeded",
    "RateLimitStorage",
    "RateLimitStorageError",
    "RateLimiter",
    "Tier",
    "load_tiers",
    "register_storage",
    "storage_from_uri",
]
