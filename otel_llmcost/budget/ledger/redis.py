"""`redis://host:6379/0`: a ledger in Redis, shared by every replica of a service.

Each update is one Lua script (package data beside this module), so check-and-reserve is atomic
however many processes and hosts call it. All keys of a budget carry the hash tag ``{budget}`` so a
script touches one cluster slot. Keys expire on their own once their window is over (`keep_until`).
Needs the ``redis`` client (``pip install 'otel-llmcost[redis]'``), imported when a ledger is opened.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any

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

_SCRIPTS = ("record", "reserve", "settle", "spend")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def load_script(name: str) -> str:
    """The text of one of the ledger's Lua scripts."""
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


class RedisLedger:
    """Spend, reservations and fired alerts in Redis (see the module doc)."""

    def __init__(self, client: Any, *, prefix: str = "llmcost:budget", uri: str = "redis://") -> None:
        self.uri = uri
        self._client = client
        self._prefix = prefix
        self._scripts = {name: client.register_script(load_script(name)) for name in _SCRIPTS}

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "llmcost:budget", **options: Any) -> RedisLedger:
        """Connect with `redis.Redis.from_url` (redis://, rediss://, unix://)."""
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"the ledger {url} needs the redis client: pip install 'otel-llmcost[redis]'"
            ) from exc
        options.setdefault("decode_responses", True)
        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 5.0)
        return cls(redis.Redis.from_url(url, **options), prefix=prefix, uri=url)

    # -- key names --
    def _base(self, budget: str) -> str:
        return f"{self._prefix}:{{{budget}}}"

    def _hash(self, key: BudgetKey, bucket: str) -> str:
        return f"{self._base(key.budget)}:s:{key.scope}:{bucket}"

    def _holds(self, key: BudgetKey, bucket: str) -> str:
        return f"{self._hash(key, bucket)}:holds"

    def _index(self, budget: str, bucket: str) -> str:
        return f"{self._base(budget)}:scopes:{bucket}"

    def _op(self, budget: str, op_id: str | None) -> str:
        """The marker of an applied operation (a name that is never written when there is no id)."""
        return f"{self._base(budget)}:op:{op_id or ''}"

    def _pairs(self, key: BudgetKey, window: Window) -> list[str]:
        keys: list[str] = []
        for bucket in window.buckets:
            keys += [self._hash(key, bucket), self._holds(key, bucket)]
        return keys

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
        units = to_units(check_amount(amount))
        check_op(op_id, op_ttl)
        keys = [
            self._hash(key, window.bucket),
            self._index(key.budget, window.bucket),
            self._op(key.budget, op_id),
            *(self._hash(key, bucket) for bucket in window.buckets),
        ]
        marker = max(_ms(op_ttl), 1) if op_id is not None else 0
        spent = self._scripts["record"](
            keys=keys, args=[units, _ms(window.keep_until.timestamp()), key.scope, marker]
        )
        return from_units(int(spent))

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
        hold_id = uuid.uuid4().hex
        keys = [
            self._hash(key, window.bucket),
            self._holds(key, window.bucket),
            self._index(key.budget, window.bucket),
            *self._pairs(key, window),
        ]
        args = [units, cap, _ms(at), _ms(at + ttl), hold_id, _ms(window.keep_until.timestamp()), key.scope]
        ok, spent, reserved = self._scripts["reserve"](keys=keys, args=args)
        if int(ok) != 1:
            return Refusal(key, window, from_units(int(spent)), from_units(int(reserved)), amount, limit)
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
        units = to_units(check_amount(actual, "actual"))
        check_op(op_id, op_ttl)
        key, window = reservation.key, reservation.window
        keys = [
            self._hash(key, window.bucket),
            self._holds(key, window.bucket),
            self._index(key.budget, window.bucket),
            self._op(key.budget, op_id),
            *(self._hash(key, bucket) for bucket in window.buckets),
        ]
        marker = max(_ms(op_ttl), 1) if op_id is not None else 0
        args = [reservation.id, units, _ms(window.keep_until.timestamp()), key.scope, marker]
        return from_units(int(self._scripts["settle"](keys=keys, args=args)))

    def spend(self, key: BudgetKey, window: Window, *, now: float | None = None) -> Spend:
        spent, reserved = self._scripts["spend"](keys=self._pairs(key, window), args=[_ms(now_or(now))])
        return Spend(from_units(int(spent)), from_units(int(reserved)))

    def scopes(self, budget: str, window: Window) -> list[str]:
        members = self._client.sunion([self._index(budget, bucket) for bucket in window.buckets])
        return sorted(str(m) for m in members)

    def mark_alert(self, key: BudgetKey, alert_id: str, level: str, *, keep_until: datetime) -> bool:
        name = f"{self._base(key.budget)}:alert:{key.scope}:{alert_id}:{level}"
        return bool(self._client.set(name, "1", nx=True, pxat=_ms(keep_until.timestamp())))

    def close(self) -> None:
        self._client.close()
