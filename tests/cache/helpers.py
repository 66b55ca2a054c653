"""Small real implementations of the embedder and hit-policy protocols, for the cache tests.

Not the product's (those live in `otel_llmcost.cache.embedders` / `.policy`): just enough to drive
the semantic cache with texts whose similarities are easy to reason about.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


class HashedBagOfWords:
    """Embeds a text as its lower-cased words hashed into `dim` signed buckets, L2-normalised.

    Texts with the same words (any order, any case, any punctuation) embed to the same vector; each
    differing word lowers the cosine. The empty text embeds to a fixed unit vector.
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower()) or ["<empty>"]
            for word in words:
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out


@dataclass(frozen=True)
class ThresholdDecision:
    hit: bool
    tier: str | None
    reason: str


class ThresholdPolicy:
    """Hit at `high` similarity or above ("high"), at `medium` or above ("medium"), else a miss."""

    def __init__(self, high: float = 0.95, medium: float = 0.85) -> None:
        self.high = high
        self.medium = medium
        self.seen: list[tuple[str, str, float]] = []

    def decide(self, query: str, candidate: str, similarity: float) -> ThresholdDecision:
        self.seen.append((query, candidate, similarity))
        if similarity >= self.high:
            return ThresholdDecision(True, "high", f"similarity {similarity:.3f} >= {self.high}")
        if similarity >= self.medium:
            return ThresholdDecision(True, "medium", f"similarity {similarity:.3f} >= {self.medium}")
        return ThresholdDecision(False, None, f"similarity {similarity:.3f} < {self.medium}")


class RefuseWord(ThresholdPolicy):
    """A threshold policy that also refuses any candidate containing `word` (a trap guard's stand-in)."""

    def __init__(self, word: str, high: float = 0.95, medium: float = 0.85) -> None:
        super().__init__(high, medium)
        self.word = word

    def decide(self, query: str, candidate: str, similarity: float) -> ThresholdDecision:
        if self.word in candidate.split():
            self.seen.append((query, candidate, similarity))
            return ThresholdDecision(False, None, f"candidate has {self.word!r}")
        return super().decide(query, candidate, similarity)
