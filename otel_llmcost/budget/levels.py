"""Budget levels and the thresholds that define them.

A budget is at `ok` until its spend reaches `warn` × amount, then `warn`, `throttle` and `stop` in turn
(defaults 70 %, 85 %, 95 %: the stop level leaves a margin for calls already in flight). Levels are
ordered, so "the tightest budget wins" is `max()`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ._money import parse_decimal, quantize
from .errors import ConfigError


class Level(enum.IntEnum):
    """How close a budget is to its amount; higher is tighter."""

    OK = 0
    WARN = 1
    THROTTLE = 2
    STOP = 3

    @property
    def label(self) -> str:
        """The lower-case name used in config, alerts and the `llmcost.budget.level` attribute."""
        return self.name.lower()


AlertLevel = Literal["warn", "throttle", "stop", "forecast"]
"""What an alert announces: a level crossed, or a forecast that the window ends over budget."""

FORECAST: AlertLevel = "forecast"

DEFAULT_WARN = Decimal("0.70")
DEFAULT_THROTTLE = Decimal("0.85")
DEFAULT_STOP = Decimal("0.95")


def _fraction(owner: object, name: str, prefix: str, low: Decimal, high: Decimal, open_low: bool) -> None:
    raw = getattr(owner, name)
    value = parse_decimal(raw)
    if value is None:
        raise ConfigError(f"{raw!r} is not a number", field=f"{prefix}.{name}")
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ConfigError(f"{value} is not in {bracket}{low}, {high}]", field=f"{prefix}.{name}")
    object.__setattr__(owner, name, value)


@dataclass(frozen=True)
class Thresholds:
    """Fractions of a budget's amount at which each level starts (strictly increasing, > 0).

    `stop` may exceed 1 for a budget that is allowed to overrun, or be 1.0 to stop at the amount.
    """

    warn: Decimal = DEFAULT_WARN
    throttle: Decimal = DEFAULT_THROTTLE
    stop: Decimal = DEFAULT_STOP

    def __post_init__(self) -> None:
        for name in ("warn", "throttle", "stop"):
            _fraction(self, name, "thresholds", Decimal(0), Decimal(10), open_low=True)
        if not self.warn < self.throttle < self.stop:
            raise ConfigError(
                f"must increase: warn {self.warn} < throttle {self.throttle} < stop {self.stop}",
                field="thresholds",
            )

    def fraction(self, level: Level) -> Decimal:
        """The fraction of the amount at which `level` starts (0 for `ok`)."""
        if level is Level.OK:
            return Decimal(0)
        return {Level.WARN: self.warn, Level.THROTTLE: self.throttle, Level.STOP: self.stop}[level]

    def level(self, spend: Decimal, amount: Decimal) -> Level:
        """The level that `spend` puts a budget of `amount` at (a level starts at its threshold)."""
        if spend >= amount * self.stop:
            return Level.STOP
        if spend >= amount * self.throttle:
            return Level.THROTTLE
        if spend >= amount * self.warn:
            return Level.WARN
        return Level.OK


@dataclass(frozen=True)
class ForecastPolicy:
    """When to announce that a calendar window will likely end over budget.

    The projection is linear: spend so far ÷ time elapsed in the window × window length. It alerts once
    per window when the projection reaches amount × (1 + `margin`), but only after `min_elapsed` of the
    window has passed (a projection from the first minutes of a month is noise) and while spend is still
    under the amount (past that, the level alerts say it all). Rolling windows have no end to forecast.
    """

    margin: Decimal = Decimal("0.20")
    min_elapsed: Decimal = Decimal("0.10")

    def __post_init__(self) -> None:
        _fraction(self, "margin", "forecast", Decimal(0), Decimal(100), open_low=False)
        _fraction(self, "min_elapsed", "forecast", Decimal(0), Decimal(1), open_low=False)

    def projection(self, spend: Decimal, elapsed: float, length: float) -> Decimal | None:
        """Projected spend at window end, or None while too little of the window has passed."""
        if length <= 0 or elapsed <= 0 or Decimal(repr(elapsed / length)) < self.min_elapsed:
            return None
        return quantize(spend * Decimal(repr(length)) / Decimal(repr(elapsed)))

    def exceeded(self, projected: Decimal, amount: Decimal) -> bool:
        """Whether a projection is over the amount by the margin."""
        return projected >= amount * (1 + self.margin)
