"""`redis://host:6379/0`: entries in Redis, shared by every replica (vectors included).

Keys (all with the hash tag ``{prefix}`` so every script touches one cluster slot):

- ``{prefix}:k:<key>``: a plain entry, a hash of value ``v`` and expiry ``e``;
- ``{prefix}:v:<namespace>:<id>``: a semantic entry, also its vector ``x``;
- ``{prefix}:ns:<namespace>``: sorted set of the namespace's entry ids by sequence number (the cursor
  of `fetch_vectors`, so replicas follow each other's additions);
- ``{prefix}:lru``: sorted set of entry keys by last access (only with a size bound), ``{prefix}:seq``
  (the sequence counter) and ``{prefix}:epoch`` (a random id made by the first reader: a server that
  restarts empty gets a new one, which tells replicas to rebuild their indexes).

Each write or read is one Lua script (package data in ``lua/``), so the size bound holds whichever
replica writes. Expiry is checked against our clock and also set as the Redis TTL, so expired entries
vanish from the server by themselves. Needs the ``redis`` client (``pip install 'otel-llmcost[redis]'``),
imported when the storage is opened.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from ..errors import CacheStorageError
from .base import (
    Clock,
    SemanticEntry,
    VectorBatch,
    check_limits,
    check_name,
    check_page,
    now_clock,
    redact_uri,
)

T = TypeVar("T")
_PAGE = 1000


def _script_text(name: str) -> str:
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _server(client: Any, uri: str) -> str:
    """The client's server and database as a URI without credentials (its URI when it cannot tell)."""
    try:
        kwargs = client.connection_pool.connection_kwargs
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    except Exception:  # a client of another shape (a cluster client, a test double): its URI then
        return redact_uri(uri)


class RedisStorage:
    """Storage in Redis (see `otel_llmcost.cache.storage.base` for the operations and this module's doc)."""

    def __init__(
        self,
        client: Any,
        *,
        max_entries: int | None = 10_000,
        default_ttl: float | None = None,
        clock: Clock | None = None,
        prefix: str = "llmcost:cache",
        uri: str = "redis://",
    ) -> None:
        check_limits(max_entries, default_ttl)
        import redis

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.uri = uri
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = now_clock(clock)
        self._client = client
        self._base = f"{{{prefix}}}"
        self._lru = f"{self._base}:lru"
        self._seq = f"{self._base}:seq"
        self._epoch_key = f"{self._base}:epoch"
        self._put_script = client.register_script(_script_text("put"))
        self._get_script = client.register_script(_script_text("get"))
        self._del_script = client.register_script(_script_text("delete"))
        self._fetch_script = client.register_script(_script_text("fetch"))
        self.server = _server(client, uri)
        """Which server and database this is, without credentials: storages with other prefixes on the
        same server share its outages (the call path leaves them alone together)."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_entries: int | None = 10_000,
        default_ttl: float | None = None,
        clock: Clock | None = None,
        prefix: str = "llmcost:cache",
        socket_timeout: float = 1.0,
        **options: Any,
    ) -> RedisStorage:
        """Connect with `redis.Redis.from_url` (redis://, rediss://, unix://); fails fast (1 s) by default."""
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"the cache storage {url} needs the redis client: pip install 'otel-llmcost[redis]'") from exc
        options["decode_responses"] = False
        options.setdefault("socket_timeout", socket_timeout)
        options.setdefault("socket_connect_timeout", socket_timeout)
        client = redis.Redis.from_url(url, **options)
        return cls(client, max_entries=max_entries, default_ttl=default_ttl, clock=clock, prefix=prefix, uri=url)

    # -- plumbing --
    def _run(self, operation: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._errors as exc:
            raise CacheStorageError(self.uri, operation, exc) from exc

    def _ttl_args(self, ttl: float | None) -> tuple[float, int]:
        ttl = self.default_ttl if ttl is None else ttl
        if ttl is None:
            return 1e308, 0
        return self._clock() + ttl, max(1, int(ttl * 1000))

    def _bound(self) -> int:
        return self.max_entries or 0

    def _read(self, operation: str, key: str) -> tuple[bytes, bytes | None] | None:
        now = self._clock()
        flag = "1" if self.max_entries else "0"
        found = self._run(operation, lambda: self._get_script(keys=[key, self._lru], args=[repr(now), flag]))
        if not found:
            return None
        value, vector = found
        return bytes(value), (bytes(vector) if vector else None)

    def _put(self, operation: str, key: str, ns_key: str, value: bytes, vector: bytes, entry_id: str, ttl: float | None) -> None:
        expires_at, ttl_ms = self._ttl_args(ttl)
        args = [value, repr(expires_at), ttl_ms, repr(self._clock()), self._bound(), vector, entry_id]
        self._run(operation, lambda: self._put_script(keys=[key, self._lru, self._seq, ns_key], args=args))

    def _entry_key(self, namespace: str, entry_id: str) -> str:
        return f"{self._base}:v:{namespace}:{entry_id}"

    # -- plain entries --
    def get(self, key: str) -> bytes | None:
        found = self._read("get", f"{self._base}:k:{key}")
        return None if found is None else found[0]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._put("set", f"{self._base}:k:{key}", "", bytes(value), b"", "", ttl)

    def delete(self, key: str) -> bool:
        return bool(self._run("delete", lambda: self._del_script(keys=[f"{self._base}:k:{key}", self._lru])))

    # -- semantic entries --
    def add(
        self, namespace: str, entry_id: str, vector: bytes, payload: bytes, ttl: float | None = None
    ) -> None:
        check_name("namespace", namespace)
        check_name("entry id", entry_id)
        ns_key = f"{self._base}:ns:{namespace}"
        self._put("add", self._entry_key(namespace, entry_id), ns_key, bytes(payload), bytes(vector), entry_id, ttl)

    def entry(self, namespace: str, entry_id: str) -> SemanticEntry | None:
        found = self._read("entry", self._entry_key(namespace, entry_id))
        if found is None or found[1] is None:
            return None
        return SemanticEntry(entry_id, found[1], found[0])

    def remove(self, namespace: str, entry_id: str) -> bool:
        key = self._entry_key(namespace, entry_id)
        return bool(self._run("remove", lambda: self._del_script(keys=[key, self._lru])))

    def fetch_vectors(self, namespace: str, after: int = 0, limit: int | None = None) -> VectorBatch:
        """See the protocol. The cursor is a seq score of the namespace's sorted set; one script call
        scans at most `_PAGE` of its members, so a bigger request takes several round trips."""
        check_page(limit)
        ns_key = f"{self._base}:ns:{namespace}"
        prefix = f"{self._base}:v:{namespace}:"
        entries: list[tuple[str, bytes]] = []
        cursor = after
        epoch = ""

        def page(after_seq: int, rows: int) -> Any:
            args = [after_seq, repr(self._clock()), rows, prefix, uuid.uuid4().hex]
            return self._fetch_script(keys=[ns_key, self._epoch_key], args=args)

        while True:
            rows = _PAGE if limit is None else min(_PAGE, limit - len(entries))
            out = self._run("fetch_vectors", lambda: page(cursor, rows))  # noqa: B023 - called at once
            page_epoch = bytes(out[1]).decode("ascii")
            if epoch and page_epoch != epoch:
                # The server was emptied between two round trips: what was read belongs to the old
                # contents. Say so with the new epoch and nothing read; the caller starts again from 0.
                return VectorBatch([], 0, page_epoch, more=True)
            epoch = page_epoch
            last = int(float(out[0]))
            for i in range(2, len(out), 2):
                entries.append((bytes(out[i]).decode("ascii"), bytes(out[i + 1])))
            if last == cursor:  # nothing left past the cursor
                return VectorBatch(entries, cursor, epoch)
            cursor = last
            if limit is not None and len(entries) >= limit:
                return VectorBatch(entries, cursor, epoch, more=True)

    def _keys(self) -> list[bytes]:
        return list(self._client.scan_iter(match=f"{self._base}:*", count=1000))

    def __len__(self) -> int:
        def op() -> int:
            return sum(1 for k in self._keys() if b":k:" in k or b":v:" in k)

        return self._run("len", op)

    def clear(self) -> None:
        def op() -> None:
            keys = self._keys()
            for i in range(0, len(keys), 500):
                self._client.delete(*keys[i : i + 500])

        self._run("clear", op)

    def close(self) -> None:
        self._run("close", self._client.close)
