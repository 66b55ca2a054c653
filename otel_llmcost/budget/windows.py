"""Budget windows: calendar (day, ISO week, month in an IANA time zone) and rolling.

`spec.at(when)` gives the `Window` that a moment falls in: its start and end, and the ledger buckets it
adds up. A calendar window is one bucket, named by its start in UTC, so "month" in America/New_York and
in UTC are different windows that reset five hours apart. A rolling window of length L is cut into
`buckets` epoch-aligned slices of L / buckets; its spend is the sum of the last `buckets` slices, so old
spend leaves it slice by slice (at most one slice early: the price of O(1) state).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

CalendarUnit = Literal["day", "week", "month"]
CALENDAR_UNITS: tuple[CalendarUnit, ...] = ("day", "week", "month")
DEFAULT_ROLLING_BUCKETS = 24

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w` or a sum such as `1h30m`; ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h, 7d or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(compact))
    return timedelta(seconds=seconds)


def _utc_id(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    """One instance of a budget window, as the engine and the ledgers see it.

    `bucket` is the ledger id new spend is written to; `buckets` the ids whose sum is the window's
    spend (`bucket` among them); `alert_id` identifies the window for "one alert per level per window";
    `keep_until` is when a ledger may forget the bucket.
    """

    start: datetime
    end: datetime
    bucket: str
    buckets: tuple[str, ...]
    alert_id: str
    keep_until: datetime
    rolling: bool = False

    @property
    def length(self) -> float:
        """Seconds from start to end (real seconds: a day that DST shortens has 23 hours)."""
        # Timestamps, not `end - start`: datetimes sharing a tzinfo subtract as wall-clock times.
        return self.end.timestamp() - self.start.timestamp()

    def elapsed(self, at: datetime) -> float:
        """Seconds of the window gone by at `at` (clamped to the window)."""
        return min(max(_aware(at).timestamp() - self.start.timestamp(), 0.0), self.length)


@dataclass(frozen=True)
class CalendarWindow:
    """Calendar day, ISO week (from Monday) or month, starting at local midnight in `timezone`."""

    unit: CalendarUnit = "month"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.unit not in CALENDAR_UNITS:
            raise ConfigError(
                f"unknown window {self.unit!r}; use day, week, month or {{rolling: <duration>}}",
                field="window",
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"unknown time zone {self.timezone!r}; use an IANA name such as Europe/Paris",
                field="timezone",
            ) from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def at(self, when: datetime) -> Window:
        """The window that `when` falls in.

        Every guarded call asks (for its hint and for its reservation), and the answer changes once a
        day at most: the last window per unit and zone is kept and returned while `when` is inside it."""
        when = _aware(when)
        key = (self.unit, self.timezone)
        last = _LAST_CALENDAR_WINDOW.get(key)
        if last is not None and last.start <= when < last.end:
            return last
        window = self._compute(when)
        _LAST_CALENDAR_WINDOW[key] = window  # one dict store: safe to race, the loser recomputes next time
        return window

    def _compute(self, when: datetime) -> Window:
        zone = self.zone
        local = when.astimezone(zone)
        if self.unit == "day":
            first = local.date()
            after = first + timedelta(days=1)
        elif self.unit == "week":
            first = local.date() - timedelta(days=local.weekday())
            after = first + timedelta(days=7)
        else:
            first = date(local.year, local.month, 1)
            after = date(local.year + local.month // 12, local.month % 12 + 1, 1)
        start = self._midnight(first, zone)
        end = self._midnight(after, zone)
        bucket = _utc_id(start)
        return Window(
            start=start,
            end=end,
            bucket=bucket,
            buckets=(bucket,),
            alert_id=f"{self.unit}:{bucket}",
            keep_until=end + (end - start),
        )

    @staticmethod
    def _midnight(day: date, zone: ZoneInfo) -> datetime:
        # Through UTC and back, so a midnight that a DST jump skips becomes the first real instant.
        naive = datetime.combine(day, dtime(0))
        return naive.replace(tzinfo=zone).astimezone(timezone.utc).astimezone(zone)

    def describe(self) -> str:
        return f"{self.unit} ({self.timezone})"


_LAST_CALENDAR_WINDOW: dict[tuple[str, str], Window] = {}

MAX_ROLLING_SECONDS = 3660 * 86400
"""Ten years: the longest rolling window a budget may have."""


@dataclass(frozen=True)
class RollingWindow:
    """The last `length` of spend, kept in `buckets` slices (default: up to 24, dividing the length).

    Alerts of a rolling window fire at most once per level per `length`-long period counted from the
    Unix epoch, as a rolling window has no start of its own.
    """

    length: timedelta
    buckets: int | None = None

    def __post_init__(self) -> None:
        seconds = self.length.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            raise ConfigError(f"{self.length} is not a whole number of seconds ≥ 1", field="window.rolling")
        if seconds > MAX_ROLLING_SECONDS:
            # Longer windows reach back before year 1 (dates fail at run time): refuse them here.
            raise ConfigError(f"{self.length} is longer than the longest rolling window, "
                              f"{MAX_ROLLING_SECONDS // 86400} days", field="window.rolling")
        total = int(seconds)
        if self.buckets is None:
            count = max(n for n in range(1, DEFAULT_ROLLING_BUCKETS + 1) if total % n == 0)
            object.__setattr__(self, "buckets", count)
        elif (
            isinstance(self.buckets, bool)
            or not isinstance(self.buckets, int)
            or self.buckets < 1
            or total % self.buckets
        ):
            raise ConfigError(
                f"{self.buckets!r} must be a positive whole number that divides {total} s",
                field="window.buckets",
            )

    @property
    def slice_seconds(self) -> int:
        assert self.buckets is not None
        return int(self.length.total_seconds()) // self.buckets

    def at(self, when: datetime) -> Window:
        """The window ending with the slice that `when` falls in."""
        assert self.buckets is not None
        step = self.slice_seconds
        total = step * self.buckets
        now = _aware(when).timestamp()
        current = math.floor(now / step) * step
        starts = [current - i * step for i in range(self.buckets)]
        ids = tuple(_utc_id(datetime.fromtimestamp(s, timezone.utc)) for s in starts)
        period = math.floor(now / total) * total
        return Window(
            start=datetime.fromtimestamp(starts[-1], timezone.utc),
            end=datetime.fromtimestamp(current + step, timezone.utc),
            bucket=ids[0],
            buckets=ids,
            alert_id=f"rolling{total}s:{_utc_id(datetime.fromtimestamp(period, timezone.utc))}",
            keep_until=datetime.fromtimestamp(current + step + total, timezone.utc),
            rolling=True,
        )

    def describe(self) -> str:
        return f"rolling {self.length}"


WindowSpec = CalendarWindow | RollingWindow
