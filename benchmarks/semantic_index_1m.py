"""The semantic cache's vector index on up to 1M REAL sentence embeddings: hnswlib, FAISS and usearch.

    nice -n 19 python benchmarks/semantic_index_1m.py --sizes 100000 --configs all
    nice -n 19 python benchmarks/semantic_index_1m.py --sizes 1000000 --configs hnsw16,hnsw32,vectorindex

Data: all-MiniLM-L6-v2 embeddings of real sentences (`benchmarks/real_embeddings.py` builds and embeds
the corpus; N may not exceed what is embedded), plus fow-cache's 600 pair sources. Queries, embedded by
the same model:
- `heldout` (1,000): corpus sentences that are not indexed: a new question whose neighbours are the
  same idea worded elsewhere;
- `neardup` (1,000): an indexed sentence with a word dropped or swapped, case or punctuation changed;
- `pair` (600): fow-cache's labelled pairs, side b asked, side a indexed.

Ground truth: exact top-4 by inner product (numpy brute force over every query of the sample, cached
per N). recall@1: the index's first answer is as similar as the exact first (ties count); recall@4: the
share of its 4 answers at least as similar as the exact 4th. `hit-grade recall@1` keeps the queries
whose exact best neighbour has similarity >= 0.85, the only ones a cache could serve: missing a distant
neighbour costs nothing, missing a near one costs a provider call.

Timing: each configuration builds in a fresh subprocess (its resident-memory growth over the build is
the index's memory; the vectors are loaded before), with every core (2 threads). Queries then run one at
a time, k=4 as the cache asks, on one thread pinned to one core (`--cpu`), after 100 warm-up queries;
wall and thread-CPU time per query, p50 and p99. The machine is shared, so the 1-minute load average is
recorded at the start and the end of each configuration: wall time above CPU time is time spent waiting
for a core. Single inserts into the built index (one thread) give the insert rate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from real_embeddings import CHUNK, bench_dir, embedded_count  # noqa: E402

DIM = 384
K = 4
EF_CONSTRUCTION = 128
BUILD_THREADS = os.cpu_count() or 1
N_HELDOUT_Q = 1000
N_NEARDUP_Q = 1000
N_INSERTS = 1000
HIT_GRADE = 0.85
WARMUP = 100
DEFAULT_EFS = (16, 32, 64, 128, 256)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- data --
def load_data(n: int, pad: bool = False) -> np.ndarray:
    """The first n corpus vectors, then the 600 fow-cache pair sources (so every pair query has its a).

    `pad`: when fewer than n sentences are embedded, fill the rest with SYNTHETIC vectors: mixtures
    normalise(a + t (b - a)) of two real embeddings a, b, t uniform in [0, 0.5), which stay in the span
    of real embeddings (unlike random 384-d vectors) but are not sentences. Results on padded data are
    an estimate and are labelled as such.
    """
    out_dir = bench_dir()
    available = embedded_count(out_dir)
    if n > available and not pad:
        raise SystemExit(
            f"N={n:,} but only {available:,} sentences are embedded: run "
            "`nice -n 19 python benchmarks/real_embeddings.py embed` longer, ask for a smaller N, or pass "
            "--pad to fill with synthetic mixtures of real vectors (labelled as such)"
        )
    real = min(n, available)
    pairs_a = np.load(out_dir / "pairs_a.npy")
    data = np.empty((n + len(pairs_a), DIM), dtype=np.float32)
    for chunk in range((real + CHUNK - 1) // CHUNK):
        block = np.load(out_dir / f"emb_{chunk:05d}.npy", mmap_mode="r")
        start = chunk * CHUNK
        take = min(CHUNK, real - start)
        data[start : start + take] = block[:take]
    rng = np.random.default_rng(7)
    for start in range(real, n, 100_000):
        stop = min(n, start + 100_000)
        a = data[rng.integers(0, real, stop - start)]
        b = data[rng.integers(0, real, stop - start)]
        mix = a + rng.uniform(0.0, 0.5, (stop - start, 1)).astype(np.float32) * (b - a)
        data[start:stop] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    data[n:] = pairs_a
    return data


def load_queries() -> tuple[np.ndarray, list[str], np.ndarray]:
    """The query sample (vectors, kinds) and, apart, held-out vectors not in it (for the insert rate)."""
    out_dir = bench_dir()
    meta = [json.loads(line) for line in (out_dir / "queries.jsonl").read_text().splitlines()]
    vectors = np.load(out_dir / "queries.npy")
    kinds = [m["kind"] for m in meta]
    heldout = [i for i, k in enumerate(kinds) if k == "heldout"]
    neardup = [i for i, k in enumerate(kinds) if k == "neardup"]
    pair = [i for i, k in enumerate(kinds) if k == "pair"]
    pick = heldout[:N_HELDOUT_Q] + neardup[:N_NEARDUP_Q] + pair
    spare = heldout[N_HELDOUT_Q:]
    return vectors[pick], [kinds[i] for i in pick], vectors[spare]


def exact_top(data: np.ndarray, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ids and similarities (blocked brute force), cached per data (size and a sample's hash)."""
    digest = hashlib.blake2b(data[:: max(1, len(data) // 4096)].tobytes(), digest_size=8).hexdigest()
    path = bench_dir() / f"truth_{len(data)}_{len(queries)}_{digest}.npz"
    if path.exists():
        saved = np.load(path)
        return saved["ids"], saved["sims"]
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_sims = np.zeros((len(queries), 0), dtype=np.float32)
    step = 100_000
    for start in range(0, len(data), step):
        sims = queries @ data[start : start + step].T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ids = np.concatenate([best_ids, top + start], axis=1)
        vals = np.concatenate([best_sims, np.take_along_axis(sims, top, axis=1)], axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        best_ids = np.take_along_axis(ids, order, axis=1)
        best_sims = np.take_along_axis(vals, order, axis=1)
    np.savez(path, ids=best_ids, sims=best_sims)
    return best_ids, best_sims


# -- index configurations --
class Config:
    """One library with one set of build parameters; `search_at(ef)` then `query(vec)` -> ids."""

    def build(self, data: np.ndarray) -> None: ...
    def search_at(self, ef: int) -> None: ...
    def query(self, vec: np.ndarray) -> list[int]: ...
    def insert(self, key: int, vec: np.ndarray) -> None: ...
    def deletes(self) -> bool:
        return True


class Hnswlib(Config):
    def __init__(self, m: int) -> None:
        self.m = m

    def build(self, data: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=len(data) + N_INSERTS, ef_construction=EF_CONSTRUCTION, M=self.m)
        self.index.add_items(data, np.arange(len(data)), num_threads=BUILD_THREADS)

    def search_at(self, ef: int) -> None:
        self.index.set_ef(ef)

    def query(self, vec: np.ndarray) -> list[int]:
        labels, _ = self.index.knn_query(vec[None, :], k=K, num_threads=1)
        return labels[0].tolist()

    def insert(self, key: int, vec: np.ndarray) -> None:
        self.index.add_items(vec[None, :], [key], num_threads=1)


class FaissHNSW(Config):
    def __init__(self, m: int, sq8: bool) -> None:
        self.m = m
        self.sq8 = sq8

    def build(self, data: np.ndarray) -> None:
        import faiss

        self.faiss = faiss
        faiss.omp_set_num_threads(BUILD_THREADS)
        if self.sq8:
            self.index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, self.m, faiss.METRIC_INNER_PRODUCT)
            self.index.train(data[:: max(1, len(data) // 100_000)])
        else:
            self.index = faiss.IndexHNSWFlat(DIM, self.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(data)
        faiss.omp_set_num_threads(1)

    def search_at(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def query(self, vec: np.ndarray) -> list[int]:
        _, labels = self.index.search(vec[None, :], K)
        return labels[0].tolist()

    def insert(self, key: int, vec: np.ndarray) -> None:
        self.index.add(vec[None, :])

    def deletes(self) -> bool:
        return False


class Usearch(Config):
    def __init__(self, m: int, dtype: str) -> None:
        self.m = m
        self.dtype = dtype

    def build(self, data: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=DIM, metric="cos" if self.dtype == "i8" else "ip", dtype=self.dtype, connectivity=self.m,
            expansion_add=EF_CONSTRUCTION,
        )
        self.index.add(np.arange(len(data)), data, threads=BUILD_THREADS)

    def search_at(self, ef: int) -> None:
        self.index.expansion_search = ef

    def query(self, vec: np.ndarray) -> list[int]:
        return [int(k) for k in self.index.search(vec, K, threads=1).keys]

    def insert(self, key: int, vec: np.ndarray) -> None:
        self.index.add(key, vec, threads=1)


class OurVectorIndex(Config):
    """The cache's own `VectorIndex` with its defaults: what a lookup really pays (string ids, wrapper)."""

    def build(self, data: np.ndarray) -> None:
        from otel_llmcost.cache.index import VectorIndex

        self.index = VectorIndex(DIM)
        self.index.add([str(i) for i in range(len(data))], data)

    def search_at(self, ef: int) -> None:
        self.index.expansion_search = ef

    def query(self, vec: np.ndarray) -> list[int]:
        return [int(entry_id) for entry_id, _ in self.index.search(vec, K)]

    def insert(self, key: int, vec: np.ndarray) -> None:
        self.index.add([str(key)], vec[None, :])


CONFIGS: dict[str, Callable[[], Config]] = {
    "hnsw16": lambda: Hnswlib(16),
    "hnsw32": lambda: Hnswlib(32),
    "faiss-hnsw32": lambda: FaissHNSW(32, sq8=False),
    "faiss-sq8-32": lambda: FaissHNSW(32, sq8=True),
    "usearch-f32": lambda: Usearch(16, "f32"),
    "usearch-f16": lambda: Usearch(16, "f16"),
    "usearch-i8": lambda: Usearch(16, "i8"),
    "vectorindex": OurVectorIndex,
}
LABELS = {
    "hnsw16": "hnswlib M16", "hnsw32": "hnswlib M32", "faiss-hnsw32": "FAISS HNSWFlat M32",
    "faiss-sq8-32": "FAISS HNSW SQ8 M32", "usearch-f32": "usearch f32 M16", "usearch-f16": "usearch f16 M16",
    "usearch-i8": "usearch i8 M16", "vectorindex": "VectorIndex (cache default)",
}


def _recall(data: np.ndarray, queries: np.ndarray, got: list[list[int]], truth_sims: np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:
    """Per query: top-1 correct (0/1) and share of the 4 answers among the exact 4, judged by similarity."""
    r1 = np.zeros(len(queries))
    r4 = np.zeros(len(queries))
    for i, ids in enumerate(got):
        ids = [j for j in ids if 0 <= j < len(data)]
        if not ids:
            continue
        sims = data[ids] @ queries[i]
        r1[i] = sims[0] >= truth_sims[i, 0] - 1e-5
        r4[i] = min(K, int(np.sum(sims >= truth_sims[i, K - 1] - 1e-5))) / K
    return r1, r4


def run_worker(name: str, n: int, efs: list[int], cpu: int, pad: bool) -> dict[str, Any]:
    data = load_data(n, pad)
    real = min(n, embedded_count(bench_dir()))
    queries, kinds, spare = load_queries()
    _, truth_sims = exact_top(data, queries)
    kinds_arr = np.array(kinds)
    hit_grade = truth_sims[:, 0] >= HIT_GRADE
    config = CONFIGS[name]()
    load_start = os.getloadavg()[0]
    rss0 = _rss_bytes()
    c0, t0 = time.process_time(), time.perf_counter()
    config.build(data)
    build_cpu, build_wall = time.process_time() - c0, time.perf_counter() - t0
    mib = (_rss_bytes() - rss0) / 2**20
    os.sched_setaffinity(0, {cpu})  # this thread only, from here on: queries and single inserts
    rows = []
    for ef in efs:
        config.search_at(ef)
        for q in queries[:WARMUP]:
            config.query(q)
        wall: list[float] = []
        cpu_us: list[float] = []
        got: list[list[int]] = []
        for q in queries:
            c, s = time.thread_time_ns(), time.perf_counter_ns()
            ids = config.query(q)
            wall.append((time.perf_counter_ns() - s) / 1000)
            cpu_us.append((time.thread_time_ns() - c) / 1000)
            got.append(ids)
        r1, r4 = _recall(data, queries, got, truth_sims)
        wall.sort()
        cpu_us.sort()
        rows.append({
            "ef": ef,
            "p50_wall_us": round(statistics.median(wall), 1), "p99_wall_us": round(wall[int(0.99 * len(wall))], 1),
            "p50_cpu_us": round(statistics.median(cpu_us), 1), "p99_cpu_us": round(cpu_us[int(0.99 * len(cpu_us))], 1),
            "recall1": round(float(r1.mean()), 4), "recall4": round(float(r4.mean()), 4),
            "recall1_hit_grade": round(float(r1[hit_grade].mean()), 4) if hit_grade.any() else None,
            **{f"recall1_{k}": round(float(r1[kinds_arr == k].mean()), 4) for k in ("heldout", "neardup", "pair")},
        })
        print(json.dumps({"config": name, "n": n, **rows[-1]}), file=sys.stderr, flush=True)
    inserts: list[float] = []
    for i, vec in enumerate(spare[:N_INSERTS]):
        c = time.thread_time_ns()
        config.insert(len(data) + i, vec)
        inserts.append((time.thread_time_ns() - c) / 1000)
    return {
        "config": name, "label": LABELS[name], "n": n, "real": real, "entries": len(data), "queries": len(queries),
        "hit_grade_queries": int(hit_grade.sum()), "deletes": config.deletes(),
        "build_wall_s": round(build_wall, 1), "build_cpu_s": round(build_cpu, 1),
        "mib": round(mib), "mib_per_100k": round(mib / (len(data) / 100_000), 1),
        "insert_p50_us": round(statistics.median(inserts), 1),
        "inserts_per_cpu_s": round(len(inserts) / (sum(inserts) / 1e6)),
        "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2), "rows": rows,
    }


def _n(result: dict[str, Any]) -> str:
    if result["real"] >= result["n"]:
        return f"{result['n']:,}"
    return f"{result['n']:,} ({result['real']:,} real + synthetic)"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| index | N | ef | recall@1 | recall@4 | hit-grade recall@1 | recall@1 heldout / near-dup / pair "
        "| p50 / p99 µs CPU | p50 / p99 µs wall | build s (wall / CPU) | MiB per 100k | inserts per CPU-s "
        "| load start / end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['label']} | {_n(r)} | {row['ef']} | {row['recall1']:.3f} | {row['recall4']:.3f} "
                f"| {_fmt(row['recall1_hit_grade'])} | {row['recall1_heldout']:.3f} / {row['recall1_neardup']:.3f} / "
                f"{row['recall1_pair']:.3f} | {row['p50_cpu_us']:.0f} / {row['p99_cpu_us']:.0f} "
                f"| {row['p50_wall_us']:.0f} / {row['p99_wall_us']:.0f} | {r['build_wall_s']:.0f} / "
                f"{r['build_cpu_s']:.0f} | {r['mib_per_100k']} | {r['inserts_per_cpu_s']:,} "
                f"| {r['load_start']} / {r['load_end']} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--configs", default="all", help=f"comma list of {', '.join(CONFIGS)}, or all")
    ap.add_argument("--efs", default=",".join(map(str, DEFAULT_EFS)))
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="core the query thread runs on")
    ap.add_argument("--out", default=str(bench_dir() / "results.jsonl"), help="JSON lines appended here")
    ap.add_argument("--pad", action="store_true", help="fill N past the embedded count with labelled synthetic vectors")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    efs = [int(e) for e in args.efs.split(",")]
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], int(args.worker[1]), efs, args.cpu, args.pad)))
        return
    names = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        exact_top(load_data(n, args.pad), load_queries()[0])  # ground truth once, before the workers
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name, str(n), "--efs", args.efs, "--cpu", str(args.cpu)]
                + (["--pad"] if args.pad else []),
                stdout=subprocess.PIPE, text=True, check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            with open(args.out, "a") as f:
                f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}) + "\n")
            results.append(result)
    print(table(results))


if __name__ == "__main__":
    main()
