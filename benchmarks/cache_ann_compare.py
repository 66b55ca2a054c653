"""Which ANN library backs the semantic cache's vector index: hnswlib, usearch or FAISS, measured here.

    python benchmarks/cache_ann_compare.py                  # 100k and 1M, every library that imports
    python benchmarks/cache_ann_compare.py --sizes 100000 --libs usearch
    python benchmarks/cache_ann_compare.py --filtering      # one global index vs one index per namespace (20k)

Data: random L2-normalised 384-d float32 vectors (fixed seed), inner product (the embedder's output is
normalised, so inner product = cosine). Every library gets the same HNSW parameters (M=16,
efConstruction=100, efSearch=64) and the same 2 build threads; queries run one at a time on one thread,
as the cache asks them. Each (library, size) runs in a fresh subprocess so its resident memory can be
measured as the growth of the process while it builds (the data array is allocated before).

Reported: build rate (batch insert), single-vector insert rate into the built index, p50/p99 query
latency at k=4, all in CPU time of the process (or thread, for queries) as well as wall time, since
the machines we measure on are shared and wall time there mostly measures the neighbours; recall@1 against exact search for two query sets: `random` (fresh random unit
vectors: the worst case, random 384-d points have almost equidistant neighbours) and `near` (a stored
vector plus noise, cosine ~0.95 to it: what a cache hit looks like), and memory per 100k entries.
Random data is harder for HNSW than real embeddings, which cluster: the recall here is a lower bound.
The same comparison on real MiniLM sentence embeddings, with an ef sweep: `semantic_index_1m.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

DIM = 384
K = 4
M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 64
N_QUERIES = 1000
N_SINGLE_INSERTS = 2000
THREADS = 2


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        block = rng.standard_normal((min(step, n - start), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def near_queries(data: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Stored vectors plus noise, renormalised: cosine ~0.95 to their source."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=n)
    noise = rng.standard_normal((n, DIM), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = data[picks] + 0.33 * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def exact_top1(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    step = 200_000
    for start in range(0, len(data), step):
        sims = queries @ data[start : start + step].T
        a = sims.argmax(axis=1)
        s = sims[np.arange(len(queries)), a]
        better = s > best
        best[better] = s[better]
        arg[better] = a[better] + start
    return arg


class _Lib:
    name = ""

    def build(self, data: np.ndarray) -> None: ...
    def add_one(self, key: int, vec: np.ndarray) -> None: ...
    def query(self, vec: np.ndarray) -> int: ...


class _Hnswlib(_Lib):
    name = "hnswlib"

    def build(self, data: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=len(data) + N_SINGLE_INSERTS, ef_construction=EF_CONSTRUCTION, M=M)
        self.index.set_num_threads(THREADS)
        self.index.add_items(data, np.arange(len(data)))
        self.index.set_ef(EF_SEARCH)

    def add_one(self, key: int, vec: np.ndarray) -> None:
        self.index.add_items(vec[None, :], [key], num_threads=1)

    def query(self, vec: np.ndarray) -> int:
        labels, _ = self.index.knn_query(vec[None, :], k=K, num_threads=1)
        return int(labels[0][0])


class _Usearch(_Lib):
    name = "usearch"

    def build(self, data: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=DIM,
            metric="ip",
            dtype="f32",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
            expansion_search=EF_SEARCH,
        )
        self.index.add(np.arange(len(data)), data, threads=THREADS)

    def add_one(self, key: int, vec: np.ndarray) -> None:
        self.index.add(key, vec, threads=1)

    def query(self, vec: np.ndarray) -> int:
        m = self.index.search(vec, K, threads=1)
        return int(m.keys[0])


class _Faiss(_Lib):
    name = "faiss"

    def build(self, data: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.hnsw.efSearch = EF_SEARCH
        self.index.add(data)
        faiss.omp_set_num_threads(1)

    def add_one(self, key: int, vec: np.ndarray) -> None:
        self.index.add(vec[None, :])

    def query(self, vec: np.ndarray) -> int:
        _, labels = self.index.search(vec[None, :], K)
        return int(labels[0][0])


LIBS: dict[str, type[_Lib]] = {"hnswlib": _Hnswlib, "usearch": _Usearch, "faiss": _Faiss}


def run_one(lib_name: str, n: int) -> dict[str, Any]:
    data = unit_vectors(n, seed=1)
    q_random = unit_vectors(N_QUERIES, seed=2)
    q_near = near_queries(data, N_QUERIES, seed=3)
    truth_random = exact_top1(data, q_random)
    truth_near = exact_top1(data, q_near)
    extra = unit_vectors(N_SINGLE_INSERTS, seed=4)
    lib = LIBS[lib_name]()
    rss0 = _rss_bytes()
    c0, t0 = time.process_time(), time.perf_counter()
    lib.build(data)
    build_cpu, build_s = time.process_time() - c0, time.perf_counter() - t0
    rss1 = _rss_bytes()
    for q in q_random[:50]:  # warm up
        lib.query(q)
    wall: list[float] = []
    cpu: list[float] = []
    hits = {"random": 0, "near": 0}
    for kind, queries, truth in (("random", q_random, truth_random), ("near", q_near, truth_near)):
        for q, t in zip(queries, truth, strict=True):
            c, s = time.thread_time_ns(), time.perf_counter_ns()
            got = lib.query(q)
            wall.append((time.perf_counter_ns() - s) / 1000)
            cpu.append((time.thread_time_ns() - c) / 1000)
            hits[kind] += got == t
    wall.sort()
    cpu.sort()
    c0 = time.process_time()
    for i, v in enumerate(extra):
        lib.add_one(n + i, v)
    single_cpu = time.process_time() - c0
    return {
        "lib": lib_name,
        "n": n,
        "build_wall_s": round(build_s, 1),
        "build_cpu_s": round(build_cpu, 1),
        "build_rate_cpu": round(n / build_cpu),
        "single_insert_rate_cpu": round(N_SINGLE_INSERTS / single_cpu),
        "p50_cpu_us": round(statistics.median(cpu), 1),
        "p99_cpu_us": round(cpu[int(len(cpu) * 0.99)], 1),
        "p50_wall_us": round(statistics.median(wall), 1),
        "p99_wall_us": round(wall[int(len(wall) * 0.99)], 1),
        "recall1_random": hits["random"] / N_QUERIES,
        "recall1_near": hits["near"] / N_QUERIES,
        "mib_per_100k": round((rss1 - rss0) / (n / 100_000) / 2**20, 1),
    }


def run_filtering(n: int = 20_000) -> list[dict[str, Any]]:
    """One global hnswlib index searched with over-fetch + namespace filter, against one index per
    namespace (our `VectorIndex`: exact up to 2048 entries, hnswlib beyond).

    `n` entries spread over namespaces of equal size; 300 popular questions are each stored by up to
    50 tenants (reworded) and asked by one of them, so other tenants' copies crowd the global index's
    neighbours. recall@1 = the first in-namespace hit is the exact in-namespace best. Times are CPU µs
    of the querying thread."""
    import hnswlib

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    from otel_llmcost.cache.index import VectorIndex

    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(11)
    for ns_size in (20, 200, 5_000):
        n_ns = n // ns_size
        ns_of = np.arange(n) // ns_size
        data = unit_vectors(n, seed=1)
        # Popular questions: each of 300 is stored (reworded: cosine ~0.97) by up to 50 tenants, and
        # asked by one of them. Other tenants' copies crowd the global neighbours of the query.
        popular = unit_vectors(300, seed=2)
        q = np.empty_like(popular)
        q_ns = np.empty(300, dtype=np.int64)
        for j, p in enumerate(popular):
            owners = rng.choice(n_ns, size=min(50, n_ns), replace=False)
            for ns in owners:
                slot = int(ns) * ns_size + int(rng.integers(ns_size))
                v = p + 0.25 * unit_vectors(1, seed=1000 + j * 64 + int(ns) % 64)[0]
                data[slot] = v / np.linalg.norm(v)
            q_ns[j] = owners[0]
            v = p + 0.33 * unit_vectors(1, seed=50_000 + j)[0]
            q[j] = v / np.linalg.norm(v)
        truth = np.array(
            [int(np.argmax(data[ns * ns_size : (ns + 1) * ns_size] @ v)) + ns * ns_size for v, ns in zip(q, q_ns, strict=True)]
        )
        glob = hnswlib.Index(space="ip", dim=DIM)
        glob.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M)
        glob.add_items(data, np.arange(n), num_threads=THREADS)
        for overfetch in (4, 64, 512):
            glob.set_ef(max(EF_SEARCH, overfetch))
            ok = 0
            cpu: list[float] = []
            for vec, ns, best in zip(q, q_ns, truth, strict=True):
                c = time.thread_time_ns()
                labels, _ = glob.knn_query(vec[None, :], k=overfetch, num_threads=1)
                found = next((int(k) for k in labels[0] if ns_of[int(k)] == ns), None)
                cpu.append((time.thread_time_ns() - c) / 1000)
                ok += found == best
            rows.append(
                {"layout": f"global hnswlib, over-fetch {overfetch} + filter", "namespaces": n_ns, "ns_size": ns_size,
                 "recall1_near": ok / len(q), "p50_us": round(statistics.median(cpu), 1)}
            )
        rss0 = _rss_bytes()
        per_ns = []
        for ns in range(n_ns):
            idx = VectorIndex(DIM)
            sl = slice(ns * ns_size, (ns + 1) * ns_size)
            idx.add([str(i) for i in range(sl.start, sl.stop)], data[sl])
            per_ns.append(idx)
        mib = (_rss_bytes() - rss0) / 2**20
        ok = 0
        cpu = []
        for vec, ns, best in zip(q, q_ns, truth, strict=True):
            c = time.thread_time_ns()
            got = per_ns[int(ns)].search(vec, K)
            cpu.append((time.thread_time_ns() - c) / 1000)
            ok += int(got[0][0]) == best
        rows.append(
            {"layout": f"one VectorIndex per namespace ({mib:.0f} MiB for all)", "namespaces": n_ns,
             "ns_size": ns_size, "recall1_near": ok / len(q), "p50_us": round(statistics.median(cpu), 1)}
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--libs", default="hnswlib,usearch,faiss")
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "N"))
    ap.add_argument("--filtering", action="store_true")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker[0], int(args.worker[1]))))
        return
    if args.filtering:
        rows = run_filtering()
        print("| layout | namespaces | entries/ns | recall@1 (near) | p50 CPU µs |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['layout']} | {r['namespaces']} | {r['ns_size']} | {r['recall1_near']:.3f} | {r['p50_us']} |")
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for lib in args.libs.split(","):
            try:
                __import__({"faiss": "faiss", "usearch": "usearch.index", "hnswlib": "hnswlib"}[lib])
            except ImportError:
                print(f"{lib}: not installed, skipped", file=sys.stderr)
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--worker", lib, str(n)], capture_output=True, text=True, check=True
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
    print("| library | entries | build (vec per CPU-s) | single insert (vec per CPU-s) | query p50 / p99 CPU µs "
          "| query p50 / p99 wall µs | recall@1 random | recall@1 near-dup | MiB / 100k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['lib']} | {r['n']:,} | {r['build_rate_cpu']:,} | {r['single_insert_rate_cpu']:,} "
            f"| {r['p50_cpu_us']} / {r['p99_cpu_us']} | {r['p50_wall_us']} / {r['p99_wall_us']} "
            f"| {r['recall1_random']:.3f} | {r['recall1_near']:.3f} | {r['mib_per_100k']} |"
        )

if __name__ == "__main__":
    main()
