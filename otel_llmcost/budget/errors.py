"""Errors the budget engine raises on purpose: each says what happened and what to do."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from ..errors import CallRefused, LLMCostError
from ._money import usd


class ConfigError(LLMCostError, ValueError):
    """A budget config (YAML file or dataclasses) that cannot be used.

    `field` is the dotted path of the offending value (``budgets[1].window``), `line` the 1-based line
    in the YAML file when there is one, `source` the file's path.
    """

    def __init__(
        self, message: str, *, field: str | None = None, line: int | None = None, source: str | None = None
    ) -> None:
        self.message = message
        self.field = field
        self.line = line
        self.source = source
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        elif line is not None:
            where = f"line {line}: "
        prefix = f"{field}: " if field else ""
        super().__init__(f"{where}{prefix}{message}")


class BudgetExceededError(CallRefused):
    """A reservation was refused: spend and calls in flight have reached the budget's stop limit.

    Raised by `BudgetEngine.reserve`; the caller decides what to do (serve from cache, refuse the
    request, route to a cheaper model). Attributes: `budget`, `scope_key`, `spend` (committed spend in
    the window), `reserved` (outstanding reservations of calls in flight), `requested`, `limit` (the stop
    limit in USD: amount × stop threshold), `amount` (the budget), `reset_at` (when the window ends).
    """

    def __init__(
        self,
        *,
        budget: str,
        scope_key: str,
        spend: Decimal,
        limit: Decimal,
        reset_at: datetime,
        reserved: Decimal = Decimal(0),
        requested: Decimal = Decimal(0),
        amount: Decimal | None = None,
    ) -> None:
        self.budget = budget
        self.scope_key = scope_key
        self.spend = spend
        self.limit = limit
        self.reset_at = reset_at
        self.reserved = reserved
        self.requested = requested
        self.amount = amount if amount is not None else limit
        super().__init__(
            f"budget {budget!r} ({scope_key}) has no room left: spent {usd(spend)}"
            f" + reserved {usd(reserved)} + requested {usd(requested)} exceeds the stop limit"
            f" {usd(limit)} (of {usd(self.amount)}); the window resets at {reset_at.isoformat()}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # A keyword-only constructor: tell pickle (multiprocessing, log handlers) how to rebuild us.
        fields = ("budget", "scope_key", "spend", "limit", "reset_at", "reserved", "requested", "amount")
        return (_rebuild_exceeded, ({name: getattr(self, name) for name in fields},))


def _rebuild_exceeded(fields: dict[str, object]) -> BudgetExceededError:
    return BudgetExceededError(**fields)  # type: ignore[arg-type]
