"""Calendar and rolling windows: boundaries in a time zone, DST, slices."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from otel_llmcost.budget import CalendarWindow, ConfigError, RollingWindow
from otel_llmcost.budget.windows import parse_duration

NY = ZoneInfo("America/New_York")
UTC = timezone.utc


def test_month_starts_at_local_midnight_of_the_first() -> None:
    """A New York month runs from local midnight on the 1st, five hours after the UTC one in winter."""
    moment = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # still 30 November, 22:00, in New York
    ny = CalendarWindow("month", "America/New_York").at(moment)
    utc = CalendarWindow("month", "UTC").at(moment)
    assert (ny.start, ny.end) == (datetime(2026, 11, 1, tzinfo=NY), datetime(2026, 12, 1, tzinfo=NY))
    assert ny.end.astimezone(UTC) == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert (utc.start, utc.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert ny.bucket != utc.bucket


def test_day_across_a_dst_change_is_23_hours_long() -> None:
    """The day clocks spring forward in New York lasts 23 hours; the week starts on Monday."""
    day = CalendarWindow("day", "America/New_York").at(datetime(2026, 3, 8, 12, tzinfo=NY))
    assert day.length == 23 * 3600
    week = CalendarWindow("week", "America/New_York").at(datetime(2026, 3, 8, 12, tzinfo=NY))
    assert week.start == datetime(2026, 3, 2, tzinfo=NY) and week.start.weekday() == 0
    assert week.length == 7 * 86400 - 3600


def test_december_rolls_into_next_year() -> None:
    """The month after December is January of the next year."""
    window = CalendarWindow("month", "UTC").at(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert window.end == datetime(2027, 1, 1, tzinfo=UTC)


def test_rolling_window_is_the_last_n_slices() -> None:
    """24 h rolling: 24 hourly slices ending with the current one; start and end move by the hour."""
    spec = RollingWindow(timedelta(hours=24))
    window = spec.at(datetime(2026, 5, 5, 10, 30, tzinfo=UTC))
    assert spec.buckets == 24 and len(window.buckets) == 24
    assert window.start == datetime(2026, 5, 4, 11, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 5, 5, 11, 0, tzinfo=UTC)
    assert window.bucket == "2026-05-05T10:00:00Z"
    assert RollingWindow(timedelta(minutes=7)).buckets == 21  # 20 s slices: the most ≤ 24 that divide
    assert RollingWindow(timedelta(seconds=97)).buckets == 1


def test_bad_windows_are_config_errors() -> None:
    """Unknown units, zones and slice counts raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match="window: unknown window 'fortnight'"):
        CalendarWindow("fortnight")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Mars/Base'"):
        CalendarWindow("day", "Mars/Base")
    with pytest.raises(ConfigError, match="window.buckets"):
        RollingWindow(timedelta(hours=1), buckets=7)


def test_durations() -> None:
    """Durations read as 90s, 30m, 24h, 7d, 2w and sums like 1h30m."""
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    with pytest.raises(ValueError):
        parse_duration("24 hours")


def test_calendar_windows_kept_between_calls_are_never_stale() -> None:
    """`at` keeps the last window per unit and zone: walking hour by hour across month ends, week ends and
    DST changes, back and forth, in several zones at once, it always answers what a fresh computation does."""
    windows = [CalendarWindow(unit, zone) for unit in ("day", "week", "month")
               for zone in ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")]
    start = datetime(2026, 10, 20, tzinfo=timezone.utc)
    hours = [start + timedelta(hours=h) for h in range(0, 24 * 21)]
    for when in hours + hours[::-7]:  # forwards, then backwards in strides: the kept window must move too
        for window in windows:
            assert window.at(when) == window._compute(when), (window, when)
