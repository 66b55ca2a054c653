"""VectorIndex: exact while small, HNSW past the limit, same answers either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otel_llmcost.cache import VectorIndex


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _exact_top(data: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-(data @ q))[:k]]


@pytest.mark.parametrize("exact_limit", [10_000, 64], ids=["exact", "hnsw"])
def test_search_finds_nearest_most_similar_first(exact_limit: int) -> None:
    """Near-duplicates of stored vectors find their source first, with its inner product as similarity."""
    data = _unit(500, 32, seed=1)
    index = VectorIndex(32, exact_limit=exact_limit)
    index.add([f"e{i}" for i in range(500)], data)
    assert index.is_graph is (exact_limit < 500)
    assert len(index) == 500
    rng = np.random.default_rng(2)
    found = 0
    for i in rng.integers(0, 500, size=50):
        q = data[i] + 0.1 * _unit(1, 32, seed=int(i) + 100)[0]
        q /= np.linalg.norm(q)
        result = index.search(q, k=4)
        assert len(result) == 4
        sims = [s for _, s in result]
        assert sims == sorted(sims, reverse=True)
        top = _exact_top(data, q, 1)[0]
        assert result[0][1] == pytest.approx(float(data[top] @ q), abs=1e-4) or result[0][0] != f"e{top}"
        found += result[0][0] == f"e{top}"
    assert found >= 49  # exact: all; HNSW on near-duplicates: all or nearly


def test_turns_into_a_graph_past_the_limit_and_keeps_entries() -> None:
    """Crossing exact_limit builds the HNSW graph from every vector held so far."""
    data = _unit(101, 16, seed=3)
    index = VectorIndex(16, exact_limit=100)
    index.add([f"e{i}" for i in range(100)], data[:100])
    assert not index.is_graph
    index.add(["e100"], data[100:])
    assert index.is_graph and len(index) == 101
    for i in (0, 50, 100):
        assert index.search(data[i], k=1)[0][0] == f"e{i}"


@pytest.mark.parametrize("exact_limit", [10_000, 8], ids=["exact", "hnsw"])
def test_remove_and_replace(exact_limit: int) -> None:
    """A removed id is never returned; adding an id again replaces its vector."""
    data = _unit(20, 16, seed=4)
    index = VectorIndex(16, exact_limit=exact_limit)
    index.add([f"e{i}" for i in range(20)], data)
    assert index.remove("e3") is True
    assert index.remove("e3") is False
    assert "e3" not in index and len(index) == 19
    assert all(entry_id != "e3" for entry_id, _ in index.search(data[3], k=19))
    index.add(["e5"], data[7:8])  # e5 now points where e7 is
    top_two = {entry_id for entry_id, _ in index.search(data[7], k=2)}
    assert top_two == {"e5", "e7"}
    assert len(index) == 19


def test_k_larger_than_the_index_and_empty_index() -> None:
    """Asking for more than there is returns all there is; an empty index returns nothing."""
    index = VectorIndex(8)
    assert index.search(_unit(1, 8, 0)[0], k=4) == []
    index.add(["a", "b"], _unit(2, 8, 1))
    assert len(index.search(_unit(1, 8, 2)[0], k=10)) == 2


def test_graph_search_after_many_removals() -> None:
    """A graph with most of its entries removed still answers with the live ones only."""
    data = _unit(300, 16, seed=5)
    index = VectorIndex(16, exact_limit=50)
    index.add([f"e{i}" for i in range(300)], data)
    for i in range(290):
        index.remove(f"e{i}")
    result = index.search(data[295], k=4)
    assert result and result[0][0] == "e295"
    assert all(int(entry_id[1:]) >= 290 for entry_id, _ in result)
    index.add([f"n{i}" for i in range(300)], _unit(300, 16, seed=6))  # reuses deleted slots
    assert len(index) == 310


def test_wrong_shapes_are_refused() -> None:
    """Vectors of the wrong dimension or count raise ValueError."""
    index = VectorIndex(8)
    with pytest.raises(ValueError, match="8 dimensions"):
        index.add(["a"], _unit(1, 9, 0))
    with pytest.raises(ValueError):
        index.add(["a", "b"], _unit(1, 8, 0))
    with pytest.raises(ValueError):
        index.search(_unit(1, 4, 0)[0])


@pytest.mark.parametrize("exact_limit", [10_000, 32], ids=["exact", "hnsw"])
def test_save_and_load_give_the_same_answers(tmp_path: Path, exact_limit: int) -> None:
    """A saved index loads with the same ids, removals and search results."""
    data = _unit(100, 16, seed=7)
    index = VectorIndex(16, exact_limit=exact_limit)
    index.add([f"e{i}" for i in range(100)], data)
    index.remove("e10")
    path = tmp_path / "ns.vix"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert len(loaded) == 99 and loaded.is_graph == index.is_graph
    for q in _unit(10, 16, seed=8):
        assert loaded.search(q, k=3) == index.search(q, k=3)
    loaded.add(["new"], data[10:11])
    assert loaded.search(data[10], k=1)[0][0] == "new"


def test_load_refuses_other_files(tmp_path: Path) -> None:
    """Loading a file that is not a saved index is a ValueError."""
    path = tmp_path / "x"
    path.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a saved VectorIndex"):
        VectorIndex.load(path)
