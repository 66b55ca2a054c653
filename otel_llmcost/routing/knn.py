"""A learned complexity classifier: the nearest labelled examples in a sentence-embedding space vote.

    from otel_llmcost.cache.embedders import MiniLMEmbedder
    from otel_llmcost.routing import KNNClassifier, load_examples
    knn = KNNClassifier(MiniLMEmbedder(), load_examples("my-queries.jsonl"), k=5)
    knn.classify("Can you help me design a sharding scheme for our orders table?")   # 'complex'

The examples are embedded once, at construction; each query then costs one embedding and one
matrix-vector product. Any `otel_llmcost.cache.embedders.Embedder` works (rows L2-normalised, so a
dot product is the cosine similarity). Votes are weighted by similarity by default; ties go to the
label of the nearest example among the tied labels. Needs numpy (the ``embeddings`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .complexity import COMPLEXITIES, Complexity
from .examples import LabelledExample

if TYPE_CHECKING:
    import numpy as np

    from ..cache.embedders import Embedder


class KNNClassifier:
    """k nearest labelled examples vote on a query's complexity (similarity-weighted or majority)."""

    name = "knn"

    def __init__(
        self,
        embedder: Embedder,
        examples: Sequence[LabelledExample],
        k: int = 5,
        *,
        weighted: bool = True,
    ) -> None:
        import numpy as np

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        if not examples:
            raise ValueError("KNNClassifier needs at least one labelled example")
        self.embedder = embedder
        self.examples = list(examples)
        self.k = min(k, len(self.examples))
        self.weighted = weighted
        vectors = np.asarray(embedder.embed([e.text for e in self.examples]), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(self.examples):
            raise ValueError(
                f"the embedder returned shape {vectors.shape} for {len(self.examples)} examples; expected (n, dim)"
            )
        self._vectors = vectors
        self._labels = np.array([COMPLEXITIES.index(e.label) for e in self.examples], dtype=np.int64)

    def classify(self, text: str) -> Complexity:
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: Sequence[str]) -> list[Complexity]:
        if not texts:
            return []
        similarities = self._similarities(texts)
        return [self._vote(row) for row in similarities]

    def neighbours(self, text: str, k: int | None = None) -> list[tuple[LabelledExample, float]]:
        """The `k` nearest examples to `text` and their cosine similarity, nearest first (to explain)."""
        import numpy as np

        row = self._similarities([text])[0]
        count = min(k or self.k, len(self.examples))
        order = np.argsort(-row, kind="stable")[:count]
        return [(self.examples[i], float(row[i])) for i in order]

    def _similarities(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        queries = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self._vectors.shape[1]:
            raise ValueError(f"the embedder returned shape {queries.shape}; expected (n, {self._vectors.shape[1]})")
        return queries @ self._vectors.T

    def _vote(self, row: np.ndarray) -> Complexity:
        import numpy as np

        order = np.argsort(-row, kind="stable")[: self.k]
        scores = [0.0, 0.0, 0.0]
        nearest: dict[int, int] = {}  # label → rank of its nearest example among the k
        for rank, index in enumerate(order):
            label = int(self._labels[index])
            scores[label] += max(float(row[index]), 0.0) + 1e-6 if self.weighted else 1.0
            nearest.setdefault(label, rank)
        best = max(scores)
        tied = [label for label in range(3) if scores[label] == best and label in nearest]
        winner = min(tied, key=lambda label: nearest[label])
        return COMPLEXITIES[winner]
