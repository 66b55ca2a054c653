"""`memory://`: a ledger in this process's memory, guarded by one lock. For tests and one process."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from decimal import Decimal

from .._money import from_units, to_units
from ..windows import Window
from .base import (
    DEFAULT_OP_TTL,
    DEFAULT_TTL,
    BudgetKey,
    Refusal,
    Reservation,
    Spend,
    check_amount,
    check_op,
    now_or,
)

_Bucket = tuple[str, str, str]  # budget, scope, bucket id
_PRUNE_EVERY = 4096


class MemoryLedger:
    """Spend and reservations in dictionaries; lost when the process ends."""

    def __init__(self) -> None:
        self.uri = "memory://"
        self._lock = threading.Lock()
        self._spent: dict[_Bucket, int] = {}
        self._holds: dict[_Bucket, dict[str, tuple[int, float]]] = {}
        self._scopes: dict[tuple[str, str], set[str]] = {}
        self._keep: dict[_Bucket, float] = {}
        self._alerts: dict[tuple[str, str, str, str], float] = {}
        self._ops: dict[tuple[str, str], float] = {}  # (budget, op id) -> remembered until
        self._writes = 0

    # -- helpers (lock held) --
    def _touch(self, key: BudgetKey, window: Window, bucket: str, now: float) -> _Bucket:
        cell = (key.budget, key.scope, bucket)
        self._scopes.setdefault((key.budget, bucket), set()).add(key.scope)
        self._keep[cell] = max(self._keep.get(cell, 0.0), window.keep_until.timestamp())
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 0:
            self._prune(now)
        return cell

    def _prune(self, now: float) -> None:
        for cell, keep in list(self._keep.items()):
            if keep < now:
                del self._keep[cell]
                self._spent.pop(cell, None)
                self._holds.pop(cell, None)
                scopes = self._scopes.get((cell[0], cell[2]))
                if scopes is not None:
                    scopes.discard(cell[1])
                    if not scopes:
                        del self._scopes[(cell[0], cell[2])]
        for mark, keep in list(self._alerts.items()):
            if keep < now:
                del self._alerts[mark]
        for op, keep in list(self._ops.items()):
            if keep < now:
                del self._ops[op]

    def _first(self, budget: str, op_id: str | None, now: float, ttl: float) -> bool:
        """True (and the op remembered) unless this op was applied already."""
        if op_id is None:
            return True
        op = (budget, op_id)
        if self._ops.get(op, -1.0) >= now:
            return False
        self._ops[op] = now + ttl
        return True

    def _total(self, key: BudgetKey, window: Window) -> Decimal:
        return from_units(sum(self._spent.get((key.budget, key.scope, b), 0) for b in window.buckets))

    def _sums(self, key: BudgetKey, window: Window, now: float) -> tuple[int, int]:
        spent = reserved = 0
        for bucket in window.buckets:
            cell = (key.budget, key.scope, bucket)
            spent += self._spent.get(cell, 0)
            holds = self._holds.get(cell)
            if holds:
                for hold_id, (amount, expires) in list(holds.items()):
                    if expires <= now:
                        del holds[hold_id]
                    else:
                        reserved += amount
        return spent, reserved

    # -- Ledger --
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
        units, at = to_units(check_amount(amount)), now_or(now)
        check_op(op_id, op_ttl)
        with self._lock:
            if self._first(key.budget, op_id, at, op_ttl):
                cell = self._touch(key, window, window.bucket, at)
                self._spent[cell] = self._spent.get(cell, 0) + units
            return self._total(key, window)

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
        units, cap, at = to_units(check_amount(amount)), to_units(limit), now_or(now)
        with self._lock:
            spent, reserved = self._sums(key, window, at)
            total = spent + reserved
            if total >= cap:
                return Refusal(key, window, from_units(spent), from_units(reserved), amount, limit)
            hold_id = uuid.uuid4().hex
            cell = self._touch(key, window, window.bucket, at)
            self._holds.setdefault(cell, {})[hold_id] = (units, at + ttl)
            return Reservation(hold_id, key, window, amount, at + ttl)

    def settle(
        self,
        reservation: Reservation,
        actual: Decimal,
        *,
        now: float | None = None,
        op_id: str | None = None,
        op_ttl: float = DEFAULT_OP_TTL,
    ) -> Decimal:
        units, at = to_units(check_amount(actual, "actual")), now_or(now)
        check_op(op_id, op_ttl)
        key, window = reservation.key, reservation.window
        with self._lock:
            if self._first(key.budget, op_id, at, op_ttl):
                cell = self._touch(key, window, window.bucket, at)
                self._holds.get(cell, {}).pop(reservation.id, None)
                self._spent[cell] = self._spent.get(cell, 0) + units
            return self._total(key, window)

    def spend(self, key: BudgetKey, window: Window, *, now: float | None = None) -> Spend:
        with self._lock:
            spent, reserved = self._sums(key, window, now_or(now))
        return Spend(from_units(spent), from_units(reserved))

    def scopes(self, budget: str, window: Window) -> list[str]:
        with self._lock:
            found: set[str] = set()
            for bucket in window.buckets:
                found |= self._scopes.get((budget, bucket), set())
        return sorted(found)

    def mark_alert(self, key: BudgetKey, alert_id: str, level: str, *, keep_until: datetime) -> bool:
        mark = (key.budget, key.scope, alert_id, level)
        with self._lock:
            if mark in self._alerts:
                return False
            self._alerts[mark] = keep_until.timestamp()
            return True

    def close(self) -> None:
        pass
