"""Cost events: what the decoders hand to the accounting, one per metric point or span.

Money is integer nano-dollars (the ledgers' unit) from here on, so that sums are exact and a
cumulative stream's increments telescope: the spend counted for a stream is always `units(last value)`,
whatever the number of exports in between.
"""

from __future__ import annotations

from dataclasses import dataclass

CUMULATIVE = 1
"""A point of a cumulative stream: `key` names the stream and its start time; `units` the running total."""
DELTA = 2
"""A point of a delta stream: `key` names the stream and the point's (start, time); counted once."""
SPAN = 3
"""A priced span: `key` is the trace id + span id; counted once."""

SOURCE_COST_METRIC = "cost_metric"
SOURCE_TOKEN_METRIC = "token_metric"
SOURCE_SPAN = "span"

Attribution = dict[str, str]
"""The attributes a budget scope is matched against (resource and point or span attributes, as text)."""


@dataclass(slots=True)
class CostEvent:
    """One accountable observation; `units` are nano-USD (see the module doc and the kind constants)."""

    kind: int
    key: bytes
    time: int
    units: int
    attribution: Attribution
    source: str
    value: float = 0.0
    start: int = 0


def usd_units(amount: float) -> int:
    """USD (float, as OTLP carries it) → integer nano-dollars."""
    return int(round(amount * 1e9))
