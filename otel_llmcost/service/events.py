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


MAX_UNITS = 10**15
"""The most one point, span or cumulative total may carry: $1,000,000. Anything above is refused as
malformed: it is no real LLM call, and it would overflow the ledgers' integers (Redis sums in Lua numbers,
exact to 2**53 nano-dollars) and fail every retry of the request."""
MAX_FUTURE_NS = 10 * 60 * 10**9
"""How far ahead of this host's clock a timestamp may be (clock skew). A point stamped further ahead would
make the real points after it look stale until that time comes."""


def usd_units(amount: float) -> int:
    """USD (float, as OTLP carries it) → integer nano-dollars (capped past `MAX_UNITS`, to be refused)."""
    scaled = amount * 1e9
    return int(round(scaled)) if scaled < 2**63 else 2**63


def mark_key(time_ns: int, identity: bytes) -> bytes:
    """The dedup key of a delta point or span: its own time (8 bytes, big-endian) then its identity.

    Time first keeps a request's new marks next to each other in the store's index (a few pages
    written per commit, where random keys touched one page per event), and lets old marks be pruned
    by key range. A resend carries the same time, hence the same key.
    """
    return min(max(time_ns, 0), 2**64 - 1).to_bytes(8, "big") + identity
