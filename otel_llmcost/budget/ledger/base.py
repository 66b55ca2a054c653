"""What every ledger offers: spend per (budget, scope key, window bucket), reservations, fired alerts.

The engine calls a handful of primitives; each backend makes each one atomic on its own (a lock, an
SQLite write transaction, a Redis Lua script), so callers in many threads, processes or replicas
cannot together spend past a limit:

* `record(key, window, amount)`: spend seen without a reservation (from metrics); returns the window's
  committed spend afterwards.
* `reserve(key, window, amount, limit, ttl=...)`: hold `amount` for a call about to be made, unless
  committed spend + live reservations already reach `limit`: then a `Refusal`, and nothing is held.
  The call that takes the total over the limit is let through, so the limit is reached (its level and
  alert happen) and is overshot by at most that one call's reserved maximum, however many callers race.
* `settle(reservation, actual)`: drop the hold and commit the actual cost; works after the hold has
  expired too (the call happened, its cost counts).
* `record` and `settle` take an optional `op_id`: an operation carrying one is applied at most once
  (a marker kept `op_ttl` seconds, written in the same atomic step as the spend). A caller that did
  not hear the answer (a timeout: the server may still run the command) can send it again without
  counting it twice; the second time changes nothing and returns the window's spend.
* Reservations never settled (a crashed caller) expire after their TTL and stop counting.
* `mark_alert(key, alert_id, level)`: True the first time only, so an alert fires once per window even
  across restarts and replicas.

Money crosses this interface as Decimal USD and is stored as integer nano-dollars.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from ..windows import Window

DEFAULT_TTL = 600.0
"""Seconds a reservation lasts when the caller names no TTL (the engine passes its own)."""

DEFAULT_OP_TTL = 7200.0
"""Seconds an applied `op_id` is remembered when the caller names no TTL: it must outlast every retry."""


@dataclass(frozen=True)
class BudgetKey:
    """One budget instance: the budget's name and the scope key (``global``, ``user=alice``)."""

    budget: str
    scope: str


@dataclass(frozen=True)
class Reservation:
    """Money held for a call in flight, until `settle` or `expires_at` (Unix seconds)."""

    id: str
    key: BudgetKey
    window: Window
    amount: Decimal
    expires_at: float


@dataclass(frozen=True)
class Refusal:
    """A reservation that did not fit: what was committed and held when it was asked for."""

    key: BudgetKey
    window: Window
    spent: Decimal
    reserved: Decimal
    requested: Decimal
    limit: Decimal


@dataclass(frozen=True)
class Spend:
    """A window's committed spend and the live (unexpired) reservations on it."""

    spent: Decimal
    reserved: Decimal


@runtime_checkable
class Ledger(Protocol):
    """The storage primitives of the budget engine (see the module doc)."""

    uri: str

    def record(
        self,
        key: BudgetKey,
        window: Window,
        amount: Decimal,
        *,
        now: float | None = None,
        op_id: str | None = None,
        op_ttl: float = DEFAULT_OP_TTL,
    ) -> Decimal:
        """Add `amount` to the window's current bucket (once per `op_id`); return the window's spend."""
        ...

    def reserve(
        self,
        key: BudgetKey,
        window: Window,
        amount: Decimal,
        limit: Decimal,
        *,
        ttl: float = DEFAULT_TTL,
        now: float | None = None,
    ) -> Reservation | Refusal:
        """Hold `amount` if spent + reserved < limit (see the module docstring)."""
        ...

    def settle(
        self,
        reservation: Reservation,
        actual: Decimal,
        *,
        now: float | None = None,
        op_id: str | None = None,
        op_ttl: float = DEFAULT_OP_TTL,
    ) -> Decimal:
        """Replace the hold by the actual cost (once per `op_id`); return the window's committed spend."""
        ...

    def spend(self, key: BudgetKey, window: Window, *, now: float | None = None) -> Spend:
        """Committed spend and live reservations of the window."""
        ...

    def scopes(self, budget: str, window: Window) -> list[str]:
        """Scope keys of `budget` with anything written in the window."""
        ...

    def mark_alert(self, key: BudgetKey, alert_id: str, level: str, *, keep_until: datetime) -> bool:
        """Remember that the alert fired; True only for the first caller."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


def now_or(now: float | None) -> float:
    return time.time() if now is None else now


def check_op(op_id: str | None, op_ttl: float) -> None:
    """Refuse an operation id no backend can key on, or a marker that would not outlive a retry."""
    if op_id is None:
        return
    if not isinstance(op_id, str) or not op_id or len(op_id) > 200:
        raise ValueError(f"op_id must be a non-empty string of at most 200 characters, not {op_id!r}")
    if not op_ttl > 0 or op_ttl == float("inf"):
        raise ValueError(f"op_ttl must be a positive, finite number of seconds, not {op_ttl!r}")


def check_amount(amount: Decimal, what: str = "amount") -> Decimal:
    if not isinstance(amount, Decimal):
        amount = Decimal(str(amount))
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of USD, not {amount}")
    return amount
