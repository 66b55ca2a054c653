"""Cache storages, chosen by URI through a small registry (as the ``limits`` library does).

    open_storage("memory://")                       # this process, LRU + TTL
    open_storage("sqlite:///var/cache/llm.db")      # a file that survives restarts (sqlite:////abs/path)
    open_storage("redis://localhost:6379/0")        # shared by replicas

URI options: sqlite ``?table=&synchronous=&timeout=&touch_interval=``; redis ``?prefix=`` (other query
options go to the redis client). Optional backends are imported when opened;
`register_storage(scheme, factory)` adds another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import CacheConfigError
from .base import CacheStorage, Clock, SemanticEntry, VectorBatch
from .memory import MemoryStorage

__all__ = [
    "CacheStorage",
    "MemoryStorage",
    "SemanticEntry",
    "StorageOptions",
    "VectorBatch",
    "open_storage",
    "register_storage",
]


@dataclass(frozen=True)
class StorageOptions:
    """What every backend is opened with, besides its URI."""

    max_entries: int | None = 10_000
    default_ttl: float | None = None
    clock: Clock | None = None


StorageFactory = Callable[[str, StorageOptions], CacheStorage]


def _memory(uri: str, o: StorageOptions) -> CacheStorage:
    return MemoryStorage(max_entries=o.max_entries, default_ttl=o.default_ttl, clock=o.clock, uri=uri)


def _sqlite(uri: str, o: StorageOptions) -> CacheStorage:
    from .sqlite import SQLiteStorage

    rest = uri[len("sqlite://") :]
    path, _, query = rest.partition("?")
    if not path.startswith("/") or len(path) < 2:
        raise CacheConfigError(f"{uri!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"table", "synchronous", "timeout", "touch_interval"}
    if unknown:
        raise CacheConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        timeout = float(options.get("timeout", "30"))
        touch = float(options.get("touch_interval", "1"))
    except ValueError as exc:
        raise CacheConfigError(f"{uri!r}: timeout and touch_interval are seconds ({exc})") from exc
    return SQLiteStorage(
        path[1:],
        max_entries=o.max_entries,
        default_ttl=o.default_ttl,
        clock=o.clock,
        table=options.get("table", "llmcost_cache"),
        synchronous=options.get("synchronous", "NORMAL"),
        timeout=timeout,
        touch_interval=touch,
        uri=uri,
    )


def _redis(uri: str, o: StorageOptions) -> CacheStorage:
    from .redis import RedisStorage

    parts = urlsplit(uri)
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), "llmcost:cache")
    client_url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
    return RedisStorage.from_url(
        client_url, max_entries=o.max_entries, default_ttl=o.default_ttl, clock=o.clock, prefix=prefix
    )


_REGISTRY: dict[str, StorageFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def register_storage(scheme: str, factory: StorageFactory) -> None:
    """Make `open_storage` hand URIs of `scheme` to `factory(uri, options)`."""
    _REGISTRY[scheme.lower()] = factory


def open_storage(
    uri: str, *, max_entries: int | None = 10_000, ttl: float | None = None, clock: Clock | None = None
) -> CacheStorage:
    """A storage for the URI (see the module doc); CacheConfigError for a scheme no backend serves.

    `max_entries` bounds the entries of both kinds together (None: no bound); `ttl` is the default
    lifetime in seconds (None: no expiry); `clock` replaces ``time.time`` (tests).
    """
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    factory = _REGISTRY.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in _REGISTRY)
        raise CacheConfigError(f"{uri!r} has no cache storage backend; use one of {known}")
    return factory(uri, StorageOptions(max_entries=max_entries, default_ttl=ttl, clock=clock))
