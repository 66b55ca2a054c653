"""The ingest store: stream state, dedup marks and budget spend, committed together.

Exactly-once accounting needs the two to move as one: if spend were committed before the marks saying
"this point was counted", a crash in between would count the Collector's retry again; the other way
round it would lose the spend. So each backend extends a budget ledger (the engine reads and reserves
on the same ledger) with `apply`, which in one atomic step (an SQLite write transaction; one Redis Lua
script) reads the state of the request's streams, works out each event's increment, writes the new
state and marks, and adds the increments to the budgets — before the service answers 200.

Per event kind (see `events.py`):

* cumulative point: its key names the stream and its start time. The first point of a series counts its
  whole value if the series started after the store was created (`epoch_ns`), else it only sets the
  baseline (a stream older than the store holds spend from before we counted). Then: a point not newer
  than the last one is a resend or a late straggler (0); a lower value at the same start is a reset
  without a new start time (counted from zero); otherwise the increment is the difference.
* delta point and span: counted once per key (stream + start + time; trace id + span id). Marks are kept
  for `dedup_window` counted from the event's own time; an event older than that when it arrives could
  not be told from a resend, so it is refused (counted as `too_old`), never counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..budget.ledger import BudgetKey, Ledger
from ..budget.windows import Window
from .events import CostEvent


@dataclass(frozen=True)
class Target:
    """One budget instance an event counts against, in the window the event falls in."""

    key: BudgetKey
    window: Window


class IngestStore(Ledger, Protocol):
    """A budget ledger that can also apply a batch of cost events atomically (see the module doc)."""

    epoch_ns: int
    dedup_window: float
    """Seconds a delta point or span is remembered, counted back from its own timestamp."""

    def apply(self, events: Sequence[CostEvent], event_targets: Sequence[tuple[int, ...]],
              targets: Sequence[Target], *, now: float | None = None) -> list[int]:
        """Commit the events' increments and marks and add them to `targets` (by index); return the
        units counted for each event: 0 for a baseline or no change, -1 for one already counted."""
        ...

    def stream_count(self) -> int | None:
        """Series and dedup marks held (for `/metrics`; None when the backend cannot count cheaply)."""
        ...


def open_store(uri: str, *, retention: float, dedup_window: float = 3600.0) -> IngestStore:
    """The ingest store for a ledger URI: ``sqlite:///path`` (one processor), ``redis://`` (replicas),
    ``memory://`` (an SQLite database in memory: for tests; nothing survives a restart)."""
    from ..budget.errors import ConfigError

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "memory":
        from .sqlite_store import SQLiteIngestStore

        return SQLiteIngestStore(":memory:", retention=retention, dedup_window=dedup_window)
    if scheme == "sqlite":
        from .sqlite_store import SQLiteIngestStore

        rest = uri[len("sqlite://"):]
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ConfigError(f"{uri!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db",
                              field="ledger")
        synchronous = "NORMAL"
        for option in filter(None, query.split("&")):
            name, _, value = option.partition("=")
            if name != "synchronous":
                raise ConfigError(f"{uri!r}: unknown option {name!r} (the processor knows synchronous=)",
                                  field="ledger")
            synchronous = value
        return SQLiteIngestStore(path[1:], synchronous=synchronous, retention=retention, dedup_window=dedup_window)
    if scheme in ("redis", "rediss", "unix"):
        from .redis_store import RedisIngestStore

        return RedisIngestStore.from_url(uri, retention=retention, dedup_window=dedup_window)
    raise ConfigError(f"{uri!r}: the processor needs a ledger it can commit to atomically: "
                      "sqlite:///path (one processor) or redis://host:6379/0 (several)", field="ledger")
