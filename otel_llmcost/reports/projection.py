"""Where spend is heading: the window's end from the trailing 7 days, weekdays and weekends apart.

Traffic on a weekday and on a weekend day differ (often by a factor of two or more), so one daily mean
misjudges the rest of a month by how many weekends are left. With `as_of` on day D (in the budget's
time zone):

* spent so far = the cost from the window's start to `as_of`;
* the trailing days are the 7 full days before D; the weekday mean and the weekend mean are the mean
  daily cost of those 5 and 2 days;
* projected = spent + Σ over what is left of the window, day by day, of the mean of that day's kind
  (the rest of day D counts by the fraction of it left);
* the band is an 80% prediction interval for the remaining sum: each remaining day varies with the
  day-to-day standard deviation σ of its kind, and each mean is itself uncertain from k days
  (variance n·σ² + n²·σ²/k per kind, n the remaining days of that kind);
* a budget is flagged when the projection exceeds its amount by more than the margin (20% by default),
  and `runs_out` is the first day the projected cumulative spend reaches the amount.

With fewer than 7 days of history the means come from the days there are (the note says so); with no
weekend (or no weekday) among them the other kind's mean stands in for it; with no full day at all
there is nothing to project from, and `ReportInputError` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .schema import ReportInputError

if TYPE_CHECKING:
    import pandas as pd

    from ..budget.policy import Budget, BudgetConfig

TRAILING_DAYS = 7
DEFAULT_MARGIN = 0.20
_Z80 = 1.2815515655446004  # two-sided 80%: the band shows where 8 months in 10 would end up


@dataclass(frozen=True)
class DayPoint:
    """One day of the window for the chart: actual spend (None for future days), the projected
    cumulative spend at the day's end, and the band around it."""

    day: date
    actual: float | None
    cumulative: float
    low: float
    high: float


@dataclass(frozen=True)
class Projection:
    window_start: datetime
    window_end: datetime
    as_of: datetime
    spent: float
    weekday_mean: float
    weekend_mean: float
    weekday_sd: float
    weekend_sd: float
    trailing: tuple[tuple[date, float], ...]
    remaining_weekdays: float
    remaining_weekend_days: float
    projected: float
    low: float
    high: float
    days: tuple[DayPoint, ...]
    notes: tuple[str, ...] = ()

    def runs_out(self, amount: float) -> date | None:
        """The first day the (actual, then projected) cumulative spend reaches `amount`, if any."""
        for point in self.days:
            if point.cumulative >= amount - 1e-12:
                return point.day
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
            "as_of": self.as_of.isoformat(), "spent": self.spent, "projected": self.projected,
            "low": self.low, "high": self.high, "weekday_mean": self.weekday_mean,
            "weekend_mean": self.weekend_mean, "weekday_sd": self.weekday_sd, "weekend_sd": self.weekend_sd,
            "remaining_weekdays": self.remaining_weekdays, "remaining_weekend_days": self.remaining_weekend_days,
            "trailing": [{"day": d.isoformat(), "cost": c} for d, c in self.trailing],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class BudgetCheck:
    """One budget (one scope key of it) against its projection."""

    budget: str
    scope: str
    amount: float
    margin: float
    projection: Projection
    runs_out: date | None
    over: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "over", self.projection.projected > self.amount * (1 + self.margin))

    @property
    def ratio(self) -> float:
        return self.projection.projected / self.amount

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "scope": self.scope, "amount": self.amount, "margin": self.margin,
                "projected": self.projection.projected, "ratio": self.ratio, "over": self.over,
                "runs_out": self.runs_out.isoformat() if self.runs_out else None,
                "projection": self.projection.as_dict()}


def _weekend(day: date) -> bool:
    return day.weekday() >= 5


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def month_window(as_of: datetime, timezone: str = "UTC") -> tuple[datetime, datetime]:
    """The calendar month `as_of` falls in, in `timezone`."""
    zone = ZoneInfo(timezone)
    local = as_of.astimezone(zone)
    first = date(local.year, local.month, 1)
    after = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    return _midnight(first, zone), _midnight(after, zone)


def project(frame: pd.DataFrame, as_of: datetime, window: tuple[datetime, datetime] | None = None,
            timezone: str = "UTC") -> Projection:
    """The projection of spend to the end of `window` (default: the calendar month of `as_of`)."""
    zone = ZoneInfo(timezone)
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    start, end = window or month_window(as_of, timezone)
    times = frame["time"]
    costs = frame["cost_usd"]
    as_of_ts = as_of.timestamp()
    spent = float(costs[(times >= start) & (times < as_of)].sum())
    today = as_of.astimezone(zone).date()
    local_days = times.dt.tz_convert(zone).dt.date
    daily = costs.groupby(local_days).sum()
    first_day = min(local_days) if len(local_days) else today
    trailing: list[tuple[date, float]] = []
    notes: list[str] = []
    for back in range(TRAILING_DAYS, 0, -1):
        day = today - timedelta(days=back)
        if day >= first_day:
            trailing.append((day, float(daily.get(day, 0.0))))
    if not trailing:
        raise ReportInputError(
            f"no full day of calls before {today.isoformat()} to project from; the data starts "
            f"{first_day.isoformat()}: project from a later --until, or collect a day of calls first")
    if len(trailing) < TRAILING_DAYS:
        notes.append(f"only {len(trailing)} of the trailing {TRAILING_DAYS} days have data: "
                     "the means are less certain than the band shows")
    weekday_mean, weekday_sd = _mean_sd([c for d, c in trailing if not _weekend(d)])
    weekend_mean, weekend_sd = _mean_sd([c for d, c in trailing if _weekend(d)])
    k_weekday = sum(1 for d, _ in trailing if not _weekend(d))
    k_weekend = len(trailing) - k_weekday
    if not k_weekend:
        notes.append("no weekend day in the trailing days: weekends are projected at the weekday mean")
        weekend_mean, weekend_sd, k_weekend = weekday_mean, weekday_sd, k_weekday
    if not k_weekday:
        notes.append("no weekday in the trailing days: weekdays are projected at the weekend mean")
        weekday_mean, weekday_sd, k_weekday = weekend_mean, weekend_sd, k_weekend

    # Walk the window day by day: actual spend before as_of, the mean of the day's kind after it.
    n_weekday = n_weekend = 0.0
    points: list[DayPoint] = []
    cumulative = 0.0
    day = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    while day <= last:
        day_start = max(_midnight(day, zone), start)
        day_end = min(_midnight(day + timedelta(days=1), zone), end)
        length = day_end.timestamp() - day_start.timestamp()
        actual_part = min(max(as_of_ts - day_start.timestamp(), 0.0), length)
        left = (length - actual_part) / 86400.0
        actual: float | None = None
        if actual_part > 0:
            actual = float(costs[(times >= day_start) & (times < min(day_end, as_of))].sum())
            cumulative += actual
        if _weekend(day):
            n_weekend += left
            cumulative += left * weekend_mean
        else:
            n_weekday += left
            cumulative += left * weekday_mean
        variance = (n_weekday * weekday_sd**2 + n_weekday**2 * weekday_sd**2 / k_weekday
                    + n_weekend * weekend_sd**2 + n_weekend**2 * weekend_sd**2 / k_weekend)
        spread = _Z80 * math.sqrt(variance)
        points.append(DayPoint(day, actual, cumulative, max(cumulative - spread, spent), cumulative + spread))
        day += timedelta(days=1)
    projected = spent + n_weekday * weekday_mean + n_weekend * weekend_mean
    final = points[-1] if points else DayPoint(today, None, projected, projected, projected)
    return Projection(start, end, as_of, spent, weekday_mean, weekend_mean, weekday_sd, weekend_sd,
                      tuple(trailing), n_weekday, n_weekend, projected, final.low, final.high, tuple(points),
                      tuple(notes))


# --- budgets ----------------------------------------------------------------------------------------
_DIMENSION_COLUMNS = {"user": "user", "tenant": "tenant", "tier": "tier", "feature": "feature",
                      "model": "model", "provider": "provider", "llmcost.user.id": "user",
                      "llmcost.tenant.id": "tenant", "llmcost.user.tier": "tier", "llmcost.feature": "feature",
                      "gen_ai.request.model": "request_model", "gen_ai.response.model": "model",
                      "gen_ai.provider.name": "provider"}


def check_budgets(frame: pd.DataFrame, config: BudgetConfig, as_of: datetime,
                  margin: float = DEFAULT_MARGIN) -> tuple[list[BudgetCheck], list[str]]:
    """Each calendar budget of the config (each scope key of a per-user/... budget) against its
    projection; notes for the budgets that cannot be projected (rolling windows, unknown dimensions)."""
    from ..budget.windows import CalendarWindow

    checks: list[BudgetCheck] = []
    notes: list[str] = []
    for budget in config.budgets:
        spec = budget.window
        if not isinstance(spec, CalendarWindow):
            notes.append(f"budget {budget.name}: a rolling window has no end to project to; not projected")
            continue
        window = spec.at(as_of)
        try:
            scoped = _scoped(frame, budget)
        except KeyError as exc:
            notes.append(f"budget {budget.name}: the frame has no column for dimension {exc.args[0]}; not projected")
            continue
        for scope_key, part in scoped:
            try:
                projection = project(part, as_of, (window.start, window.end), spec.timezone)
            except ReportInputError as exc:
                notes.append(f"budget {budget.name} ({scope_key}): {exc}")
                continue
            amount = float(budget.amount)
            checks.append(BudgetCheck(budget.name, scope_key, amount, margin, projection,
                                      projection.runs_out(amount)))
    checks.sort(key=lambda c: c.ratio, reverse=True)
    return checks, notes


def single_budget(frame: pd.DataFrame, amount: float, as_of: datetime, timezone: str = "UTC",
                  margin: float = DEFAULT_MARGIN) -> BudgetCheck:
    """`--budget USD`: one global monthly budget."""
    if not amount > 0:
        raise ReportInputError(f"--budget {amount}: a budget is a positive amount of USD")
    projection = project(frame, as_of, month_window(as_of, timezone), timezone)
    return BudgetCheck("budget", "global", amount, margin, projection, projection.runs_out(amount))


def _scoped(frame: pd.DataFrame, budget: Budget) -> list[tuple[str, pd.DataFrame]]:
    part = frame
    for dimension, wanted in budget.scope.match.items():
        column = _DIMENSION_COLUMNS[dimension]
        part = part[part[column] == wanted]
    fixed = ", ".join(f"{d}={v}" for d, v in budget.scope.match.items()) or "global"
    if not budget.scope.by:
        return [(fixed, part)] if len(part) else []
    columns = [_DIMENSION_COLUMNS[d] for d in budget.scope.by]
    part = part.dropna(subset=columns)
    out = []
    for values, group in part.groupby(columns, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        key = ", ".join(f"{d}={v}" for d, v in zip(budget.scope.by, values, strict=True))
        out.append((key if fixed == "global" else f"{fixed}, {key}", group))
    return out
