"""The budget ledger's health in one snapshot, for the in-process instruments and the service's /metrics.

Why one function: both exports must show the same numbers under the same meaning, and neither may hold
the engine up. `pending()` takes the backlog's lock for a length and a sum; the counters are copied
under the stats lock, which writers hold only for an addition, so dropped writes and their USD agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .. import names
from .engine import BudgetEngine

DESCRIPTIONS: dict[str, str] = {
    names.METRIC_BUDGET_BACKLOG_SPEND: "Spend waiting for the budget ledger (an outage): budgets do not count it yet.",
    names.METRIC_BUDGET_BACKLOG_WRITES: "Ledger writes waiting for the budget ledger (an outage), replayed when it "
                                        "answers.",
    names.METRIC_BUDGET_BACKLOG_LOST: "Spend dropped for good: the backlog was full, off, or a write waited past "
                                      "max_age.",
    names.METRIC_BUDGET_BACKLOG_DROPPED: "Ledger writes dropped for good (their USD is in "
                                         "llmcost.budget.backlog.lost).",
    names.METRIC_BUDGET_LEDGER_ERRORS: "Budget ledger calls that failed: on the call path (call) or replaying the "
                                       "backlog (replay).",
    names.METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS: "Backlog journal writes or syncs that failed: those costs wait in "
                                                "memory only.",
}
"""Help texts of the ledger-health instruments, shared by the in-process meter and the service's /metrics."""


@dataclass(frozen=True)
class LedgerHealth:
    """What the ledger could not take: waiting now, lost for good, and the errors along the way."""

    waiting_writes: int
    """Writes queued for the ledger now (non-zero during an outage and just after)."""
    waiting_usd: Decimal
    """Their USD: spend the budgets do not see yet (levels are enforced on numbers this much too low)."""
    dropped_writes: int
    """Writes dropped for good since start (backlog full or off, too old, engine closed)."""
    lost_usd: Decimal
    """Their USD: spend no budget will ever count."""
    call_errors: int
    """Ledger calls that failed on the call path (and cost events refused as bad input)."""
    replay_errors: int
    """Background replays of the backlog that failed (retried with backoff)."""
    journal_errors: int
    """Journal writes or syncs the disk refused: those costs wait in memory only."""


def ledger_health(engine: BudgetEngine) -> LedgerHealth:
    """A snapshot of `engine`'s backlog and error counters; takes each lock for a copy only."""
    writes, usd = engine.pending()
    stats = engine.stats
    with stats._lock:
        dropped, lost = stats.dropped, stats.lost_usd
        errors, replay_errors, journal_errors = stats.errors, stats.replay_errors, stats.journal_errors
    return LedgerHealth(writes, usd, dropped, lost, errors, replay_errors, journal_errors)


__all__ = ["DESCRIPTIONS", "LedgerHealth", "ledger_health"]
