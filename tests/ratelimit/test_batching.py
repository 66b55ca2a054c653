"""Batched decisions on a real Redis: threads combine their calls into one script call, asyncio tasks
of one loop iteration too; batches never overdraw, decide as one-at-a-time calls would, and fail (or
pass, fail-open) as a whole when the shared call fails."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from otel_llmcost.ratelimit import (
    DEFAULT_TIERS,
    Permit,
    RateLimiter,
    RateLimitExceeded,
    RateLimitStorageError,
)
from otel_llmcost.ratelimit.storage.batching import Call
from otel_llmcost.ratelimit.storage.redis import RedisStorage

from . import race_worker
from .helpers import FakeClock, RedisServer


def storage_of(limiter: RateLimiter) -> RedisStorage:
    assert isinstance(limiter.storage, RedisStorage)
    return limiter.storage


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_processes_with_threads_never_overdraw(redis_server: RedisServer) -> None:
    """3 processes x 6 threads (calls combined into batches) on two keys get exactly each key's capacity."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    prefix, keys = f"test:{uuid.uuid4().hex}", ["a", "b"]
    workers = [
        context.Process(
            target=race_worker.hammer_threads,
            args=(redis_server.url, prefix, keys, 6, 30, ready, start, results),
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=120)
        start.set()
        reports = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers)
    for key in keys:  # 270 attempts per key, 100 fit
        assert sum(granted[key] for granted, _, _ in reports) == race_worker.CAPACITY
    batches = sum(b for _, b, _ in reports)
    calls = sum(c for _, _, c in reports)
    assert calls == 3 * 6 * 30
    assert batches < calls, "no two threads ever shared a script call"


@pytest.mark.parametrize("in_flight", [1, 3])
def test_threads_never_overdraw_with_several_batches_in_flight(
    redis_server: RedisServer, in_flight: int
) -> None:
    """16 threads on one key, with up to `in_flight` batches out at once (each leader on its own connection),
    get exactly the capacity."""
    limiter = RateLimiter(
        race_worker.TIERS,
        redis_server.url,
        on_storage_error="closed",
        storage_options={"key_prefix": f"test:{uuid.uuid4().hex}", "batch_in_flight": in_flight},
    )
    storage = storage_of(limiter)
    barrier = threading.Barrier(16)
    granted: list[int] = []

    def worker() -> None:
        barrier.wait()
        mine = 0
        for _ in range(15):
            try:
                limiter.acquire("shared", "race", race_worker.TOKENS_PER_CALL)
            except RateLimitExceeded:
                continue
            mine += 1
        granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 16 and sum(granted) == race_worker.CAPACITY
    assert storage.batch_stats[1] == 16 * 15
    assert len(storage._idle) <= in_flight  # one connection per leader at most
    limiter.close()


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_failed_batch_fails_every_caller_in_it(own_redis: RedisServer, policy: Any) -> None:
    """Redis dies under a batch of 5 queued threads: each of them (and the leader) fails by the policy."""
    limiter = RateLimiter(
        DEFAULT_TIERS,
        own_redis.url,
        on_storage_error=policy,
        storage_retry_interval=0,
        storage_options={"socket_timeout": 30},  # the frozen call waits until the server is killed
    )
    storage = storage_of(limiter)
    assert limiter.acquire("k", "pro").reserved  # connected, script loaded
    outcomes: list[object] = []
    lock = threading.Lock()

    def caller(key: str) -> None:
        try:
            outcome: object = limiter.acquire(key, "pro", 10)
        except RateLimitStorageError as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    batches, calls = storage.batch_stats
    own_redis.freeze()
    leader = threading.Thread(target=caller, args=("leader",))
    leader.start()
    wait_for(lambda: storage.batch_stats[0] == batches + 1, "the leader's batch to be sent")
    followers = [threading.Thread(target=caller, args=(f"follower:{i}",)) for i in range(5)]
    for thread in followers:
        thread.start()
    wait_for(lambda: storage._combiner.pending() == 5, "5 callers queued behind the frozen call")
    own_redis.stop()  # SIGKILL: the leader's connection breaks, the queued batch finds no server
    for thread in [leader, *followers]:
        thread.join(timeout=30)
    assert storage.batch_stats == (batches + 2, calls + 6)  # the leader alone, then the 5 together
    assert len(outcomes) == 6
    if policy == "closed":
        assert all(isinstance(o, RateLimitStorageError) for o in outcomes), outcomes
        assert all("ConnectionError" in str(o) for o in outcomes)
    else:
        assert all(isinstance(o, Permit) and not o.reserved for o in outcomes), outcomes
    assert limiter.storage_errors == 6
    own_redis.start()
    assert limiter.acquire("k", "pro").reserved  # and the next call finds the server again
    limiter.close()


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_a_failed_async_batch_fails_every_task_in_it(own_redis: RedisServer, policy: Any) -> None:
    """20 tasks whose calls went in one batch to a dead Redis all fail by the policy, each on its own."""
    limiter = RateLimiter(DEFAULT_TIERS, own_redis.url, on_storage_error=policy, storage_retry_interval=0)
    storage = storage_of(limiter)
    try:
        assert (await limiter.aacquire("k", "pro")).reserved
        batches, calls = storage.batch_stats
        own_redis.stop()
        outcomes = await asyncio.gather(
            *(limiter.aacquire(f"k{i}", "pro", 10) for i in range(20)), return_exceptions=True
        )
        assert storage.batch_stats == (batches + 1, calls + 20)
        if policy == "closed":
            assert all(isinstance(o, RateLimitStorageError) for o in outcomes), outcomes
            assert len({id(o) for o in outcomes}) == 20  # an error of its own for each caller
        else:
            assert all(isinstance(o, Permit) and not o.reserved for o in outcomes), outcomes
        assert limiter.storage_errors == 20
        own_redis.start()
        assert (await limiter.aacquire("k", "pro")).reserved
    finally:
        await limiter.aclose()


async def test_one_batch_decides_as_calls_one_at_a_time(redis_server: RedisServer) -> None:
    """A batch mixing tiers, repeated keys, a tier change, settles and peeks answers as memory:// one by one."""
    on_redis = RateLimiter(
        DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": f"test:{uuid.uuid4().hex}"}
    )
    in_memory = RateLimiter(DEFAULT_TIERS, "memory://", clock=FakeClock())
    storage = storage_of(on_redis)
    steps: list[tuple[str, tuple[Any, ...]]] = [("acquire", ("u1", "free", 4_000))] * 12  # 10 fit
    steps += [("acquire", ("u2", "pro", 100_000)), ("remaining", ("u2", "pro"))]
    steps += [("settle", (Permit("u2", "pro", 100_000, True), 350_000)), ("remaining", ("u2", "pro"))]
    steps += [("acquire", ("u2", "pro", 200_000))]  # 150k left of 500k: refused on tokens_per_day
    steps += [("acquire", ("u1", "pro", 1_000)), ("remaining", ("u1", "pro"))]  # u1 moves to pro
    steps += [("acquire", ("u3", "enterprise", 5_000_000)), ("acquire", ("u3", "enterprise", 1))]

    def outcome(result: Any) -> Any:
        if isinstance(result, RateLimitExceeded):
            return ("refused", result.limit, round(result.retry_after))
        if isinstance(result, dict):
            return {name: round(level) for name, level in result.items()}
        return result

    async def run(limiter: RateLimiter) -> list[Any]:
        calls = {"acquire": limiter.aacquire, "settle": limiter.asettle, "remaining": limiter.aremaining}
        results = await asyncio.gather(*(calls[op](*args) for op, args in steps), return_exceptions=True)
        return [outcome(r) for r in results]

    try:
        batches, calls = storage.batch_stats
        got = await run(on_redis)
        assert storage.batch_stats == (batches + 1, calls + len(steps))  # all in one script call
        assert got == await run(in_memory)
        assert got[10] == ("refused", "requests_per_minute", 6)
        assert got[13] == {"requests_per_minute": 59, "tokens_per_day": 400_000}
        assert got[16] == ("refused", "tokens_per_day", 8_640)  # 50k more at 500k a day
    finally:
        await on_redis.aclose()


async def test_batches_beyond_batch_size_go_as_one_pipeline(redis_server: RedisServer) -> None:
    """150 tasks with batch_size=7 and a flushed script cache: 22 script calls in one round, 100 grants."""
    limiter = RateLimiter(
        race_worker.TIERS,
        redis_server.url,
        on_storage_error="closed",
        storage_options={"key_prefix": f"test:{uuid.uuid4().hex}", "batch_size": 7},
    )
    storage = storage_of(limiter)
    client = redis.Redis.from_url(redis_server.url)
    try:
        await limiter.aacquire("warm-up", "race")
        client.script_flush()
        batches, calls = storage.batch_stats
        results = await asyncio.gather(
            *(limiter.aacquire("shared", "race", race_worker.TOKENS_PER_CALL) for _ in range(150)),
            return_exceptions=True,
        )
        assert storage.batch_stats == (batches + 1, calls + 150)
        assert sum(isinstance(r, Permit) for r in results) == race_worker.CAPACITY
        assert all(isinstance(r, (Permit, RateLimitExceeded)) for r in results), results
        assert limiter.storage_errors == 0
    finally:
        client.close()
        await limiter.aclose()


def test_sync_batch_beyond_batch_size_reloads_a_flushed_script(redis_server: RedisServer) -> None:
    """A thread's batch larger than batch_size goes as a pipeline of script calls, reloading a flushed script."""
    storage = RedisStorage(redis_server.url, key_prefix=f"test:{uuid.uuid4().hex}", batch_size=3)
    plan = RateLimiter(race_worker.TIERS)._plans["race"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.script_flush()
        replies = storage._send(
            [Call("t", "shared", 400, plan) for _ in range(4)] + [Call("p", "shared", 0, plan)]
        )
        assert replies[:2] == [0, 0] and all(r.startswith(b"2 ") for r in replies[2:4])  # 1000 tokens a day
        assert float(replies[4].split()[2]) == pytest.approx(200, abs=0.01)  # (+ refill since)
    finally:
        client.close()
        storage.close()


def test_sync_batches_split_by_batch_size(own_redis: RedisServer) -> None:
    """Threads queued behind a slow call leave as one batch, split into script calls of batch_size."""
    limiter = RateLimiter(
        race_worker.TIERS,
        own_redis.url,
        on_storage_error="closed",
        storage_options={"batch_size": 2, "socket_timeout": 30},
    )
    storage = storage_of(limiter)
    limiter.acquire("warm-up", "race")
    granted: list[bool] = []

    def caller() -> None:
        try:
            limiter.acquire("shared", "race", 250)
        except RateLimitExceeded:
            granted.append(False)
        else:
            granted.append(True)

    batches, _ = storage.batch_stats
    own_redis.freeze()
    try:
        threads = [threading.Thread(target=caller)]
        threads[0].start()
        wait_for(lambda: storage.batch_stats[0] == batches + 1, "the first batch to be sent")
        threads += [threading.Thread(target=caller) for _ in range(5)]
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: storage._combiner.pending() == 5, "5 callers queued")
    finally:
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(timeout=30)
    assert storage.batch_stats[0] == batches + 2  # the 5 went as one batch (3 script calls, one pipeline)
    assert sorted(granted) == [False, False, True, True, True, True]  # 1000 tokens a day at 250 a call
    limiter.close()


def _call_in_forked_child(limiter: RateLimiter, out: Any) -> None:
    try:
        out.send(limiter.acquire("forked", "pro").reserved)
    except Exception as exc:  # pragma: no cover - reported to the parent
        out.send(repr(exc))


def test_a_forked_child_does_not_wait_for_its_parents_batch(redis_server: RedisServer) -> None:
    """A process forked while a thread of its parent was in a batch decides on its own in the child."""
    limiter = RateLimiter(
        DEFAULT_TIERS, redis_server.url, storage_options={"key_prefix": f"test:{uuid.uuid4().hex}"}
    )
    combiner = storage_of(limiter)._combiner
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe(duplex=False)
    with combiner._lock:
        combiner._leaders = 1  # as if another thread were waiting for a reply at the fork
        child = context.Process(target=_call_in_forked_child, args=(limiter, theirs))
        child.start()
    try:
        assert mine.poll(30), "the child waited for a batch that its parent was sending"
        assert mine.recv() is True
        child.join(timeout=10)
    finally:
        if child.is_alive():
            child.kill()
        combiner._leaders = 0
        limiter.close()
