"""Concurrent callers on one key never overdraw: threads, asyncio tasks, and OS processes on Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid

import pytest

from otel_llmcost.ratelimit import RateLimitExceeded

from . import race_worker
from .conftest import Backend
from .helpers import RedisServer

TIERS = race_worker.TIERS
CAPACITY = race_worker.CAPACITY
TOKENS = race_worker.TOKENS_PER_CALL


def test_threads_never_overdraw(backend: Backend) -> None:
    """16 threads racing on one key get exactly the bucket's capacity of grants, no more."""
    limiter = backend.make(TIERS)
    barrier = threading.Barrier(16)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = 0
        barrier.wait()
        for _ in range(20):
            try:
                limiter.acquire("shared", "race", TOKENS)
            except RateLimitExceeded:
                continue
            mine += 1
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 16
    assert sum(granted) == CAPACITY
    left = limiter.remaining("shared", "race")["tokens_per_day"]
    assert 0 <= left < TOKENS


async def test_asyncio_tasks_never_overdraw(backend: Backend) -> None:
    """200 asyncio tasks racing on one key get exactly the bucket's capacity of grants."""
    limiter = backend.make(TIERS)
    start = asyncio.Event()

    async def task() -> bool:
        await start.wait()
        try:
            await limiter.aacquire("shared", "race", TOKENS)
        except RateLimitExceeded:
            return False
        return True

    try:
        tasks = [asyncio.create_task(task()) for _ in range(200)]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*tasks)
        assert sum(results) == CAPACITY
        left = (await limiter.aremaining("shared", "race"))["tokens_per_day"]
        assert 0 <= left < TOKENS
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("workers", [4])
def test_processes_never_overdraw_on_redis(redis_server: RedisServer, workers: int) -> None:
    """4 OS processes racing on one key of a real Redis get exactly the capacity of grants between them."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    prefix = f"test:{uuid.uuid4().hex}"
    processes = [
        context.Process(
            target=race_worker.hammer,
            args=(redis_server.url, prefix, "shared", 60, ready, start, results),
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=120)  # every worker connected: now they race
        start.set()
        granted = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    assert sum(granted) == CAPACITY
    assert sum(1 for g in granted if g > 0) >= 2, f"no race happened: {granted}"


@pytest.mark.parametrize("batch", [True, False])
async def test_asyncio_tasks_never_overdraw_with_or_without_batching(
    redis_server: RedisServer, batch: bool
) -> None:
    """On Redis, 200 tasks get exactly the capacity whether their calls share script calls or not."""
    from otel_llmcost.ratelimit import RateLimiter

    options = {"key_prefix": f"test:{uuid.uuid4().hex}", "batch": batch}
    limiter = RateLimiter(TIERS, redis_server.url, on_storage_error="closed", storage_options=options)

    async def task() -> bool:
        try:
            await limiter.aacquire("shared", "race", TOKENS)
        except RateLimitExceeded:
            return False
        return True

    try:
        results = await asyncio.gather(*(task() for _ in range(200)))
        assert sum(results) == CAPACITY
    finally:
        await limiter.aclose()
