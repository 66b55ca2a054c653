"""Dashboard "Traffic and control": calls, errors and latency, and what the cost controls did (rate
limits, routing, budget levels, alerts)."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import metrics as m
from .common import assemble
from .panels import (
    BLUE,
    CALLS_PER_MIN,
    GREEN,
    ORANGE,
    PERCENT,
    RED,
    SECONDS,
    YELLOW,
    Query,
    bars,
    levels_timeline,
    time_series,
)

UID = "llmcost-traffic"
TITLE = "Traffic and control"

CALLS = m.selector(f"{m.DURATION}_count")
DECISIONS = m.selector(m.ROUTE_DECISIONS)


def _quantile(q: float, histogram: str, by: str) -> Query:
    buckets = m.selector(f"{histogram}_bucket")
    return Query(f"histogram_quantile({q}, sum by (le, {by}) (rate({buckets}[$__rate_interval])))",
                 f"p{round(q * 100)} {{{{{by}}}}}")


def build() -> dm.Dashboard:
    errors = m.selector(f"{m.DURATION}_count", m.CALL, f'{m.ERROR_TYPE}!=""')
    provider_errors = m.selector(f"{m.DURATION}_count", m.CALL, f'{m.ERROR_TYPE}!=""',
                                 f'{m.ERROR_TYPE}!~"{m.GUARD_REFUSALS}"')
    calls = [
        time_series(
            "Calls by provider and model", "LLM calls per minute (gen_ai.client.operation.duration count: every "
            "call, answered, cached, refused or failed), by provider and model.", CALLS_PER_MIN,
            [Query(f"sum by ({m.PROVIDER}, {m.REQUEST_MODEL}) (rate({CALLS}[$__rate_interval])) * 60",
                   f"{{{{{m.PROVIDER}}}}} {{{{{m.REQUEST_MODEL}}}}}")], stacked=True, width=12),
        time_series(
            "Errors by provider and model", "Failed calls per minute by provider, model and error.type: provider "
            "errors (HTTP 5xx, 429, timeouts) and refusals by our own guard (RateLimitExceeded, "
            "BudgetExceededError, ModelNotAllowedError).", CALLS_PER_MIN,
            [Query(f"sum by ({m.PROVIDER}, {m.REQUEST_MODEL}, {m.ERROR_TYPE}) (rate({errors}[$__rate_interval])) * 60",
                   f"{{{{{m.PROVIDER}}}}} {{{{{m.REQUEST_MODEL}}}}} {{{{{m.ERROR_TYPE}}}}}")],
            ((None, RED),), bars=True, width=12),
        time_series(
            "Provider error ratio", "Share of calls that failed at the provider, by provider (the guard's "
            "refusals left out: they are decisions). The alert rule LLMCallErrorRateHigh fires above 5%.",
            PERCENT,
            [Query(f"sum by ({m.PROVIDER}) (rate({provider_errors}[$__rate_interval])) / "
                   f"sum by ({m.PROVIDER}) (rate({CALLS}[$__rate_interval]))", f"{{{{{m.PROVIDER}}}}}")],
            ((None, GREEN), (0.01, YELLOW), (0.05, RED)), show_thresholds=True, width=24, height=7),
    ]
    latency = [
        time_series(
            "Latency p50 / p95", "Call duration percentiles by provider, from gen_ai.client.operation.duration "
            "(the GenAI conventions' buckets, 10 ms to 82 s; a cache hit is a call too, and a fast one).",
            SECONDS, [_quantile(0.5, m.DURATION, m.PROVIDER), _quantile(0.95, m.DURATION, m.PROVIDER)],
            ((None, GREEN), (5, YELLOW), (20, RED)), width=12),
        time_series(
            "Time to first chunk p50 / p95", "For streamed calls: time until the first chunk arrived, by "
            "provider (gen_ai.client.operation.time_to_first_chunk).", SECONDS,
            [_quantile(0.5, m.TIME_TO_FIRST_CHUNK, m.PROVIDER), _quantile(0.95, m.TIME_TO_FIRST_CHUNK, m.PROVIDER)],
            ((None, GREEN), (2, YELLOW), (5, RED)), width=12),
    ]
    rejections = m.selector(m.RATELIMIT_REJECTIONS, m.RATELIMIT)
    routed = m.selector(m.ROUTE_DECISIONS, m.CALL, f'{m.ROUTE_KIND}=~"{m.ROUTED_KINDS}"')
    downgraded = m.selector(m.ROUTE_DECISIONS, m.CALL, f'{m.ROUTE_KIND}="budget_throttle"')
    moved = m.selector(m.ROUTE_DECISIONS, m.CALL, f'{m.ROUTE_KIND}!="kept"')
    controls = [
        time_series(
            "Rate-limit rejections by tier", "Calls refused per minute by the rate limiter, by tier "
            "(llmcost.ratelimit.rejections). A steady line for one tier means its limits are too tight "
            "for its traffic, or one user is hammering.", CALLS_PER_MIN,
            [Query(f"sum by ({m.TIER}) (rate({rejections}[$__rate_interval])) * 60", f"{{{{{m.TIER}}}}}")],
            ((None, ORANGE),), bars=True, width=12),
        time_series(
            "Routed share and downgrades", "Share of the guard's routing decisions that sent a call to another "
            "model than it asked for: by complexity (a simple query to a cheaper model) or by a budget at "
            "its throttle level (downgrade to the substitute).", PERCENT,
            [Query(f"sum(rate({routed}[$__rate_interval])) / sum(rate({DECISIONS}[$__rate_interval]))", "routed"),
             Query(f"sum(rate({downgraded}[$__rate_interval])) / sum(rate({DECISIONS}[$__rate_interval]))",
                   "budget downgrades")],
            ((None, BLUE),), max_value=1, width=12),
        bars(
            "Routing decisions (from → to)", "Calls over the time range that the guard sent elsewhere: requested "
            "model → model called, and why (complexity, budget_throttle, not_allowed).", "suffix: calls",
            [Query(f"sum by ({m.ROUTE_FROM}, {m.REQUEST_MODEL}, {m.ROUTE_KIND}) ({m.over_range(moved)})",
                   f"{{{{{m.ROUTE_FROM}}}}} → {{{{{m.REQUEST_MODEL}}}}} ({{{{{m.ROUTE_KIND}}}}})", True)],
            no_value="No call was routed", width=12),
        bars(
            "Alerts fired", "Prometheus alerts of the otel-llmcost rules (collector/rules/) that were firing in "
            "the time range, by alert and budget; markers on the graphs show when.", "suffix: evaluations",
            [Query('sum by (alertname, budget) (count_over_time(ALERTS{alertstate="firing", '
                   'alertname=~"LLM.*"}[$__range]))', "{{alertname}} {{budget}}", True)],
            ((None, RED),), no_value="No alert fired (or Prometheus has no otel-llmcost rules)", width=12),
        levels_timeline(
            "Budget levels over time", "Each budget scope's level: ok, warn (70%), throttle (85%: cheaper "
            "models), stop (95%: cached answers only). Budgets are shared by every service and model, so this "
            "panel ignores the dashboard filters.",
            Query(f"max by ({m.BUDGET_NAME}, {m.BUDGET_SCOPE}) ({m.BUDGET_LEVEL})",
                  f"{{{{{m.BUDGET_NAME}}}}} / {{{{{m.BUDGET_SCOPE}}}}}")),
    ]
    return assemble(UID, TITLE, "Calls, errors and latency of LLM calls, and what the cost controls did.", [
        ("Calls and errors", calls), ("Latency", latency), ("Cost controls", controls),
    ])
