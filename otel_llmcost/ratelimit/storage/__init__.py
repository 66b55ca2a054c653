"""Rate-limit storages, chosen by URI through a small registry.

    storage_from_uri("memory://")                   # this process (default)
    storage_from_uri("redis://localhost:6379/0")    # shared; needs `pip install 'otel-llmcost[redis]'`

A backend is registered under its URI schemes with `register_storage`; its module is imported only
when a storage of that scheme is made, so optional clients (redis) stay optional.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .base import RateLimitStorage, redact
from .memory import MemoryStorage

StorageFactory = Callable[..., RateLimitStorage]

# scheme -> a factory, or "module:attribute" to import on first use
_REGISTRY: dict[str, StorageFactory | str] = {
    "memory": MemoryStorage,
    "redis": "otel_llmcost.ratelimit.storage.redis:RedisStorage",
    "rediss": "otel_llmcost.ratelimit.storage.redis:RedisStorage",
    "unix": "otel_llmcost.ratelimit.storage.redis:RedisStorage",
}


def register_storage(scheme: str, factory: StorageFactory | str) -> None:
    """Serve URIs of `scheme` with `factory(uri, clock=..., **options)` (or a ``"module:attr"`` path)."""
    _REGISTRY[scheme.lower()] = factory


def schemes() -> list[str]:
    """The URI schemes that can be served."""
    return sorted(_REGISTRY)


def storage_from_uri(uri: str, **options: Any) -> RateLimitStorage:
    """A storage for `uri`; `options` go to the backend's constructor (e.g. ``clock``, ``key_prefix``).

    Raises `ValueError` for a scheme that no backend serves.
    """
    scheme = urlsplit(uri).scheme.lower()
    factory = _REGISTRY.get(scheme)
    if factory is None:
        raise ValueError(
            f"no rate-limit storage for {scheme!r} URIs (in {redact(uri)!r}); "
            f"known schemes: {', '.join(s + '://' for s in schemes())}"
        )
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        _REGISTRY[scheme] = factory
    return factory(uri, **options)


__all__ = ["MemoryStorage", "RateLimitStorage", "register_storage", "schemes", "storage_from_uri"]
