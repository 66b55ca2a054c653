"""How hard a query is, and the protocol every complexity classifier follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

Complexity = Literal["simple", "medium", "complex"]
"""`simple`: a lookup, a greeting, one fact, one trivial step; a small model answers it as well as a
large one. `medium`: one well-known task with a paragraph-sized answer (explain, summarize, draft, a
small function, standard troubleshooting). `complex`: several steps of reasoning or several interacting
constraints (design, non-obvious debugging, trade-off analysis, proofs, long multi-part work)."""

COMPLEXITIES: tuple[Complexity, ...] = ("simple", "medium", "complex")
"""The levels in increasing order."""


def parse_complexity(value: object) -> Complexity:
    """`value` as a Complexity; ValueError naming the allowed values otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        for level in COMPLEXITIES:
            if text == level:
                return level
    raise ValueError(f"{value!r} is not one of {', '.join(COMPLEXITIES)}")


def rank(level: Complexity) -> int:
    """0 for simple, 1 for medium, 2 for complex."""
    return COMPLEXITIES.index(level)


@runtime_checkable
class Classifier(Protocol):
    """Puts a query (the last user message) into one of the three complexity levels."""

    name: str

    def classify(self, text: str) -> Complexity:
        """The complexity of one query."""
        ...

    def classify_batch(self, texts: Sequence[str]) -> list[Complexity]:
        """The complexity of each query, in order (an embedding classifier embeds them in one batch)."""
        ...
