"""Worker processes for the multi-process race (a module of its own so `spawn` can import it)."""

from __future__ import annotations

import threading
from typing import Any

from otel_llmcost.ratelimit import RateLimiter, RateLimitExceeded, Tier

TOKENS_PER_CALL = 10
#: 1000 tokens a day at 10 tokens a call: exactly 100 calls, with no meaningful refill during a test
#: (one call's worth of tokens takes 864 s to come back).
TIERS = {"race": Tier("race", requests_per_minute=100_000, tokens_per_day=1_000)}
CAPACITY = 100


def hammer(url: str, prefix: str, key: str, attempts: int, ready: Any, start: Any, results: Any) -> None:
    """Try `attempts` acquires as fast as possible once every worker is ready; report the grants."""
    limiter = RateLimiter(TIERS, url, on_storage_error="closed", storage_options={"key_prefix": prefix})
    limiter.remaining(key, "race")  # connect and load the script before the race starts
    ready.put(None)
    start.wait()
    granted = 0
    for _ in range(attempts):
        try:
            limiter.acquire(key, "race", TOKENS_PER_CALL)
        except RateLimitExceeded:
            continue
        granted += 1
    limiter.close()
    results.put(granted)


def hammer_threads(
    url: str, prefix: str, keys: list[str], threads: int, attempts: int, ready: Any, start: Any, results: Any
) -> None:
    """`threads` threads sharing one limiter (so their calls are batched) try `attempts` acquires each,
    round-robin over `keys`, once every worker is ready; report grants per key and the batch counts."""
    limiter = RateLimiter(TIERS, url, on_storage_error="closed", storage_options={"key_prefix": prefix})
    limiter.remaining(keys[0], "race")  # connect and load the script before the race starts
    granted = dict.fromkeys(keys, 0)
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def worker(offset: int) -> None:
        barrier.wait()
        for i in range(attempts):
            key = keys[(offset + i) % len(keys)]
            try:
                limiter.acquire(key, "race", TOKENS_PER_CALL)
            except RateLimitExceeded:
                continue
            with lock:
                granted[key] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    ready.put(None)
    start.wait()
    before = limiter.storage.batch_stats  # type: ignore[attr-defined]
    barrier.wait()
    for thread in pool:
        thread.join()
    batches, calls = (now - then for now, then in zip(limiter.storage.batch_stats, before, strict=True))  # type: ignore[attr-defined]
    limiter.close()
    results.put((granted, batches, calls))
