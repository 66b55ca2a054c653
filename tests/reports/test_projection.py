"""Month-end projection: weekday/weekend means of the trailing 7 days, band, budgets, run-out date."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from otel_llmcost.budget.config import parse_budget_config
from otel_llmcost.reports.projection import check_budgets, project, single_budget
from otel_llmcost.reports.schema import ReportInputError, conform

from .conftest import UNTIL

UTC = timezone.utc


def daily_frame(costs: dict[date, float], users: tuple[str, ...] = ("u1",)):
    """One call per user per day at noon, the day's cost split evenly between the users."""
    rows = []
    for day, cost in costs.items():
        for user in users:
            rows.append({"time": datetime(day.year, day.month, day.day, 12, tzinfo=UTC), "source": "test",
                         "provider": "openai", "model": "gpt-5.4", "user": user,
                         "cost_usd": cost / len(users)})
    return conform(rows)


def pattern(first: date, last: date, weekday: float, weekend: float) -> dict[date, float]:
    out = {}
    day = first
    while day <= last:
        out[day] = weekend if day.weekday() >= 5 else weekday
        day += timedelta(days=1)
    return out


def test_constant_pattern_projects_exactly():
    """$10 every weekday and $4 every weekend day: month-end = spent + 11 weekdays × 10 + 4 weekend days × 4."""
    frame = daily_frame(pattern(date(2026, 10, 20), date(2026, 11, 15), 10.0, 4.0))
    result = project(frame, datetime(2026, 11, 16, tzinfo=UTC))
    # November 1-15 2026: Sunday the 1st, then two full weeks (10 weekdays, 4 weekend days) = 1 + 4 weekend days.
    spent = 10 * 10.0 + 5 * 4.0
    assert result.spent == pytest.approx(spent)
    assert (result.weekday_mean, result.weekend_mean) == (10.0, 4.0)
    assert (result.remaining_weekdays, result.remaining_weekend_days) == (11.0, 4.0)
    assert result.projected == pytest.approx(spent + 11 * 10.0 + 4 * 4.0)
    assert result.low == pytest.approx(result.projected) and result.high == pytest.approx(result.projected)
    assert [d for d, _ in result.trailing] == [date(2026, 11, 9) + timedelta(days=i) for i in range(7)]
    assert result.days[-1].cumulative == pytest.approx(result.projected)


def test_partial_day_counts_the_fraction_left():
    """At noon on a Monday, the rest of that day counts as half a weekday at the weekday mean."""
    costs = pattern(date(2026, 10, 20), date(2026, 11, 15), 10.0, 4.0)
    frame = daily_frame(costs)
    noon = datetime(2026, 11, 16, 12, tzinfo=UTC)  # the Monday's call at noon is not yet "spent"
    result = project(frame, noon)
    assert result.remaining_weekdays == pytest.approx(10.5)
    assert result.projected == pytest.approx(120.0 + 10.5 * 10.0 + 4 * 4.0)


def test_band_from_day_to_day_variation():
    """Weekdays alternating 8 and 12: the band is the 80% interval of the remaining sum, mean ± 1.2816·σ."""
    costs = pattern(date(2026, 11, 9), date(2026, 11, 15), 0.0, 4.0)
    for i, day in enumerate(d for d in sorted(costs) if d.weekday() < 5):
        costs[day] = 8.0 if i % 2 else 12.0
    frame = daily_frame(costs)
    result = project(frame, datetime(2026, 11, 16, tzinfo=UTC))
    weekdays = [12.0, 8.0, 12.0, 8.0, 12.0]
    mean = sum(weekdays) / 5
    sd = (sum((v - mean) ** 2 for v in weekdays) / 4) ** 0.5
    assert result.weekday_mean == pytest.approx(mean) and result.weekday_sd == pytest.approx(sd)
    n = 11
    spread = 1.2815515655446004 * (n * sd**2 + n**2 * sd**2 / 5) ** 0.5
    assert result.high - result.projected == pytest.approx(spread)
    assert result.projected - result.low == pytest.approx(spread)


def test_short_history_and_missing_weekend_are_noted():
    """Three weekdays of data: means from those, weekends at the weekday mean, and notes saying so."""
    frame = daily_frame({date(2026, 11, 11): 6.0, date(2026, 11, 12): 6.0, date(2026, 11, 13): 6.0})
    result = project(frame, datetime(2026, 11, 14, tzinfo=UTC))
    assert result.weekend_mean == 6.0
    assert any("only 3 of the trailing 7 days" in n for n in result.notes)
    assert any("no weekend day" in n for n in result.notes)


def test_no_full_day_is_a_clear_error():
    """Calls only on the day of the projection: nothing to project from, and the error says what to do."""
    frame = daily_frame({date(2026, 11, 16): 5.0})
    with pytest.raises(ReportInputError, match="no full day of calls before 2026-11-16"):
        project(frame, datetime(2026, 11, 16, 18, tzinfo=UTC))


def test_overrun_flag_and_run_out_date():
    """$10/weekday, $4/weekend against $200: projected $246, flagged over 20%, runs out on the 25th."""
    frame = daily_frame(pattern(date(2026, 10, 20), date(2026, 11, 15), 10.0, 4.0))
    check = single_budget(frame, 200.0, datetime(2026, 11, 16, tzinfo=UTC))
    assert check.projection.projected == pytest.approx(246.0)
    assert check.over  # 246 > 200 × 1.2
    # 120 spent by the 15th; +10 a weekday: 16th 130, 17th 140, ... 23rd (Mon) 120+5*10+2*4+10 = 188, 24th 198, 25th 208.
    assert check.runs_out == date(2026, 11, 25)
    calm = single_budget(frame, 210.0, datetime(2026, 11, 16, tzinfo=UTC))
    assert not calm.over and calm.runs_out == date(2026, 11, 26)  # 246 ≤ 210 × 1.2 = 252: within the margin
    assert single_budget(frame, 300.0, datetime(2026, 11, 16, tzinfo=UTC)).runs_out is None


def test_budget_config_per_user_and_fixed_scopes():
    """A config with a global monthly budget and a per-user one: each user gets a projection of their own."""
    frame = daily_frame(pattern(date(2026, 10, 20), date(2026, 11, 15), 10.0, 4.0), users=("u1", "u2"))
    config = parse_budget_config({"budgets": [
        {"name": "company", "amount": 200},
        {"name": "per-user", "amount": 100, "scope": {"by": "user"}},
        {"name": "u2-only", "amount": 1000, "scope": {"user": "u2"}},
        {"name": "hourly", "amount": 1, "window": {"rolling": "1h"}},
    ]})
    checks, notes = check_budgets(frame, config, datetime(2026, 11, 16, tzinfo=UTC))
    found = {(c.budget, c.scope): c for c in checks}
    assert found[("company", "global")].projection.projected == pytest.approx(246.0)
    assert found[("company", "global")].over  # 246 > 200 × 1.2
    for user in ("u1", "u2"):
        per_user = found[("per-user", f"user={user}")]
        assert per_user.projection.projected == pytest.approx(123.0)
        assert per_user.over  # 123 > 100 × 1.2 = 120
    assert not found[("u2-only", "user=u2")].over
    assert any("hourly" in n and "rolling" in n for n in notes)


def test_day_budget_projects_the_rest_of_the_day():
    """A daily budget at 06:00 on a weekday: today's spend so far plus three quarters of a weekday mean."""
    frame = daily_frame(pattern(date(2026, 11, 2), date(2026, 11, 15), 10.0, 4.0))
    config = parse_budget_config({"budgets": [{"name": "daily", "amount": 8, "window": "day"}]})
    checks, _ = check_budgets(frame, config, datetime(2026, 11, 16, 6, tzinfo=UTC))
    assert checks[0].projection.projected == pytest.approx(7.5)
    assert not checks[0].over


def test_synthetic_month_projection_within_tolerance(workload):
    """On the six-week workload, projecting from the 16th lands within 10% of the workload's own rates
    continued to month-end (the workload's weekday/weekend volumes are fixed by design, ±1/6 per day)."""
    from otel_llmcost.reports.synthetic import generate

    later = generate(date(2026, 11, 16), 15, seed=99)  # what the rest of the month would bring
    rows = [{"time": c.start, "cost_usd": float(c.cost), "source": "synthetic"} for c in workload]
    result = project(conform(rows), UNTIL)
    actual = result.spent + sum(float(c.cost) for c in later)
    assert result.projected == pytest.approx(actual, rel=0.10)
    assert result.low <= actual <= result.high or abs(result.projected - actual) / actual < 0.05
