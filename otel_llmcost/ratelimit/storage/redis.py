"""`redis://host:6379/0`: buckets in Redis, shared by every process and host that uses it.

Every decision is one call of one Lua script (``lua/bucket.lua``, package data beside this module):
all the buckets of a key live in one Redis string (packed doubles and the signature of the tier's
limits) and are checked and debited together, or not at all, however many clients race. The
script reads the server's ``TIME``, never the client's clock, so replicas whose clocks disagree
still agree on every bucket (the limiter's `clock` is not used here). A key's state expires by
itself once all its buckets would be full again. Async calls made in the same event-loop iteration
share one pipeline (one round trip); each script in it is still atomic on its own.

A call retried after a broken connection (`retries`) may run twice if the first reply was lost:
the key is then charged twice, which errs on the side of refusing, never of letting more through.

Schemes: ``redis://``, ``rediss://`` (TLS), ``unix://``, as `redis.Redis.from_url` reads them.
Needs the ``redis`` client (``pip install 'otel-llmcost[redis]'``), imported when a storage is made;
async methods use ``redis.asyncio`` with one client per event loop. Every failure of the server or
the connection is raised as `RateLimitStorageError`; the client reconnects by itself on the next call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from ..bucket import BucketPlan, Rejection
from ..errors import RateLimitStorageError
from .base import redact

SCRIPT_NAME = "bucket.lua"


def load_script() -> str:
    """The text of the bucket script shipped with the package."""
    return (
        resources.files(__package__ or __name__)
        .joinpath("lua")
        .joinpath(SCRIPT_NAME)
        .read_text(encoding="utf-8")
    )


def _import_redis(uri: str) -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the rate-limit storage {redact(uri)} needs the redis client: pip install 'otel-llmcost[redis]'"
        ) from exc
    return redis


def _levels(reply: list[Any]) -> tuple[float, float, float]:
    return (float(reply[0]), float(reply[1]), float(reply[2]))


class RedisStorage:
    """Token buckets in Redis (see the module doc).

    `key_prefix` starts every Redis key (``<prefix>:<key>``). `socket_timeout` and
    `socket_connect_timeout` (seconds) bound how long a dead server can hold a call; `retries` is how
    many times a command is retried at once on a broken connection (1 covers a server restart).
    Up to `max_connections` connections per client (one sync, one per event loop); more concurrent
    callers wait up to `pool_timeout` seconds for one. With `pipeline` (default), the async calls that
    the tasks of one event loop make in the same loop iteration go to Redis as one pipeline: one round
    trip for many scripts, each still atomic on its own (sync calls always make one round trip each).
    Other keyword options go to the connections (`redis.BlockingConnectionPool.from_url`, and its
    asyncio twin).
    """

    def __init__(
        self,
        uri: str = "redis://localhost:6379/0",
        *,
        clock: Callable[[], float] | None = None,
        key_prefix: str = "llmcost:ratelimit",
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        retries: int = 1,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        pipeline: bool = True,
        **options: Any,
    ) -> None:
        del clock  # time comes from the server's TIME, by design
        redis = _import_redis(uri)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.uri = uri
        self._safe_uri = redact(uri)
        self._prefix = f"{key_prefix}:"
        self._retries = retries
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            **options,
        }
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._no_script: type[BaseException] = redis.exceptions.NoScriptError
        self._source = load_script()
        # Redis names a script by the SHA-1 of its text; computed here, so making a storage needs no server.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()
        self._pool = {"max_connections": max_connections, "timeout": pool_timeout}
        pool = redis.BlockingConnectionPool.from_url(
            uri, retry=Retry(NoBackoff(), retries), **self._pool, **self._options
        )
        self._client = redis.Redis.from_pool(pool)
        self._evalsha = self._client.evalsha
        self._pipeline = pipeline
        self._async: tuple[asyncio.AbstractEventLoop, Any, _Batcher] | None = None

    def _fail(self, exc: BaseException) -> RateLimitStorageError:
        return RateLimitStorageError(
            f"rate-limit storage {self._safe_uri} failed: {type(exc).__name__}: {exc}", uri=self._safe_uri
        )

    # -- sync --
    def _call(self, op: str, key: str, amount: float, plan: BucketPlan) -> Any:
        # EVALSHA directly (no Script object on the hot path); load the script once if the server
        # does not know it (first use, restart, SCRIPT FLUSH).
        try:
            try:
                return self._evalsha(self._sha, 1, self._prefix + key, op, amount, *plan.lua_args)
            except self._no_script:
                self._client.script_load(self._source)
                return self._evalsha(self._sha, 1, self._prefix + key, op, amount, *plan.lua_args)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def acquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        reply = self._call("take", key, tokens, plan)
        return (int(reply[0]), float(reply[1])) if reply else None

    def settle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        self._call("settle", key, delta_tokens, plan)

    def peek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        return _levels(self._call("peek", key, 0, plan))

    def reset(self, key: str) -> None:
        try:
            self._client.delete(self._prefix + key)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def ping(self) -> bool:
        """True when the server answers."""
        try:
            return bool(self._client.ping())
        except self._errors:
            return False

    def close(self) -> None:
        self._client.close()

    # -- asyncio --
    def _async_client(self) -> tuple[Any, _Batcher]:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            pool = aredis.BlockingConnectionPool.from_url(
                self.uri, retry=Retry(NoBackoff(), self._retries), **self._pool, **self._options
            )
            client = aredis.Redis.from_pool(pool)
            self._async = (loop, client, _Batcher(loop, client, self._sha, self._source, self._no_script))
        return self._async[1], self._async[2]

    async def _acall(self, op: str, key: str, amount: float, plan: BucketPlan) -> Any:
        client, batcher = self._async_client()
        args = (self._prefix + key, op, amount, *plan.lua_args)
        try:
            if self._pipeline:
                return await batcher.submit(args)
            try:
                return await client.evalsha(self._sha, 1, *args)
            except self._no_script:
                await client.script_load(self._source)
                return await client.evalsha(self._sha, 1, *args)
        except self._errors as exc:
            raise self._fail(exc) from exc

    async def aacquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        reply = await self._acall("take", key, tokens, plan)
        return (int(reply[0]), float(reply[1])) if reply else None

    async def asettle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        await self._acall("settle", key, delta_tokens, plan)

    async def apeek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        return _levels(await self._acall("peek", key, 0, plan))

    async def areset(self, key: str) -> None:
        client, _ = self._async_client()
        try:
            await client.delete(self._prefix + key)
        except self._errors as exc:
            raise self._fail(exc) from exc

    async def aclose(self) -> None:
        if self._async is not None:
            client = self._async[1]
            self._async = None
            await client.aclose()
        self.close()


class _Batcher:
    """Sends the script calls that the tasks of one event loop make in one loop iteration as one
    pipeline (no transaction: each script is atomic on its own, as when sent alone)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, client: Any, sha: str, source: str, no_script: type
    ) -> None:
        self._loop = loop
        self._client = client
        self._sha = sha
        self._source = source
        self._no_script = no_script
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def submit(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._pending.append((args, future))
        if len(self._pending) == 1:
            # after the tasks that are ready now have had their turn (and added their calls)
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = self._loop.create_task(self._send(batch))
        self._sending.add(task)  # keep a reference until it is done
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._execute([args for args, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every call of the batch failed with it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in calls:
            pipe.evalsha(self._sha, 1, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, self._no_script)]
        if unknown:  # first use, restart or SCRIPT FLUSH: load the script, send those calls again
            await self._client.script_load(self._source)
            pipe = self._client.pipeline(transaction=False)
            for i in unknown:
                pipe.evalsha(self._sha, 1, *calls[i])
            for i, reply in zip(unknown, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies
