"""`redis://host:6379/0`: buckets in Redis, shared by every process and host that uses it.

Decisions are made by one Lua script (``lua/bucket.lua``, package data beside this module): all the
buckets of a key live in one Redis string (packed doubles and the signature of the tier's limits) and
are checked and debited together, or not at all, however many clients race. The script reads the
server's ``TIME``, never the client's clock, so replicas whose clocks disagree still agree on every
bucket (the limiter's `clock` is not used here). A key's state expires by itself once all its buckets
would be full again.

One script call decides a batch: with `batch` (default), the calls that the threads of a process, or
the tasks of an event loop, make while a round trip is under way share the next script call (see
`batching`); a lone caller sends at once. Redis runs a script atomically, so each decision in a batch
is as atomic as when sent alone. The keys of a batch must live on one server: a Redis Cluster is not
supported (neither by this storage nor by the client it builds).

A call retried after a broken connection (`retries`) may run twice if the first reply was lost:
the keys are then charged twice, which errs on the side of refusing, never of letting more through.

Schemes: ``redis://``, ``rediss://`` (TLS), ``unix://``, as `redis.Redis.from_url` reads them.
Needs the ``redis`` client (``pip install 'otel-llmcost[redis]'``, which brings the ``hiredis`` reply
parser too), imported when a storage is made; async methods use ``redis.asyncio`` with one client per
event loop. Every failure of the server or the connection is raised as `RateLimitStorageError`; the
client reconnects by itself on the next call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from ..bucket import BucketPlan, Rejection
from ..errors import RateLimitStorageError
from .base import redact
from .batching import AsyncBatcher, BatchInterrupted, Call, Combiner

SCRIPT_NAME = "bucket.lua"

# The script's op letters.
TAKE, SETTLE, PEEK = "t", "s", "p"


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


def _rejection(reply: Any) -> Rejection | None:
    # 0 when taken, else b"<slot> <seconds>"
    if not reply:
        return None
    return (reply[0] - 48, float(reply[2:]))


def _levels(reply: bytes) -> tuple[float, float, float]:
    level0, level1, level2 = reply.split()
    return (float(level0), float(level1), float(level2))


class RedisStorage:
    """Token buckets in Redis (see the module doc).

    `key_prefix` starts every Redis key (``<prefix>:<key>``). `socket_timeout` and
    `socket_connect_timeout` (seconds) bound how long a dead server can hold a call; `retries` is how
    many times a command is retried at once on a broken connection (1 covers a server restart).
    Up to `max_connections` connections per client (one sync, one per event loop); more concurrent
    callers wait up to `pool_timeout` seconds for one. With `batch` (default), calls made at the same
    time by the threads of this storage, or by the tasks of one event loop, share script calls of up
    to `batch_size` decisions each (a larger batch goes as several script calls in one pipeline, so
    that no script keeps Redis from other clients for long). Threads keep up to `batch_in_flight`
    batches out at once, each on a connection of its own: 1 (default) gathers the most calls per round
    trip and measured best on a loaded 2-CPU machine; more may pay where the round trip is long (another
    host) and CPUs are many. Other keyword options go to the connections
    (`redis.BlockingConnectionPool.from_url`, and its asyncio twin).
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
        batch: bool = True,
        batch_size: int = 100,
        batch_in_flight: int = 1,
        **options: Any,
    ) -> None:
        del clock  # time comes from the server's TIME, by design
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        if isinstance(batch_in_flight, bool) or not isinstance(batch_in_flight, int) or batch_in_flight < 1:
            raise ValueError(f"batch_in_flight must be a whole number >= 1, got {batch_in_flight!r}")
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
        self._reply_error: type[BaseException] = redis.exceptions.ResponseError
        # what the client retries on (`redis.retry.Retry`'s defaults, plus socket errors)
        self._broken: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._source = load_script()
        # Redis names a script by the SHA-1 of its text; computed here, so making a storage needs no server.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()
        self._pool = {"max_connections": max_connections, "timeout": pool_timeout}
        pool = redis.BlockingConnectionPool.from_url(
            uri, retry=Retry(NoBackoff(), retries), **self._pool, **self._options
        )
        self._client = redis.Redis.from_pool(pool)
        self._batch = batch
        self._batch_size = batch_size
        self._combiner = Combiner(self._lead, self._fail_from, batch_in_flight)
        # the connections the combiner's leaders send on, when idle, and the process they belong to
        self._idle: list[Any] = []
        self._idle_pid = os.getpid()
        self._decide: Callable[[str, str, float, BucketPlan], Any] = (
            self._combiner.call if batch else self._decide_alone
        )
        self._async: tuple[asyncio.AbstractEventLoop, Any, AsyncBatcher] | None = None

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(script batches sent, decisions they carried) by the batching paths so far."""
        batches, calls = self._combiner.batches, self._combiner.calls
        if self._async is not None:
            batches += self._async[2].batches
            calls += self._async[2].calls
        return batches, calls

    def _fail(self, exc: BaseException) -> RateLimitStorageError:
        return RateLimitStorageError(
            f"rate-limit storage {self._safe_uri} failed: {type(exc).__name__}: {exc}", uri=self._safe_uri
        )

    def _fail_from(self, exc: BaseException) -> BaseException:
        """What each caller raises when its batch failed with `exc` (anything but a storage failure
        is a bug, raised as it is)."""
        if isinstance(exc, (*self._errors, BatchInterrupted)):
            return self._fail(exc)
        return exc

    # -- the script's arguments and calls --
    def _script_args(self, calls: list[Call]) -> list[Any]:
        """numkeys and the keys, then the plans' signatures once each, then every call's op code and
        amount in one string (the client's cost is per argument; the script splits the string)."""
        prefix = self._prefix
        index: dict[str, int] = {}
        args: list[Any] = [len(calls)]
        pairs: list[str] = []
        for call in calls:
            signature = call.plan.signature
            number = index.get(signature)
            if number is None:
                number = index[signature] = len(index) + 1
            args.append(prefix + call.key)
            pairs.append(f"{call.op}{number} {float(call.amount)!r}")  # (float: no numpy repr)
        args.append(len(index))
        args.extend(index)
        args.append(" ".join(pairs))
        return args

    def _chunks(self, calls: list[Call]) -> list[list[Any]]:
        size = self._batch_size
        return [self._script_args(calls[i : i + size]) for i in range(0, len(calls), size)]

    def _send(self, calls: list[Call]) -> list[Any]:
        """Decide `calls` in one script call, or in one pipeline of script calls beyond `batch_size`."""
        if len(calls) <= self._batch_size:
            args = self._script_args(calls)
            try:
                replies: list[Any] = self._client.evalsha(self._sha, *args)
            except self._no_script:  # first use, restart or SCRIPT FLUSH: the script did not run
                self._client.script_load(self._source)
                replies = self._client.evalsha(self._sha, *args)
            return replies
        chunks = self._chunks(calls)
        results = self._pipeline(chunks)
        unknown = [i for i, result in enumerate(results) if isinstance(result, self._no_script)]
        if unknown:
            self._client.script_load(self._source)
            for i, result in zip(unknown, self._pipeline([chunks[i] for i in unknown]), strict=True):
                results[i] = result
        return _joined(results)

    def _pipeline(self, chunks: list[list[Any]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in chunks:
            pipe.evalsha(self._sha, *args)
        results: list[Any] = pipe.execute(raise_on_error=False)
        return results

    def _lead(self, calls: list[Call]) -> list[Any]:
        """`_send` for the combiner's leader, on a connection of its own.

        The combiner lets one thread at a time lead, so the leader needs no connection pool: it
        writes the script call (or a pipeline of them) on its own connection and reads the replies,
        which costs the client about 40% less CPU per round trip than a call through
        `redis.Redis` (measured). Retries on a broken connection as the client would.
        """
        chunks = self._chunks(calls)
        connection = self._checkout()
        try:
            for attempt in range(self._retries + 1):
                try:
                    results = self._exchange(connection, chunks)
                    break
                except self._broken:
                    connection.disconnect()  # (the next send connects again)
                    if attempt == self._retries:
                        raise
            unknown = [i for i, result in enumerate(results) if isinstance(result, self._no_script)]
            if unknown:  # first use, restart or SCRIPT FLUSH: those script calls did not run
                self._client.script_load(self._source)
                again = self._exchange(connection, [chunks[i] for i in unknown])
                for i, result in zip(unknown, again, strict=True):
                    results[i] = result
        finally:
            self._idle.append(connection)
        return _joined(results)

    def _checkout(self) -> Any:
        if self._idle_pid != os.getpid():  # a forked child must not share its parent's sockets
            self._idle, self._idle_pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._client.connection_pool.make_connection()

    def _exchange(self, connection: Any, chunks: list[list[Any]]) -> list[Any]:
        if len(chunks) == 1:
            connection.send_command("EVALSHA", self._sha, *chunks[0])
        else:
            connection.send_packed_command(
                connection.pack_commands([("EVALSHA", self._sha, *args) for args in chunks])
            )
        results: list[Any] = []
        for _ in chunks:
            try:
                results.append(connection.read_response())
            except self._reply_error as exc:  # (read on, so that the connection stays in step)
                results.append(exc)
        return results

    def _decide_alone(self, op: str, key: str, amount: float, plan: BucketPlan) -> Any:
        return self._send([Call(op, key, amount, plan)])[0]

    # -- sync --
    def _call(self, op: str, key: str, amount: float, plan: BucketPlan) -> Any:
        try:
            return self._decide(op, key, amount, plan)
        except self._errors as exc:  # (the batch path has raised RateLimitStorageError already)
            raise self._fail(exc) from exc

    def acquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        return _rejection(self._call(TAKE, key, tokens, plan))

    def settle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        self._call(SETTLE, key, delta_tokens, plan)

    def peek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        return _levels(self._call(PEEK, key, 0, plan))

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
        idle, self._idle = self._idle, []
        if self._idle_pid == os.getpid():
            for connection in idle:
                connection.disconnect()
        self._client.close()

    # -- asyncio --
    def _async_client(self) -> tuple[Any, AsyncBatcher]:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            pool = aredis.BlockingConnectionPool.from_url(
                self.uri, retry=Retry(NoBackoff(), self._retries), **self._pool, **self._options
            )
            client = aredis.Redis.from_pool(pool)

            async def send(calls: list[Call]) -> list[Any]:
                return await self._asend(client, calls)

            self._async = (loop, client, AsyncBatcher(loop, send, self._fail_from))
        return self._async[1], self._async[2]

    async def _asend(self, client: Any, calls: list[Call]) -> list[Any]:
        """`_send` for asyncio, on `client`."""
        if len(calls) <= self._batch_size:
            args = self._script_args(calls)
            try:
                replies: list[Any] = await client.evalsha(self._sha, *args)
            except self._no_script:
                await client.script_load(self._source)
                replies = await client.evalsha(self._sha, *args)
            return replies
        chunks = self._chunks(calls)
        results = await self._apipeline(client, chunks)
        unknown = [i for i, result in enumerate(results) if isinstance(result, self._no_script)]
        if unknown:
            await client.script_load(self._source)
            again = await self._apipeline(client, [chunks[i] for i in unknown])
            for i, result in zip(unknown, again, strict=True):
                results[i] = result
        return _joined(results)

    async def _apipeline(self, client: Any, chunks: list[list[Any]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for args in chunks:
            pipe.evalsha(self._sha, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _acall(self, op: str, key: str, amount: float, plan: BucketPlan) -> Awaitable[Any]:
        # Batched, the awaitable is the batch's future itself (one coroutine less per call): its
        # error is a `RateLimitStorageError` already, made by `_fail_from`.
        client, batcher = self._async_client()
        if self._batch:
            return batcher.submit(op, key, amount, plan)
        return self._acall_alone(client, Call(op, key, amount, plan))

    async def _acall_alone(self, client: Any, call: Call) -> Any:
        try:
            return (await self._asend(client, [call]))[0]
        except self._errors as exc:
            raise self._fail(exc) from exc

    async def aacquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        return _rejection(await self._acall(TAKE, key, tokens, plan))

    async def asettle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        await self._acall(SETTLE, key, delta_tokens, plan)

    async def apeek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        return _levels(await self._acall(PEEK, key, 0, plan))

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


def _joined(results: list[Any]) -> list[Any]:
    """The replies of a pipeline of script calls as one list; a failed script call fails them all
    (which of its decisions were applied is unknown, so its callers are told the storage failed)."""
    joined: list[Any] = []
    for result in results:
        if isinstance(result, Exception):
            raise result
        joined.extend(result)
    return joined
