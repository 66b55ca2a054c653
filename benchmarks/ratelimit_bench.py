"""Rate-limit decisions per second: otel_llmcost.ratelimit beside the `limits` library, in one run.

    python benchmarks/ratelimit_bench.py                  # starts its own redis-server on loopback
    python benchmarks/ratelimit_bench.py --redis-url redis://127.0.0.1:6379/15 --seconds 2

A decision is one call that answers "may this call go?" and, when yes, reserves it. Ours checks and
debits every bucket of a tier together (``acquire``); `limits` checks one limit per ``hit``, so for
two limits it makes two calls (not atomic together). Rows:

- memory, one thread, 10,000 keys in turn; "allowed" (capacities never run out) and "refused" (every
  bucket already empty: ours raises `RateLimitExceeded`, `limits` returns False).
- Redis, a redis-server on this machine's loopback:
  "sequential" (one thread, one connection), "threads x8" (one limiter shared by 8 threads, as in a
  threaded web server), "processes x4" (4 processes with a limiter each, as in a pre-fork server) and
  "asyncio x64" (one event loop, 64 tasks deciding concurrently). Ours decides by one Lua script;
  by default the calls that threads (or the tasks of one loop iteration) make while a round trip is
  under way share one script call (``batch=True``; each decision still atomic), and the
  "batch=False" rows show one script call per decision. `limits` runs its own scripts or commands
  (two limits: two round trips). "decisions per script call" is the average batch size.
- "pure-Python parser" rows: ours with redis-py's own reply parser instead of hiredis (when
  hiredis is installed), to show what the parser is worth here.
- "calibration": empty Python function calls per second through the same loop, measured in the same
  run: divide a memory row by it to compare machines (or the same machine under another load).
  Memory rows also show decisions per CPU-second of the measuring thread, which a busy machine
  disturbs far less than wall time.

Each figure is the best of `--rounds` runs of `--seconds` each, variants interleaved, so that the
noise of a shared machine hits them alike; the load average is printed before and after. Needs
``pip install limits redis`` (``hiredis`` optional).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import limits
import limits.aio.strategies
import limits.strategies
import redis
from redis._parsers import _RESP2Parser as PythonParser

try:
    import hiredis

    HIREDIS: str | None = hiredis.__version__
except ImportError:  # pragma: no cover - depends on the environment
    HIREDIS = None

from otel_llmcost.ratelimit import RateLimiter, RateLimitExceeded, Tier

KEYS = [f"user:{i}" for i in range(10_000)]
TOKENS = 100
BIG = 10**9
# our tiers: capacities that never run out ("allowed"), and one that is empty after one call ("refused")
TIERS = {
    "one": Tier("one", requests_per_minute=BIG),
    "two": Tier("two", requests_per_minute=BIG, tokens_per_day=BIG * 1000),
    "tight": Tier("tight", requests_per_minute=1, tokens_per_day=1_000),
}
L_RPM = limits.RateLimitItemPerMinute(BIG)
L_TPD = limits.RateLimitItemPerDay(BIG * 1000)
L_TIGHT = limits.RateLimitItemPerDay(1)
STRATEGIES = {
    "FixedWindow": (limits.strategies.FixedWindowRateLimiter, limits.aio.strategies.FixedWindowRateLimiter),
    "SlidingWindowCounter": (
        limits.strategies.SlidingWindowCounterRateLimiter,
        limits.aio.strategies.SlidingWindowCounterRateLimiter,
    ),
    "MovingWindow": (
        limits.strategies.MovingWindowRateLimiter,
        limits.aio.strategies.MovingWindowRateLimiter,
    ),
}


@dataclass
class Row:
    storage: str
    mode: str
    library: str
    limits_per_decision: int
    run: Callable[[float], tuple[int, float]]  # seconds -> (decisions, elapsed)
    best: float = 0.0
    #: decisions per CPU-second of the measuring thread (memory rows, which run in it alone)
    best_cpu: float = 0.0
    #: (script calls, decisions) of our limiter, when it batches
    stats: Callable[[], tuple[int, int]] | None = None


def timed_loop(step: Callable[[str], Any], seconds: float, batch: int = 2_000) -> tuple[int, float]:
    """Call step(key) over the keys until `seconds` have passed; count the calls."""
    done, i, n = 0, 0, len(KEYS)
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            step(KEYS[i])
            i = i + 1 if i + 1 < n else 0
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done, now - start


def ours_memory(tier: str, refused: bool) -> Callable[[float], tuple[int, float]]:
    limiter = RateLimiter(TIERS, "memory://")
    acquire = limiter.acquire
    if refused:
        for key in KEYS:  # each key owes a billion tokens: refused for the whole run
            limiter.settle(limiter.acquire(key, tier, TOKENS), BIG)

        def step(key: str) -> None:
            try:
                acquire(key, tier, TOKENS)
            except RateLimitExceeded:
                pass
            else:
                raise AssertionError("expected a refusal")

        return lambda s: timed_loop(step, s)
    return lambda s: timed_loop(lambda key: acquire(key, tier, TOKENS), s)


def ours_memory_settle() -> Callable[[float], tuple[int, float]]:
    limiter = RateLimiter(TIERS, "memory://")
    acquire, settle = limiter.acquire, limiter.settle

    def step(key: str) -> None:
        settle(acquire(key, "two", TOKENS), TOKENS // 2)

    return lambda s: timed_loop(step, s)


def limits_memory(strategy: str, two: bool, refused: bool) -> Callable[[float], tuple[int, float]]:
    storage = limits.storage.MemoryStorage()
    limiter = STRATEGIES[strategy][0](storage)
    hit = limiter.hit
    if refused:
        for key in KEYS:
            hit(L_TIGHT, key)
        return lambda s: timed_loop(lambda key: hit(L_TIGHT, key), s)
    if two:

        def step(key: str) -> bool:
            return hit(L_RPM, key) and hit(L_TPD, key, cost=TOKENS)

        return lambda s: timed_loop(step, s)
    return lambda s: timed_loop(lambda key: hit(L_RPM, key), s)


# -- Redis: each implementation gives a sync decide(key) and an async one; modes run them --
Decide = Callable[[str], Any]


class Ours:
    """Makes our limiters on Redis for one row and keeps the last one, whose batch counts are shown."""

    def __init__(self, url: str, tier: str, connections: int, batch: bool = True, parser: Any = None) -> None:
        self.url, self.tier = url, tier
        self.options: dict[str, Any] = {
            "key_prefix": "bench:ours",
            "max_connections": connections,
            "batch": batch,
        }
        if parser is not None:
            self.options["parser_class"] = parser
        self.last: RateLimiter | None = None

    def _limiter(self) -> RateLimiter:
        self.last = RateLimiter(TIERS, self.url, on_storage_error="closed", storage_options=self.options)
        return self.last

    def make_sync(self) -> Decide:
        acquire, tier = self._limiter().acquire, self.tier
        return lambda key: acquire(key, tier, TOKENS)

    def make_async(self) -> Any:
        aacquire, tier = self._limiter().aacquire, self.tier
        return lambda key: aacquire(key, tier, TOKENS)

    def stats(self) -> tuple[int, int]:
        storage = self.last.storage if self.last is not None else None
        return getattr(storage, "batch_stats", (0, 0))


def ours_redis(
    url: str, tier: str, connections: int, batch: bool = True, parser: Any = None
) -> tuple[Callable[[], Decide], Callable[[], Any], Callable[[], tuple[int, int]]]:
    ours = Ours(url, tier, connections, batch, parser)
    return ours.make_sync, ours.make_async, ours.stats


def limits_redis(
    url: str, strategy: str, two: bool, connections: int
) -> tuple[Callable[[], Decide], Callable[[], Any], None]:
    prefix = f"LIMITS-{strategy}-{two}"

    def make_sync() -> Decide:
        storage = limits.storage.storage_from_string(url, key_prefix=prefix, max_connections=connections)
        hit = STRATEGIES[strategy][0](storage).hit
        if two:
            return lambda key: hit(L_RPM, key) and hit(L_TPD, key, cost=TOKENS)
        return lambda key: hit(L_RPM, key)

    def make_async() -> Any:
        storage = limits.storage.storage_from_string(
            "async+" + url, implementation="redispy", max_connections=connections, key_prefix="A" + prefix
        )
        hit = STRATEGIES[strategy][1](storage).hit

        async def decide(key: str) -> Any:
            ok = await hit(L_RPM, key)
            if two and ok:
                ok = await hit(L_TPD, key, cost=TOKENS)
            return ok

        return decide

    return make_sync, make_async, None


def sequential(make: Callable[[], Decide]) -> Callable[[float], tuple[int, float]]:
    decide = make()
    decide(KEYS[0])  # connect and load scripts before measuring
    return lambda s: timed_loop(decide, s, batch=100)


def threaded(make: Callable[[], Decide], threads: int) -> Callable[[float], tuple[int, float]]:
    decide = make()  # one client (and connection pool) shared by the threads, as in a threaded server
    decide(KEYS[0])

    def run(seconds: float) -> tuple[int, float]:
        counts = [0] * threads
        start = time.perf_counter()

        def worker(index: int) -> None:
            counts[index] = timed_loop(decide, seconds, batch=20)[0]

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return sum(counts), time.perf_counter() - start

    return run


def _process_worker(make: Callable[[], Decide], seconds: float, start_at: float, out: Any) -> None:
    decide = make()
    decide(KEYS[0])
    time.sleep(max(0.0, start_at - time.time()))
    out.send(timed_loop(decide, seconds, batch=20))
    out.close()


def processes(make: Callable[[], Decide], count: int) -> Callable[[float], tuple[int, float]]:
    """`count` forked processes, each with its own client, deciding one after another."""

    def run(seconds: float) -> tuple[int, float]:
        context = multiprocessing.get_context("fork")
        start_at = time.time() + 0.5  # all start together, after connecting
        pipes, workers = [], []
        for _ in range(count):
            mine, theirs = context.Pipe(duplex=False)
            worker = context.Process(target=_process_worker, args=(make, seconds, start_at, theirs))
            worker.start()
            pipes.append(mine)
            workers.append(worker)
        results = [pipe.recv() for pipe in pipes]
        for worker in workers:
            worker.join()
        return sum(done for done, _ in results), max(elapsed for _, elapsed in results)

    return run


def run_async(make: Callable[[], Any], seconds: float, tasks: int) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        decide = make()
        await asyncio.gather(*(decide(KEYS[i]) for i in range(tasks)))  # open the connections first
        counts = [0] * tasks
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(index: int) -> None:
            i = index * 97
            while time.perf_counter() < deadline:
                await decide(KEYS[i % len(KEYS)])
                i += 1
                counts[index] += 1

        await asyncio.gather(*(worker(t) for t in range(tasks)))
        return sum(counts), time.perf_counter() - start

    return asyncio.run(main())


def concurrent_async(make: Callable[[], Any], tasks: int) -> Callable[[float], tuple[int, float]]:
    return lambda s: run_async(make, s, tasks)


@contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """The given URL, or a redis-server of our own on a free loopback port (None if not installed)."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found (apt-get install -y redis-server): Redis rows skipped", file=sys.stderr)
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="ratelimit-bench-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measurement (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measurements per row; the best counts (default 3)"
    )
    parser.add_argument(
        "--tasks", type=int, default=64, help="concurrent asyncio tasks for Redis (default 64)"
    )
    parser.add_argument(
        "--redis-url", help="use this Redis (its database is flushed) instead of starting one"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads sharing one Redis client (default 8)")
    parser.add_argument("--processes", type=int, default=4, help="processes with a client each (default 4)")
    parser.add_argument("--no-redis", action="store_true", help="memory rows only")
    args = parser.parse_args()

    rows = [
        Row("memory", "1 thread, allowed", "otel-llmcost token bucket", 1, ours_memory("one", False)),
        Row("memory", "1 thread, allowed", "otel-llmcost token bucket", 2, ours_memory("two", False)),
    ]
    for name in STRATEGIES:
        rows.append(
            Row("memory", "1 thread, allowed", f"limits {name}", 1, limits_memory(name, False, False))
        )
    rows.append(
        Row(
            "memory",
            "1 thread, allowed",
            "limits FixedWindow (2 hits)",
            2,
            limits_memory("FixedWindow", True, False),
        )
    )
    rows.append(
        Row("memory", "1 thread, refused", "otel-llmcost token bucket", 2, ours_memory("tight", True))
    )
    for name in STRATEGIES:
        rows.append(Row("memory", "1 thread, refused", f"limits {name}", 1, limits_memory(name, False, True)))
    rows.append(
        Row("memory", "1 thread, acquire+settle pairs", "otel-llmcost token bucket", 2, ours_memory_settle())
    )

    rows.insert(
        0, Row("memory", "calibration", "empty Python function call (no limiter)", 0, calibration_run)
    )

    with redis_server(None if args.no_redis else args.redis_url) as url:
        if url is not None and not args.no_redis:
            redis.Redis.from_url(url).flushdb()
            rows += redis_rows(url, args)
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for row in rows:
                cpu = time.thread_time()
                done, elapsed = row.run(args.seconds)
                cpu = time.thread_time() - cpu
                row.best = max(row.best, done / elapsed)
                if row.storage == "memory" and cpu > 0:
                    row.best_cpu = max(row.best_cpu, done / cpu)
        load_after = os.getloadavg()

    print(
        f"\nPython {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs), "
        f"limits {limits.__version__}, redis-py {redis.__version__}, hiredis "
        f"{HIREDIS or 'not installed'}; best of {args.rounds} x {args.seconds:g} s per row; load average "
        f"(1/5/15 min) {_load(load_before)} before, {_load(load_after)} after\n"
    )
    print(
        "| storage | mode | implementation | limits checked per decision | decisions/s "
        "| decisions per CPU-second | decisions per script call |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        per_call = ""
        if row.stats is not None:
            batches, calls = row.stats()
            per_call = f"{calls / batches:.1f}" if batches else ""
        per_cpu = f"{row.best_cpu:,.0f}" if row.best_cpu else ""
        print(
            f"| {row.storage} | {row.mode} | {row.library} | {row.limits_per_decision} | {row.best:,.0f} "
            f"| {per_cpu} | {per_call} |"
        )


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.1f}" for value in load)


def redis_rows(url: str, args: argparse.Namespace) -> list[Row]:
    """The Redis rows: every mode, ours beside `limits`, each row with limiters of its own."""
    rows: list[Row] = []
    ping = redis.Redis.from_url(url).ping
    rows.append(
        Row(
            "redis",
            "sequential",
            "baseline: redis-py PING (no limiter)",
            0,
            sequential(lambda: lambda key: ping()),
        )
    )

    def ours(tier: str, batch: bool = True, parser: Any = None) -> tuple[Any, Any, Any]:
        return ours_redis(url, tier, args.tasks, batch, parser)

    def theirs() -> list[tuple[str, int, Any]]:
        made: list[tuple[str, int, Any]] = [
            (f"limits {name}", 1, limits_redis(url, name, False, args.tasks)) for name in STRATEGIES
        ]
        made.append(("limits FixedWindow (2 hits)", 2, limits_redis(url, "FixedWindow", True, args.tasks)))
        return made

    ours_label = "otel-llmcost token bucket (Lua)"
    unbatched = f"{ours_label}, batch=False"
    python_parser = f"{ours_label}, pure-Python parser"
    modes: list[tuple[str, Callable[[Any], Callable[[float], tuple[int, float]]], bool]] = [
        ("sequential", lambda impl: sequential(impl[0]), False),
        (f"threads x{args.threads}", lambda impl: threaded(impl[0], args.threads), True),
        (f"processes x{args.processes}", lambda impl: processes(impl[0], args.processes), False),
        (f"asyncio x{args.tasks}", lambda impl: concurrent_async(impl[1], args.tasks), True),
    ]
    for mode, run, batches in modes:
        impls: list[tuple[str, int, Any]] = [(ours_label, 1, ours("one")), (ours_label, 2, ours("two"))]
        if batches:
            impls.append((unbatched, 2, ours("two", batch=False)))
        if HIREDIS and mode in ("sequential", f"threads x{args.threads}"):
            impls.append((python_parser, 2, ours("two", parser=PythonParser)))
        for label, checked, impl in impls + theirs():
            stats = impl[2] if batches and label.startswith(ours_label) and impl[2] is not None else None
            rows.append(Row("redis", mode, label, checked, run(impl), stats=stats))
    return rows


def calibration_run(seconds: float) -> tuple[int, float]:
    """Empty Python function calls through `timed_loop`: the speed of this machine now."""

    def nothing(key: str) -> None:
        return None

    return timed_loop(nothing, seconds)


if __name__ == "__main__":
    main()
