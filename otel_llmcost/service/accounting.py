"""Cost events → budgets: scope matching, one atomic commit per request, alerts after it.

The request's events are matched to budget instances (a budget and scope key in the window the event
falls in) the way the engine matches a call, and the store commits increments, stream state and dedup
marks together (`store.py`). Budgets whose spend moved are then checked for alerts through the
engine's own alert path (once per level per window, across restarts and replicas) by `check_alerts`,
which the service runs on a background thread about every second: a request touching 500 per-user
budgets must not wait for 500 reads. An alert may be re-sent if the process dies between commit and
send; spend is never counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter

from ..budget.engine import BudgetEngine, _Match
from ..budget.ledger import BudgetKey
from ..budget.policy import DIMENSIONS, Budget
from ..budget.windows import Window
from .events import CUMULATIVE, CostEvent
from .store import IngestStore, Target

_log = logging.getLogger(__name__)
_MATCH_CACHE_LIMIT = 100_000
_CELLS_LIMIT = 20_000  # scope values whose budget instances are kept (a few hundred bytes each)
_time = attrgetter("time")
_source = attrgetter("source")


@dataclass
class Applied:
    """What one commit counted: per event increments (-1: already counted) and nano-USD per source."""

    increments: list[int] = field(default_factory=list)
    units_by_source: dict[str, int] = field(default_factory=dict)
    counted: int = 0
    duplicates: int = 0
    too_old: int = 0


class _WindowCache:
    """The window of one budget at a time, reused while the time stays in its current slice.

    `WindowSpec.at` builds datetimes in a time zone (tens of microseconds); events of one export fall in
    the same window almost always.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._window: Window | None = None
        self.low = self.high = 0.0
        slice_seconds = getattr(budget.window, "slice_seconds", None)
        self._slice = float(slice_seconds) if slice_seconds else None

    def at(self, seconds: float) -> Window:
        window = self._window
        if window is not None and self.low <= seconds < self.high:
            return window
        window = self.budget.window.at(datetime.fromtimestamp(seconds, timezone.utc))
        high = window.end.timestamp()
        low = high - self._slice if self._slice is not None else window.start.timestamp()
        self._window, self.low, self.high = window, low, high
        return window


class Accountant:
    """Applies cost events to an engine's budgets through an ingest store (see the module doc)."""

    def __init__(self, engine: BudgetEngine, store: IngestStore) -> None:
        self.engine = engine
        self.store = store
        self._budgets = list(engine.config.budgets)
        self._windows = [_WindowCache(b) for b in self._budgets]
        # The attributes any budget scope reads: scope keys depend on nothing else, so the matches
        # are cached by those values alone (per-user budgets: about one entry per user).
        self._reads = tuple(dict.fromkeys(name for b in self._budgets for name in _scope_attributes(b)))
        self._scopes: dict[tuple[str | None, ...], list[tuple[int, str]]] = {}
        self._lock = threading.Lock()
        self._cells: dict[tuple[str | None, ...], tuple[tuple[tuple[str, str, str], Target], ...]] = {}
        self._cells_span = (0.0, 0.0)
        self._dirty: dict[tuple[str, str, str], Target] = {}
        self._dirty_lock = threading.Lock()

    def dimensions(self) -> set[str]:
        """Every dimension a budget scope names (the attributes spans must keep)."""
        found: set[str] = set()
        for budget in self._budgets:
            found.update(budget.scope.by)
            found.update(budget.scope.match)
        return found

    def _span(self, seconds: float) -> tuple[float, float]:
        """The interval around `seconds` in which every budget's window stays the same."""
        low, high = float("-inf"), float("inf")
        for cache in self._windows:
            cache.at(seconds)
            low, high = max(low, cache.low), min(high, cache.high)
        return low, high

    def _scope_keys(self, attribution: dict[str, str], values: tuple[str | None, ...]) -> list[tuple[int, str]]:
        found = self._scopes.get(values)
        if found is None:
            found = []
            for index, budget in enumerate(self._budgets):
                scope_key = budget.scope.key_for(attribution)
                if scope_key is not None:
                    found.append((index, scope_key))
            if len(self._scopes) > _MATCH_CACHE_LIMIT:
                self._scopes.clear()
            self._scopes[values] = found
        return found

    def _cells_at(self, attribution: dict[str, str], values: tuple[str | None, ...], seconds: float
                  ) -> tuple[tuple[tuple[str, str, str], Target], ...]:
        """The budget instances (cell: budget, scope key, bucket; and its target) an event at `seconds`
        with these scope values counts against."""
        found = []
        for budget_index, scope_key in self._scope_keys(attribution, values):
            window = self._windows[budget_index].at(seconds)
            name = self._budgets[budget_index].name
            found.append(((name, scope_key, window.bucket), Target(BudgetKey(name, scope_key), window)))
        return tuple(found)

    def apply(self, events: Sequence[CostEvent]) -> Applied:
        """Commit the events (raises if the store fails: the request must then not be acknowledged)."""
        applied = Applied()
        oldest = int((time.time() - self.store.dedup_window) * 1e9)
        if events and min(map(_time, events)) < oldest \
                and any(e.kind != CUMULATIVE and e.time < oldest for e in events):
            # Its dedup mark would already be gone: counting it could count a resend twice.
            kept = [e for e in events if e.kind == CUMULATIVE or e.time >= oldest]
            applied.too_old = len(events) - len(kept)
            events = kept
        if not events:
            return applied
        targets: list[Target] = []
        index_of: dict[tuple[str, str, str], int] = {}
        event_targets: list[tuple[int, ...]] = []
        now = time.time()
        reads = self._reads
        with self._lock:  # the caches are not thread-safe; matching is cheap next to the commit
            # Events whose time falls in the windows current at the first event (nearly all of them)
            # share their targets by scope values alone: one tuple and one look-up per event, and the
            # budget instances of each scope value are kept from request to request while the windows last.
            low, high = self._span(min(events[0].time / 1e9, now))
            if (low, high) != self._cells_span:
                self._cells, self._cells_span = {}, (low, high)
            elif len(self._cells) > _CELLS_LIMIT:
                self._cells = {}
            cells = self._cells
            shared: dict[tuple[str | None, ...], tuple[int, ...]] = {}
            for event in events:
                # A point stamped in the future (a skewed client clock) counts in the current window.
                seconds = min(event.time / 1e9, now)
                values = tuple(map(event.attribution.get, reads))
                inside = low <= seconds < high
                if inside:
                    known = shared.get(values)
                    if known is not None:
                        event_targets.append(known)
                        continue
                    pairs = cells.get(values)
                    if pairs is None:
                        pairs = cells[values] = self._cells_at(event.attribution, values, seconds)
                else:
                    pairs = self._cells_at(event.attribution, values, seconds)
                where = []
                for cell, target in pairs:
                    position = index_of.get(cell)
                    if position is None:
                        position = index_of[cell] = len(targets)
                        targets.append(target)
                    where.append(position)
                found = tuple(where)
                if inside:
                    shared[values] = found
                event_targets.append(found)
        increments = self.store.apply(events, event_targets, targets)
        applied.increments = increments
        by_source = applied.units_by_source
        sources = set(map(_source, events))
        if min(increments) > 0 and len(sources) == 1:  # the common case, tallied in C: all new, one source
            hits = set(event_targets)
            by_source[sources.pop()] = sum(increments)
            applied.counted = len(events)
        else:
            hits = set()  # the target tuples are shared between events: few distinct
            counted = duplicates = 0
            for event, units, hit in zip(events, increments, event_targets, strict=True):
                if units > 0:
                    counted += 1
                    by_source[event.source] = by_source.get(event.source, 0) + units
                    hits.add(hit)
                elif units < 0:
                    duplicates += 1
            applied.counted, applied.duplicates = counted, duplicates
        touched = {index for hit in hits for index in hit}
        if touched:
            with self._dirty_lock:
                for index in touched:
                    target = targets[index]
                    self._dirty[(target.key.budget, target.key.scope, target.window.bucket)] = target
        return applied

    def check_alerts(self) -> int:
        """Run the engine's alert checks on every budget whose spend moved since the last call; returns
        how many were checked. Never raises (failures are logged and counted by the engine)."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        now = datetime.now(timezone.utc)
        budgets = {b.name: b for b in self._budgets}
        for target in dirty.values():
            try:
                spent = self.store.spend(target.key, target.window).spent
                # The engine's own alert path: levels, forecast, once per level per window via the ledger.
                self.engine._after_spend(_Match(budgets[target.key.budget], target.key, target.window), spent, now)
            except Exception:
                self.engine.stats.count("errors")
                _log.exception("otel-llmcost processor: alert check for %s failed", target.key)
        return len(dirty)


def _scope_attributes(budget: Budget) -> tuple[str, ...]:
    names: list[str] = []
    for dimension in (*budget.scope.match, *budget.scope.by):
        names.extend(DIMENSIONS.get(dimension, (dimension,)))
    return tuple(names)
