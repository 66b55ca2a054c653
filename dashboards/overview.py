"""Dashboard "LLM cost overview": what was spent, how fast, against which budgets, and on what."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models import dashboard as dm

from . import metrics as m
from .common import assemble
from .panels import (
    BUDGET_STEPS,
    CALLS,
    GREEN,
    ORANGE,
    PERCENT,
    RED,
    USD,
    USD_PER_HOUR,
    Query,
    bars,
    single_stat,
    time_series,
)

UID = "llmcost-overview"
TITLE = "LLM cost overview"

COST = m.selector(m.COST)
SECONDS_TO_MONTH_END = "scalar((days_in_month() - day_of_month() + 1) * 86400 - time() % 86400)"
"""Seconds left in the calendar month (UTC), as PromQL."""
NO_USERS = "User attribution is off on metrics: set OTEL_LLMCOST_METRICS_INCLUDE_USER=true in the app"
LEDGER_ALERTS = ("The alert LLMBudgetLedgerBacklog fires when spend has waited 5 minutes; LLMBudgetSpendLost "
                 "pages when any is lost for good.")
ANY_IS_ORANGE = ((None, GREEN), (1e-9, ORANGE))
ANY_IS_RED = ((None, GREEN), (1e-9, RED))
"""Thresholds for ledger health: any amount at all is worth a look (a billionth, as floats are not exact)."""
WRITES = "suffix: writes"
ERRORS_PER_MIN = "suffix: errors/min"
BUDGETS_NOTE = ("Budgets are shared by every service and model, so this panel ignores the dashboard filters.")


def _by(labels: str) -> str:
    return f"sum by ({labels}) ({m.over_range(COST)})"


def build() -> dm.Dashboard:
    spend = [
        single_stat(
            "Spend today", "USD spent since midnight (dashboard time zone) by the calls the filters select: "
            "every priced call counts, sampled or not.", USD, Query(f"sum({m.over_range(COST)})", "today", True),
            time_from="now/d", decimals=2),
        single_stat(
            "Spend month to date", "USD spent since the first of the month by the calls the filters select.",
            USD, Query(f"sum({m.over_range(COST)})", "month to date", True), time_from="now/M", decimals=2),
        single_stat(
            "Burn rate (last hour)", "Spend per hour over the last hour: what the next hour costs at this pace.",
            USD_PER_HOUR, Query(f"sum(rate({COST}[1h])) * 3600", "USD/h", True), decimals=3),
        single_stat(
            "Projected month-end spend", "Month-to-date spend plus the last hour's pace until the end of the "
            "calendar month (UTC). A straight line: a spike in the last hour inflates it.", USD,
            Query(f"sum({m.over_range(COST)}) + sum(rate({COST}[1h])) * {SECONDS_TO_MONTH_END}",
                  "projected", True), time_from="now/M", decimals=2),
        time_series(
            "Burn rate", "Spend per hour by provider, from the rate of llmcost.cost over the panel's interval.",
            USD_PER_HOUR, [Query(f"sum by ({m.PROVIDER}) (rate({COST}[$__rate_interval])) * 3600",
                                 f"{{{{{m.PROVIDER}}}}}")], stacked=True, width=24),
    ]
    budget_utilization = f"max by ({m.BUDGET_NAME}, {m.BUDGET_SCOPE}) ({m.BUDGET_UTILIZATION})"
    projected = (
        f"max by ({m.BUDGET_NAME}, {m.BUDGET_SCOPE}) ({m.BUDGET_PROJECTED} or predict_linear("
        f'{m.BUDGET_SPEND}{{{m.BUDGET_SCOPE}="global"}}[1h], {SECONDS_TO_MONTH_END}))'
        f" / max by ({m.BUDGET_NAME}, {m.BUDGET_SCOPE}) ({m.BUDGET_LIMIT})"
    )
    budgets = [
        time_series(
            "Budget utilization per scope", "Spend over the budget amount in each budget's current window, per "
            "scope (a user, a team, a feature, or global). Dashed lines: warn 70%, throttle 85% (calls go to "
            "cheaper models), stop 95% (only cached answers). " + BUDGETS_NOTE, PERCENT,
            [Query(budget_utilization, f"{{{{{m.BUDGET_NAME}}}}} / {{{{{m.BUDGET_SCOPE}}}}}")], BUDGET_STEPS,
            show_thresholds=True, table_legend=True, width=14, height=9),
        bars(
            "Projected window-end spend against each budget", "Spend projected at the end of each budget's window "
            "at its pace so far (the budget engine's forecast; for a global budget without one, a linear fit "
            "of the last hour to the end of the month), as a share of the budget. Rolling windows have no end "
            "and are not projected. " + BUDGETS_NOTE, PERCENT,
            [Query(projected, f"{{{{{m.BUDGET_NAME}}}}} / {{{{{m.BUDGET_SCOPE}}}}}", True)],
            (*BUDGET_STEPS, (1.0, "dark-red")), max_value=1.5, width=10, height=9,
            no_value="No projection yet: too early in the window, or only rolling budgets"),
    ]
    with_user = m.selector(m.COST, m.CALL, f'{m.USER}!=""')
    breakdown = [
        time_series(
            "Cost by provider", "Spend per hour by gen_ai.provider.name.", USD_PER_HOUR,
            [Query(f"sum by ({m.PROVIDER}) (rate({COST}[$__rate_interval])) * 3600", f"{{{{{m.PROVIDER}}}}}")],
            stacked=True, width=12),
        time_series(
            "Cost by model", "Spend per hour by the model called (after routing: gen_ai.request.model).",
            USD_PER_HOUR, [Query(f"sum by ({m.REQUEST_MODEL}) (rate({COST}[$__rate_interval])) * 3600",
                                 f"{{{{{m.REQUEST_MODEL}}}}}")], stacked=True, width=12),
        bars(
            "Cost by feature", "USD over the dashboard's time range by llmcost.feature (set with "
            "otel_llmcost.attributes(feature=...)); calls without a feature show as an empty name.", USD,
            [Query(_by(m.FEATURE), f"{{{{{m.FEATURE}}}}}", True)], width=8),
        bars(
            "Cost by tier", "USD over the dashboard's time range by llmcost.user.tier.", USD,
            [Query(_by(m.TIER), f"{{{{{m.TIER}}}}}", True)], width=8),
        bars(
            "Top users", "The 10 users who spent most over the time range. Needs user ids on metrics "
            "(OTEL_LLMCOST_METRICS_INCLUDE_USER=true); they are off by default for cardinality and privacy.",
            USD, [Query(f"topk(10, sum by ({m.USER}) ({m.over_range(with_user)}))", f"{{{{{m.USER}}}}}", True)],
            no_value=NO_USERS, width=8),
    ]
    unknown = m.selector(m.PRICE_UNKNOWN)
    unknown_panels = [
        bars(
            "Calls with unknown prices", "Calls over the time range whose model has no known price: they are "
            "missing from every cost figure and budget. Add the model to the price file "
            "(OTEL_LLMCOST_PRICES_FILE), with a zero price for a self-hosted one.", CALLS,
            [Query(f"sum by ({m.PROVIDER}, {m.REQUEST_MODEL}) ({m.over_range(unknown)})",
                   f"{{{{{m.PROVIDER}}}}} {{{{{m.REQUEST_MODEL}}}}}", True)],
            ((None, GREEN), (1, RED)), no_value="Every call had a price", width=12),
        time_series(
            "Unknown-price calls over time", "Calls per hour to models without a price, by model.",
            "suffix: calls/h", [Query(f"sum by ({m.REQUEST_MODEL}) (rate({unknown}[$__rate_interval])) * 3600",
                                      f"{{{{{m.REQUEST_MODEL}}}}}")], ((None, ORANGE),), bars=True, width=12),
    ]
    return assemble(UID, TITLE, "Spend, burn rate and budgets of LLM calls priced by otel-llmcost.", [
        ("Spend", spend), ("Budgets", budgets), ("Ledger health", _ledger_health()),
        ("Where the money goes", breakdown), ("Unknown prices", unknown_panels),
    ])


def _ledger_health() -> list[Any]:
    """What the budget ledger has not counted: without these panels a ledger outage only shows in logs,
    while the budgets quietly enforce their levels on too little spend."""
    waiting = m.selector(m.BACKLOG_SPEND, m.LEDGER)
    lost = m.selector(m.BACKLOG_LOST, m.LEDGER)
    dropped = m.selector(m.BACKLOG_DROPPED, m.LEDGER)
    errors = m.selector(m.LEDGER_ERRORS, m.LEDGER)
    journal = m.selector(m.JOURNAL_ERRORS, m.LEDGER)
    return [
        single_stat(
            "Spend waiting for the ledger", "USD of spend the budget ledger has not taken yet "
            "(llmcost.budget.backlog.spend, now, summed over the selected services' processes and the "
            "processor service). Non-zero during a ledger outage (Redis down, SQLite locked): budgets enforce "
            "their levels on numbers this much too low until the backlog replays. " + LEDGER_ALERTS, USD,
            Query(f"sum({waiting})", "waiting", True), ANY_IS_ORANGE, decimals=4),
        single_stat(
            "Writes waiting for the ledger", "Ledger writes queued in the backlog now "
            "(llmcost.budget.backlog.writes); once the ledger answers they replay in order and this falls to 0.",
            WRITES, Query(f"sum({m.selector(m.BACKLOG_WRITES, m.LEDGER)})", "waiting", True), ANY_IS_ORANGE,
            decimals=0),
        single_stat(
            "Spend lost for good (time range)", "USD dropped over the dashboard's time range without ever "
            "reaching the ledger (llmcost.budget.backlog.lost): the backlog was full or off, or a write waited "
            "past its max_age. No budget will count it; reconcile it with the provider's bill. "
            "LLMBudgetSpendLost pages on any.", USD, Query(f"sum({m.over_range(lost)})", "lost", True),
            ANY_IS_RED, decimals=4),
        single_stat(
            "Writes dropped for good (time range)", "Ledger writes dropped over the dashboard's time range "
            "(llmcost.budget.backlog.dropped); their USD is the panel to the left.", WRITES,
            Query(f"sum({m.over_range(dropped)})", "dropped", True), ANY_IS_RED, decimals=0),
        time_series(
            "Ledger errors by path", "Failed budget ledger calls per minute (llmcost.budget.ledger.errors) by "
            "where they failed: call (a call's own write, or a cost event refused as bad input) or replay "
            "(the backlog retrying during an outage, with backoff); and journal (the backlog's journal "
            "writes or syncs the disk refused: those costs wait in memory only).", ERRORS_PER_MIN,
            [Query(f"sum by ({m.LEDGER_PATH}) (rate({errors}[$__rate_interval])) * 60",
                   f"{{{{{m.LEDGER_PATH}}}}}"),
             Query(f"sum(rate({journal}[$__rate_interval])) * 60", "journal")],
            ((None, ORANGE),), bars=True, width=24, height=7),
    ]
