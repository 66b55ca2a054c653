"""Budget alerts and where they go.

The engine makes one `Alert` per level (warn, throttle, stop) and one forecast alert per window per
budget scope key, and hands it to every sink. A sink is anything with ``send(alert)``; it must return
quickly and never raise (the engine logs and counts it if one does). `LoggingSink` is here; the webhook
sink is in `webhook.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from ._money import usd
from .levels import AlertLevel


@dataclass(frozen=True)
class Alert:
    """A budget scope that reached a level, or is forecast to end its window over budget.

    `limit` is the budget's amount; `threshold` the fraction of it at which `level` starts (for a
    forecast: 1 + margin); `forecast` the projected spend at window end, when one can be made.
    """

    budget: str
    scope_key: str
    level: AlertLevel
    spend: Decimal
    limit: Decimal
    threshold: Decimal
    window_start: datetime
    window_end: datetime
    forecast: Decimal | None
    at: datetime

    @property
    def utilization(self) -> float:
        """Spend as a fraction of the amount (1.0 = all of it)."""
        return float(self.spend / self.limit) if self.limit else 0.0

    def text(self) -> str:
        """One line for people (logs, chat)."""
        scope = "" if self.scope_key == "global" else f" ({self.scope_key})"
        head = f"Budget '{self.budget}'{scope}"
        spent = f"{usd(self.spend)} of {usd(self.limit)} ({self.utilization:.0%})"
        window = f"window {self.window_start.isoformat()} to {self.window_end.isoformat()}"
        if self.level == "forecast":
            projected = usd(self.forecast) if self.forecast is not None else "?"
            return (
                f"{head} is forecast to end its window at {projected}, over its {usd(self.limit)} budget:"
                f" {spent} spent so far; {window}"
            )
        projection = f"; projected {usd(self.forecast)} by window end" if self.forecast is not None else ""
        return f"{head} reached {self.level} ({self.threshold:.0%}): {spent} spent; {window}{projection}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields: money as decimal strings, times as ISO 8601."""
        return {
            "type": "llmcost.budget.alert",
            "budget": self.budget,
            "scope_key": self.scope_key,
            "level": self.level,
            "spend": f"{self.spend:f}",
            "limit": f"{self.limit:f}",
            "threshold": f"{self.threshold:f}",
            "utilization": round(self.utilization, 6),
            "forecast": None if self.forecast is None else f"{self.forecast:f}",
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "at": self.at.isoformat(),
            "text": self.text(),
        }


@runtime_checkable
class AlertSink(Protocol):
    """Where alerts go. `send` must not block the caller nor raise."""

    def send(self, alert: Alert) -> None: ...


_LOG_LEVELS = {"warn": logging.WARNING, "forecast": logging.WARNING, "throttle": logging.WARNING}


class LoggingSink:
    """Alerts as log records (stop at ERROR, the others at WARNING), fields under ``llmcost_alert``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("otel_llmcost.budget.alerts")

    def send(self, alert: Alert) -> None:
        self.logger.log(
            _LOG_LEVELS.get(alert.level, logging.ERROR),
            "%s",
            alert.text(),
            extra={"llmcost_alert": alert.to_dict()},
        )
