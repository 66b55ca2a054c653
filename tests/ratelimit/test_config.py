"""Tiers from config, the storage registry, and the limiter's arguments."""

from __future__ import annotations

import pytest

from otel_llmcost.ratelimit import (
    DEFAULT_TIERS,
    Permit,
    RateLimiter,
    RateLimitExceeded,
    Tier,
    load_tiers,
    register_storage,
    storage_from_uri,
)
from otel_llmcost.ratelimit.storage import MemoryStorage, schemes
from otel_llmcost.ratelimit.storage.redis import load_script, redact

from .helpers import FakeClock


def test_default_tiers_are_the_lessons() -> None:
    """free/pro/enterprise: 50k/500k/5M tokens a day, 10/60/300 requests a minute, no tokens/min limit."""
    assert {n: t.limits() for n, t in DEFAULT_TIERS.items()} == {
        "free": {"requests_per_minute": 10, "tokens_per_day": 50_000},
        "pro": {"requests_per_minute": 60, "tokens_per_day": 500_000},
        "enterprise": {"requests_per_minute": 300, "tokens_per_day": 5_000_000},
    }


def test_load_tiers_from_config_mapping() -> None:
    """A YAML-shaped mapping becomes Tiers; a missing or null limit is not enforced."""
    tiers = load_tiers(
        {
            "free": {"requests_per_minute": 10, "tokens_per_day": 50_000},
            "pro": {"requests_per_minute": 60, "tokens_per_minute": 40_000, "tokens_per_day": None},
        }
    )
    assert tiers["free"] == Tier("free", requests_per_minute=10, tokens_per_day=50_000)
    assert tiers["pro"].limits() == {"requests_per_minute": 60, "tokens_per_minute": 40_000}


def test_load_tiers_from_tier_objects() -> None:
    """Tier objects are accepted as a list or as a mapping by name."""
    free = Tier("free", requests_per_minute=1)
    assert load_tiers([free]) == {"free": free}
    assert load_tiers({"free": free}) == {"free": free}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"free": {"tokens_per_hour": 5}}, "unknown limit 'tokens_per_hour'.*requests_per_minute"),
        ({"free": {"requests_per_minute": 0}}, "'free': requests_per_minute must be a positive number"),
        ({"free": {"tokens_per_day": -5}}, "tokens_per_day must be a positive number"),
        ({"free": {"tokens_per_day": "lots"}}, "tokens_per_day must be a positive number"),
        ({"free": {"tokens_per_day": True}}, "tokens_per_day must be a positive number"),
        ({"free": Tier("pro")}, "configured with a Tier named 'pro'"),
        ({"free": 10}, "expected a mapping of limits"),
        ({}, "no rate-limit tiers"),
        ([Tier("a"), Tier("a")], "configured twice"),
    ],
)
def test_bad_tier_config_is_a_value_error(config: object, message: str) -> None:
    """A tier config that cannot be used is a ValueError naming the tier and the field."""
    with pytest.raises(ValueError, match=message):
        load_tiers(config)  # type: ignore[arg-type]


def test_unknown_storage_scheme_lists_known_ones() -> None:
    """A URI no backend serves is a ValueError naming the schemes that are served."""
    with pytest.raises(ValueError, match="'mongodb'.*memory://, redis://"):
        RateLimiter(DEFAULT_TIERS, "mongodb://localhost")


def test_register_storage_serves_a_new_scheme() -> None:
    """register_storage adds a backend by URI scheme; storage_from_uri builds it with the options given."""
    register_storage("test-memory", MemoryStorage)
    try:
        clock = FakeClock()
        storage = storage_from_uri("test-memory://", clock=clock)
        assert isinstance(storage, MemoryStorage) and storage.uri == "test-memory://"
        assert "test-memory" in schemes()
    finally:
        from otel_llmcost.ratelimit import storage as registry

        registry._REGISTRY.pop("test-memory")


def test_bad_limiter_arguments() -> None:
    """on_storage_error accepts only 'open' or 'closed'."""
    with pytest.raises(ValueError, match="on_storage_error"):
        RateLimiter(DEFAULT_TIERS, on_storage_error="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch_size", 0), ("batch_size", 2.5), ("retries", -1), ("retries", True), ("batch_in_flight", 0)],
)
def test_bad_redis_options(option: str, value: object) -> None:
    """A Redis storage refuses a batch size or batches in flight below 1, or a negative retry count."""
    with pytest.raises(ValueError, match=f"{option} must be a whole number"):
        RateLimiter(DEFAULT_TIERS, "redis://127.0.0.1:1/0", storage_options={option: value})


def test_permit_is_a_plain_record() -> None:
    """A Permit names key, tier, estimate and whether it was reserved."""
    limiter = RateLimiter(DEFAULT_TIERS)
    permit = limiter.acquire("user:1", "pro", 250)
    assert permit == Permit("user:1", "pro", 250, True)
    assert (permit.key, permit.tier, permit.estimated_tokens, permit.reserved) == ("user:1", "pro", 250, True)


def test_lua_script_is_package_data() -> None:
    """The Redis script ships inside the package and reads the server's TIME."""
    text = load_script()
    assert "redis.call('TIME')" in text and "struct.pack" in text


def test_passwords_stay_out_of_messages() -> None:
    """A storage URI's password is masked in messages and logs."""
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("redis://user:s3cret@host/1") == "redis://user:***@host/1"
    assert redact("redis://host:6379") == "redis://host:6379"


def test_memory_forgets_full_keys(clock: FakeClock) -> None:
    """memory:// drops keys whose buckets are full again at its periodic sweep (a missing key is a full key)."""
    limiter = RateLimiter(DEFAULT_TIERS, "memory://", clock=clock, storage_options={"sweep_interval": 30})
    storage = limiter.storage
    assert isinstance(storage, MemoryStorage)
    limiter.acquire("a", "free", 100)
    permit = limiter.acquire("b", "free", 100)
    limiter.settle(permit, 200_000)  # b owes 150k tokens: days to recover
    assert len(storage) == 2
    clock.advance(3_600)  # a is full again after an hour; b is not
    limiter.acquire("c", "free")
    assert len(storage) == 2  # a dropped, b kept, c added
    with pytest.raises(RateLimitExceeded):
        limiter.acquire("b", "free")
    assert limiter.remaining("a", "free") == {"requests_per_minute": 10, "tokens_per_day": 50_000}
