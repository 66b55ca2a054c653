"""A cold replica's first semantic lookup on a big namespace: before (inline build) and after (catch-up).

    python benchmarks/semantic_warmup_bench.py                 # 100k entries in a redis-server of its own
    python benchmarks/semantic_warmup_bench.py --entries 20000 --backend sqlite

Replica A's entries (random unit 384-d vectors, the MiniLM dimension) are written straight into the
storage. Then, for a replica B that has never seen the namespace:

- before: what B's first lookup did until now, timed as such: fetch every vector of the namespace and
  add them all to a new `VectorIndex` (hnswlib on every core), then one search;
- after: `SemanticCache.lookup` (a precomputed-vector embedder, so the model is not timed): its wall
  time, the entries indexed when it returned, then lookups every ~10 ms while the catch-up thread
  indexes the rest (their wall time: what a call waits, lock waits included), until it is done.

Prints markdown. Wall times on a shared machine include the neighbours' load; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_llmcost.cache import Namespace, SemanticCache, VectorIndex  # noqa: E402
from otel_llmcost.cache.semantic import _encode  # noqa: E402 - the stored format, to seed fast
from otel_llmcost.cache.storage import CacheStorage, open_storage  # noqa: E402
from otel_llmcost.testing.processes import RedisServer  # noqa: E402

DIM = 384


class Precomputed:
    """Embeds by lookup: the benchmark times the cache, not a model."""

    dim = DIM

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


@dataclass(frozen=True)
class Verdict:
    hit: bool
    tier: str | None
    reason: str = ""


class AcceptAbove:
    def decide(self, query: str, candidate: str, similarity: float) -> Verdict:
        return Verdict(similarity >= 0.9, "high" if similarity >= 0.9 else None)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def seed(storage: CacheStorage, ns_id: str, n: int) -> np.ndarray:
    vectors = unit(np.random.default_rng(1), n)
    for i in range(n):
        storage.add(ns_id, f"e{i:07d}", vectors[i].tobytes(), _encode(ns_id, f"q{i}", b"answer"), None)
        if i and i % 20_000 == 0:
            print(f"  seeded {i:,}", file=sys.stderr)
    return vectors


def before(storage: CacheStorage, ns_id: str, query: np.ndarray) -> tuple[float, float]:
    """The old first lookup: every vector fetched and indexed inline. (wall s, process CPU s)."""
    w, c = time.perf_counter(), time.process_time()
    batch = storage.fetch_vectors(ns_id)
    ids = [e for e, _ in batch.entries]
    index = VectorIndex(DIM)
    index.add(ids, np.frombuffer(b"".join(v for _, v in batch.entries), dtype=np.float32).reshape(len(ids), DIM))
    index.search(query, 4)
    return time.perf_counter() - w, time.process_time() - c


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    xs = sorted(seconds)
    p50, p99 = (1000 * xs[int(q * (len(xs) - 1))] for q in (0.5, 0.99))
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {1000 * xs[-1]:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--backend", choices=["redis", "sqlite", "memory"], default="redis")
    ap.add_argument("--skip-before", action="store_true", help="do not time the old inline build")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp()
    server = None
    if args.backend == "redis":
        server = RedisServer(workdir)
        server.start()
        uri = server.url
    elif args.backend == "sqlite":
        uri = f"sqlite:///{workdir}/warmup.db"
    else:
        uri = "memory://"
    try:
        storage = open_storage(uri, max_entries=None, ttl=None)
        ns = Namespace.for_request(tenant="bench", provider="openai", model="m", messages=[], tools=None, params={})
        print(f"seeding {args.entries:,} entries in {args.backend}", file=sys.stderr)
        stored = seed(storage, ns.id, args.entries)
        rng = np.random.default_rng(2)
        queries = {f"ask{i}": v for i, v in enumerate(unit(rng, 2000))}
        twin = stored[-1] + 0.05 * unit(rng, 1)[0]  # the newest entry's paraphrase: indexed last
        queries["twin"] = twin / np.linalg.norm(twin)
        print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
        if not args.skip_before:
            wall, cpu = before(storage, ns.id, queries["ask0"])
            print(f"before: first lookup {wall:.1f} s wall, {cpu:.1f} s CPU (every entry indexed inline)", flush=True)
        b_storage = storage if args.backend == "memory" else open_storage(uri, max_entries=None, ttl=None)
        b = SemanticCache(Precomputed(queries), AcceptAbove(), storage=b_storage)
        b_storage.fetch_vectors("another-namespace", limit=1)  # a replica's connection is warm already
        w = time.perf_counter()
        b.lookup(ns, "twin")
        first = time.perf_counter() - w
        indexed = b.local_index_sizes()[ns.id]
        print(f"after: first lookup {first * 1000:.1f} ms wall, {indexed:,} entries indexed when it returned")
        waits: list[float] = []
        start, c0, i = time.perf_counter(), time.process_time(), 1
        hit_at = None
        while b.warming():
            w = time.perf_counter()
            hit = b.lookup(ns, "twin" if i % 10 == 0 else f"ask{i % 2000}")
            waits.append(time.perf_counter() - w)
            if hit is not None and hit_at is None:
                hit_at = time.perf_counter() - start
            i += 1
            time.sleep(0.01)
        took, cpu = time.perf_counter() - start, time.process_time() - c0
        if hit_at is None and b.lookup(ns, "twin") is not None:
            hit_at = took
        print(f"catch-up: {took:.1f} s wall, {cpu:.1f} s process CPU, {b.local_index_sizes()[ns.id]:,} indexed; "
              f"{len(waits)} lookups meanwhile: {percentiles(waits)}; the twin of the newest entry hit after "
              f"{hit_at if hit_at is None else round(hit_at, 1)} s; load average {os.getloadavg()[0]:.1f}")
        settled = []
        for j in range(300):
            w = time.perf_counter()
            b.lookup(ns, f"ask{j}")
            settled.append(time.perf_counter() - w)
            time.sleep(0.01)
        print(f"lookups once caught up: {percentiles(settled)}")
        b.close()
    finally:
        if server is not None:
            server.kill()


if __name__ == "__main__":
    main()
