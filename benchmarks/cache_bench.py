"""Cache benchmark: exact hit latency per backend, semantic index lookups, memory, insert rates.

    python benchmarks/cache_bench.py                     # 10k and 100k index sizes (a few minutes)
    python benchmarks/cache_bench.py --sizes 10000,100000,1000000   # adds 1M (long: builds a 1M graph)
    python benchmarks/cache_bench.py --redis-url redis://127.0.0.1:6379/0   # else a redis-server of its own

Prints markdown tables. Times are per operation: wall time (what a caller waits) and CPU time of the
calling thread (what it costs; on a shared machine wall time also counts the neighbours' load).

- exact hit: `ExactCache.get` of a present 2 KB value, memory:// / sqlite:/// / redis:// on loopback;
- semantic index: `VectorIndex.search(k=4)` on random unit 384-d vectors (the embedder's dimension),
  queries are stored vectors plus noise (cosine ~0.95: a cache hit) with recall@1 against exact search;
  index memory is the growth of this process's resident memory while the index is built;
- semantic lookup: `SemanticCache.lookup` end to end minus the embedding (a precomputed-vector
  embedder), 10k entries in one namespace, per backend;
- inserts: `VectorIndex.add` one vector at a time, and `SemanticCache.store` (index + storage) per backend.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_llmcost.cache import ExactCache, Namespace, SemanticCache, VectorIndex  # noqa: E402

DIM = 384


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def unit(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def near(data: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=n)
    noise = unit(n, seed + 1)
    q = data[picks] + 0.33 * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32), picks


def exact_top1(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(data), 20_000):
        sims = queries @ data[start : start + 20_000].T
        a = sims.argmax(axis=1)
        s = sims[np.arange(len(queries)), a]
        better = s > best
        best[better], arg[better] = s[better], a[better] + start
    return arg


@dataclass
class Timing:
    wall_p50: float
    wall_p99: float
    cpu_p50: float

    def cells(self) -> str:
        return f"{self.wall_p50:.1f} | {self.wall_p99:.1f} | {self.cpu_p50:.1f}"


def timed(fn: Callable[[int], object], n: int, warmup: int = 100) -> Timing:
    for i in range(min(warmup, n)):
        fn(i)
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(n):
        c, s = time.thread_time_ns(), time.perf_counter_ns()
        fn(i)
        wall.append((time.perf_counter_ns() - s) / 1000)
        cpu.append((time.thread_time_ns() - c) / 1000)
    wall.sort()
    return Timing(statistics.median(wall), wall[int(0.99 * (len(wall) - 1))], statistics.median(cpu))


class OwnRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install -y redis-server), or pass --redis-url")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Precomputed:
    """An embedder that looks vectors up by text: the benchmark times the cache, not the model."""

    dim = DIM

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


@dataclass(frozen=True)
class Accept:
    hit: bool
    tier: str | None
    reason: str


class AcceptAbove:
    def decide(self, query: str, candidate: str, similarity: float) -> Accept:
        ok = similarity >= 0.9
        return Accept(ok, "high" if ok else None, "")


def bench_exact(uris: dict[str, str], n: int) -> list[str]:
    rows = []
    value = os.urandom(2048)
    for name, uri in uris.items():
        cache = ExactCache(uri, ttl=3600, max_entries=100_000)
        keys = [f"{i:064x}" for i in range(1000)]
        for k in keys:
            cache.put(k, value)
        t = timed(lambda i, c=cache, ks=keys: c.get(ks[i % 1000]), n)
        miss = timed(lambda i, c=cache: c.get(f"absent-{i}"), n // 2)
        put = timed(lambda i, c=cache: c.put(f"new-{i}", value), n // 2)
        rows.append(f"| exact hit, {name} | {t.cells()} | miss {miss.wall_p50:.1f} · put {put.wall_p50:.1f} |")
        cache.clear()
        cache.close()
    return rows


def bench_index(sizes: list[int], queries: int) -> list[str]:
    rows = []
    for n in sizes:
        data = unit(n, seed=1)
        q, picks = near(data, queries, seed=7)
        truth = exact_top1(data, q)
        ids = [f"e{i}" for i in range(n)]
        before = rss()
        index = VectorIndex(DIM, expansion_search=64)
        c0, t0 = time.process_time(), time.perf_counter()
        step = 10_000
        for s in range(0, n, step):
            index.add(ids[s : s + step], data[s : s + step])
        build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        mem = (rss() - before) / (n / 100_000) / 2**20
        hits = 0

        def search(i: int, idx: VectorIndex = index, qs: np.ndarray = q, best: np.ndarray = truth) -> None:
            nonlocal hits
            got = idx.search(qs[i % queries], 4)
            hits += got[0][0] == f"e{best[i % queries]}"

        t = timed(search, queries, warmup=0)
        recall = hits / queries
        if index.is_graph:  # what a wider search buys (VectorIndex's expansion_search, hnswlib's ef)
            for ef in (128, 256):
                index.expansion_search = ef
                hits = 0
                te = timed(search, queries, warmup=0)
                rows.append(f"| index search k=4, {n:,} entries, ef={ef} | {te.cells()} | recall@1 {hits / queries:.3f} |")
            index.expansion_search = 64
            hits = 0
        extra = unit(1000, seed=99)
        c0 = time.process_time()
        for i in range(1000):
            index.add([f"x{i}"], extra[i : i + 1])
        single = 1000 / (time.process_time() - c0)
        rows.insert(
            len(rows) - (2 if index.is_graph else 0),
            f"| index search k=4, {n:,} entries (ef=64) | {t.cells()} | recall@1 {recall:.3f} · "
            f"{mem:.0f} MiB/100k · build {n / build_cpu:,.0f} vec/CPU-s ({build_wall:.0f} s wall) · "
            f"single add {single:,.0f}/CPU-s |",
        )
        print("\n".join(rows[-3:]), file=sys.stderr, flush=True)
        del index, data
    return rows


def bench_semantic(uris: dict[str, str], entries: int, n: int) -> list[str]:
    rows = []
    data = unit(entries, seed=3)
    q, _ = near(data, n, seed=5)
    embedder = Precomputed()
    texts = [f"stored question {i}" for i in range(entries)]
    asks = [f"asked question {i}" for i in range(n)]
    for t, v in zip(texts, data, strict=True):
        embedder.vectors[t] = v
    for t, v in zip(asks, q, strict=True):
        embedder.vectors[t] = v
    ns = Namespace.for_request(tenant="bench", provider="openai", model="m", messages=[])
    payload = os.urandom(2048)
    for name, uri in uris.items():
        cache = SemanticCache(embedder, AcceptAbove(), uri, ttl=3600, max_entries=entries * 2)
        c0, t0 = time.process_time(), time.perf_counter()
        for t in texts:
            cache.store(ns, t, payload)
        store_wall = entries / (time.perf_counter() - t0)
        store_cpu = entries / (time.process_time() - c0)
        look = timed(lambda i, c=cache: c.lookup(ns, asks[i % n]), n, warmup=20)
        rows.append(
            f"| semantic lookup (no embedding), {entries:,} entries, {name} | {look.cells()} "
            f"| store {store_wall:,.0f}/s wall, {store_cpu:,.0f}/CPU-s |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
        cache.clear()
        cache.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="index sizes, comma-separated")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--exact-ops", type=int, default=20_000)
    ap.add_argument("--semantic-entries", type=int, default=10_000)
    ap.add_argument("--redis-url")
    ap.add_argument("--skip", default="", help="comma-separated: exact,index,semantic")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    own = None if args.redis_url else OwnRedis()
    redis_url = args.redis_url or (own.url if own else "")
    tmp = tempfile.mkdtemp()
    uris = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp}/bench.db",
        "redis": f"{redis_url}?prefix=llmcost-bench",
    }
    rows = []
    try:
        if "exact" not in skip:
            rows += bench_exact(uris, args.exact_ops)
        if "semantic" not in skip:
            uris_sem = dict(uris, sqlite=f"sqlite:///{tmp}/bench-sem.db")
            rows += bench_semantic(uris_sem, args.semantic_entries, args.queries)
        if "index" not in skip:
            rows += bench_index([int(s) for s in args.sizes.split(",")], args.queries)
    finally:
        if own:
            own.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| operation | p50 µs (wall) | p99 µs (wall) | p50 µs (CPU) | notes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
