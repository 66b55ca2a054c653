"""`VectorIndex`: nearest stored queries by inner product, exact while small, HNSW (hnswlib) beyond.

    index = VectorIndex(384)
    index.add(["e1", "e2"], vectors)           # n × 384 float32, L2-normalised
    index.search(query_vector, k=4)            # [("e2", 0.93), ("e1", 0.71)], most similar first
    index.remove("e1"); index.save(path); VectorIndex.load(path)

Why this shape (measured with benchmarks/cache_ann_compare.py on a shared 2-core machine, random unit
384-d vectors, inner product, M=16, efConstruction=100, ef=64, k=4; CPU time, as wall time there
mostly measured the neighbours' load):

    library   100k: build vec/CPU-s  query p50 CPU µs  recall@1 near-dup  MiB/100k  deletions
    hnswlib              517               995               0.840           174     yes (slots reused)
    faiss (HNSWFlat)     650              1011               0.835           175     no
    usearch              280              2609               0.845           180     yes

- hnswlib: query cost tied with FAISS, 2.6x cheaper than usearch, and it deletes (a cache evicts and
  expires all the time; FAISS's HNSW would grow with dead entries until rebuilt). Its build is 20%
  slower than FAISS's, which matters little: a cache inserts one entry per provider call.
- One index per namespace (tenant × model × prompt ...), never a global one with a namespace filter:
  with 1000 namespaces of 20 entries and popular questions stored by many tenants, a global index
  searched with over-fetch 4 / 64 / 512 then filtered found the namespace's best entry 8% / 70% / 83%
  of the time (at up to 3 ms), one index per namespace 100% at 24 µs.
- Search width: ef=64 by default, chosen on REAL sentence embeddings (benchmarks/semantic_index_1m.py:
  80k MiniLM embeddings of real sentences, hnswlib M16): recall@1 0.976 / 0.992 / 0.995 at ef
  32 / 64 / 128 for 0.31 / 0.54 / 0.99 ms CPU on a busy machine; queries with a cache-grade neighbour
  (cosine >= 0.85) found 99.9% of the time from ef 32. Random vectors (the table above, and 0.87 /
  0.97 at ef 64 / 128 on 100k) are the worst case a cache never sees. Set `expansion_search` to trade.
- Exact while small: up to `exact_limit` (2048) vectors a blocked brute-force scan costs the same CPU
  as a graph search (~210 µs at 2048, ~80 µs at 1024), is exact, builds in no time and needs no graph
  memory, so most (small) namespaces never build a graph.

Not thread-safe: the caller holds a lock (SemanticCache does).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Sequence
from typing import Any

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with the embeddings extra
    np = None  # type: ignore[assignment]

__all__ = ["VectorIndex"]

_MAGIC = b"LLMCVIX1"
_LEN = struct.Struct(">Q")
_BLOCK = 512
_BULK = 1000


def _threads(n: int) -> int:
    """hnswlib threads for inserting n vectors: every core for a bulk (re)build, one for a cache miss's insert."""
    # explicit: hnswlib reads -1 as "the index's default", which _new_graph sets to 1
    return (os.cpu_count() or 1) if n >= _BULK else 1


def _hnswlib() -> Any:
    try:
        import hnswlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "a semantic-cache namespace grew past the exact-search limit and needs hnswlib: "
            "pip install 'otel-llmcost[embeddings]'"
        ) from exc
    return hnswlib


class VectorIndex:
    """Ids (strings) with unit vectors; search by inner product (= cosine for unit vectors).

    `exact_limit`: up to this many vectors the search is a brute-force scan (exact); past it an HNSW
    graph with `connectivity` (M), `expansion_add` (efConstruction) and `expansion_search` (ef) is
    built and used from then on. Adding an id that is present replaces its vector.
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_limit: int = 2048,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        if np is None:  # pragma: no cover - depends on the environment
            raise ImportError("the semantic cache needs numpy: pip install 'otel-llmcost[embeddings]'")
        if dim < 1:
            raise ValueError(f"dim={dim}: a vector index needs at least one dimension")
        self.dim = dim
        self.exact_limit = exact_limit
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        # exact mode: rows [0, n) of _vectors, _row_ids[i] the id of row i, _row_of the reverse
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._row_ids: list[str] = []
        self._row_of: dict[str, int] = {}
        # graph mode: hnswlib labels are ints; _label_of / _id_of map them to our ids
        self._graph: Any = None
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_label = 0

    # -- state --
    @property
    def is_graph(self) -> bool:
        """Whether the index has turned into an HNSW graph."""
        return self._graph is not None

    @property
    def needs_graph(self) -> bool:
        """Exact, and past `exact_limit` (grown with `add(..., convert=False)`): due for its graph."""
        return self._graph is None and len(self._row_ids) > self.exact_limit

    def __len__(self) -> int:
        return len(self._label_of) if self._graph is not None else len(self._row_ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in (self._label_of if self._graph is not None else self._row_of)

    def _check(self, vectors: np.ndarray, n: int) -> np.ndarray:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.shape != (n, self.dim):
            raise ValueError(f"expected {n} vectors of {self.dim} dimensions, got shape {arr.shape}")
        return arr

    # -- exact mode --
    def _exact_add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        new_rows: list[np.ndarray] = []
        for entry_id, vec in zip(ids, vectors, strict=True):
            row = self._row_of.get(entry_id)
            if row is not None:
                self._vectors[row] = vec
            else:
                self._row_of[entry_id] = len(self._row_ids)
                self._row_ids.append(entry_id)
                new_rows.append(vec)
        if new_rows:
            needed = len(self._row_ids)
            if needed > len(self._vectors):
                grown = np.empty((max(needed, 2 * len(self._vectors), 16), self.dim), dtype=np.float32)
                start = needed - len(new_rows)
                grown[:start] = self._vectors[:start]
                self._vectors = grown
            self._vectors[needed - len(new_rows) : needed] = np.stack(new_rows)

    def _exact_remove(self, entry_id: str) -> bool:
        row = self._row_of.pop(entry_id, None)
        if row is None:
            return False
        last = len(self._row_ids) - 1
        if row != last:  # move the last row into the hole
            moved = self._row_ids[last]
            self._vectors[row] = self._vectors[last]
            self._row_ids[row] = moved
            self._row_of[moved] = row
        self._row_ids.pop()
        return True

    def _exact_search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        n = len(self._row_ids)
        if n == 0:
            return []
        # In blocks of _BLOCK rows: BLAS stays on this thread (a multi-threaded matrix-vector product
        # costs ~10x more CPU when the cores are busy, measured on 2-core machines).
        sims = np.empty(n, dtype=np.float32)
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            np.matmul(self._vectors[start:stop], vector, out=sims[start:stop])
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self._row_ids[i], float(sims[i])) for i in top]

    # -- graph mode --
    def _new_graph(self, capacity: int) -> Any:
        graph = _hnswlib().Index(space="ip", dim=self.dim)
        graph.init_index(
            max_elements=capacity, M=self.connectivity, ef_construction=self.expansion_add, allow_replace_deleted=True
        )
        graph.set_ef(self.expansion_search)
        graph.set_num_threads(1)
        return graph

    def _to_graph(self) -> None:
        n = len(self._row_ids)
        graph = self._new_graph(max(2 * n, 4096))
        labels = np.arange(n, dtype=np.int64)
        if n:
            graph.add_items(self._vectors[:n], labels, num_threads=_threads(n))
        self._label_of = {entry_id: i for i, entry_id in enumerate(self._row_ids)}
        self._id_of = dict(enumerate(self._row_ids))
        self._next_label = n
        self._graph = graph
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._row_ids = []
        self._row_of = {}

    def _graph_add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        for entry_id in ids:
            self._graph_remove(entry_id)
        graph = self._graph
        live = len(self._label_of)
        if live + len(ids) > graph.get_max_elements():
            graph.resize_index(max(2 * graph.get_max_elements(), live + len(ids)))
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        graph.add_items(vectors, labels, num_threads=_threads(len(ids)), replace_deleted=True)
        for entry_id, label in zip(ids, labels.tolist(), strict=True):
            self._label_of[entry_id] = label
            self._id_of[label] = entry_id

    def _graph_remove(self, entry_id: str) -> bool:
        label = self._label_of.pop(entry_id, None)
        if label is None:
            return False
        del self._id_of[label]
        self._graph.mark_deleted(label)
        return True

    def _graph_search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        live = len(self._label_of)
        if live == 0:
            return []
        k = min(k, live)
        self._graph.set_ef(max(self.expansion_search, k))
        try:
            labels, distances = self._graph.knn_query(vector.reshape(1, -1), k=k, num_threads=1)
        except RuntimeError:  # fewer than k reachable among deleted elements: ask for fewer
            if k == 1:
                return []
            return self._graph_search(vector, k // 2)
        out = []
        for label, distance in zip(labels[0].tolist(), distances[0].tolist(), strict=True):
            entry_id = self._id_of.get(int(label))
            if entry_id is not None:
                out.append((entry_id, 1.0 - float(distance)))
        return out

    # -- API --
    def add(self, ids: Sequence[str], vectors: np.ndarray, *, convert: bool = True) -> None:
        """Add (or replace) vectors: `vectors` is len(ids) × dim float32; duplicate ids: the last wins.

        `convert=False` keeps an exact index exact past `exact_limit` (`needs_graph` tells): building the
        graph takes seconds, which a caller on an app's call path leaves to a background thread."""
        ids = list(ids)
        if not ids:
            return
        arr = self._check(vectors, len(ids))
        if len(set(ids)) != len(ids):
            last = {entry_id: i for i, entry_id in enumerate(ids)}
            keep = sorted(last.values())
            ids = [ids[i] for i in keep]
            arr = arr[keep]
        if self._graph is None:
            self._exact_add(ids, arr)
            if convert and len(self._row_ids) > self.exact_limit:
                self._to_graph()
        else:
            self._graph_add(ids, arr)

    def search(self, vector: np.ndarray, k: int = 4) -> list[tuple[str, float]]:
        """Up to `k` (id, similarity) pairs, most similar first; similarity is the inner product."""
        if k < 1:
            return []
        query = self._check(vector, 1)[0]
        if self._graph is None:
            return self._exact_search(query, k)
        return self._graph_search(query, k)

    def ids(self) -> list[str]:
        """Every id held, in no particular order."""
        return list(self._label_of if self._graph is not None else self._row_ids)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """A copy of the vectors of `ids` (all held), len(ids) × dim float32.

        For carrying entries over into another index built meanwhile (SemanticCache's warm-up)."""
        if not ids:
            return np.empty((0, self.dim), dtype=np.float32)
        if self._graph is None:
            return self._vectors[[self._row_of[entry_id] for entry_id in ids]]
        labels = [self._label_of[entry_id] for entry_id in ids]
        return np.asarray(self._graph.get_items(labels), dtype=np.float32).reshape(len(ids), self.dim)

    def remove(self, entry_id: str) -> bool:
        """Forget one id; whether it was there."""
        if self._graph is None:
            return self._exact_remove(entry_id)
        return self._graph_remove(entry_id)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to one file (atomically: a temporary file renamed over `path`)."""
        header: dict[str, Any] = {
            "dim": self.dim,
            "exact_limit": self.exact_limit,
            "connectivity": self.connectivity,
            "expansion_add": self.expansion_add,
            "expansion_search": self.expansion_search,
        }
        if self._graph is None:
            header["mode"] = "exact"
            header["ids"] = list(self._row_ids)
            body = self._vectors[: len(self._row_ids)].tobytes()
        else:
            header["mode"] = "hnsw"
            header["labels"] = [[entry_id, label] for entry_id, label in self._label_of.items()]
            header["next_label"] = self._next_label
            body = self._graph_bytes()
        raw = json.dumps(header, ensure_ascii=False).encode("utf-8")
        target = os.fspath(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _LEN.pack(len(raw)) + raw + body)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _graph_bytes(self) -> bytes:
        fd, tmp = tempfile.mkstemp(suffix=".hnsw")
        os.close(fd)
        try:
            self._graph.save_index(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VectorIndex:
        """An index as `save` wrote it; ValueError for a file that is not one."""
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{os.fspath(path)!r} is not a saved VectorIndex")
        (size,) = _LEN.unpack_from(data, len(_MAGIC))
        start = len(_MAGIC) + _LEN.size
        header = json.loads(data[start : start + size].decode("utf-8"))
        body = data[start + size :]
        index = cls(
            header["dim"],
            exact_limit=header["exact_limit"],
            connectivity=header["connectivity"],
            expansion_add=header["expansion_add"],
            expansion_search=header["expansion_search"],
        )
        if header["mode"] == "exact":
            ids = header["ids"]
            vectors = np.frombuffer(body, dtype=np.float32).reshape(len(ids), index.dim).copy()
            index._exact_add(ids, vectors)
            return index
        fd, tmp = tempfile.mkstemp(suffix=".hnsw")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            graph = _hnswlib().Index(space="ip", dim=index.dim)
            graph.load_index(tmp, allow_replace_deleted=True)
        finally:
            os.unlink(tmp)
        graph.set_ef(index.expansion_search)
        graph.set_num_threads(1)
        index._graph = graph
        index._label_of = {entry_id: int(label) for entry_id, label in header["labels"]}
        index._id_of = {label: entry_id for entry_id, label in index._label_of.items()}
        index._next_label = int(header["next_label"])
        return index
