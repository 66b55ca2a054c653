"""Our metric and label names as Prometheus shows them, and the label filters of the dashboard variables.

Names are derived from `otel_llmcost.names` by the rules of the Collector's Prometheus exporter with
suffixes on (`translation_strategy: UnderscoreEscapingWithSuffixes`): dots become underscores, the unit
is appended (`USD` as is, `s` as `seconds`, `1` as `ratio` on gauges, `{annotations}` dropped), counters
end in `_total`. Deriving them, instead of typing them, is what keeps a renamed metric from leaving
panels silently empty (openlit#731, #1043): the regeneration check fails, and the live test
checks each name against a real Prometheus.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from otel_llmcost import names

Kind = Literal["counter", "gauge", "histogram"]

_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "USD": "USD"}


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """The name Prometheus gives an OpenTelemetry metric exported through the Collector (suffixes on).

    A histogram's series add `_bucket`, `_sum` and `_count` to what this returns.
    """
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    word = ""
    if unit == "1":
        word = "ratio" if kind == "gauge" else ""
    elif not (unit.startswith("{") and unit.endswith("}")):
        word = _UNIT_WORDS.get(unit, unit)
    if word and not base.endswith(f"_{word}"):
        base = f"{base}_{word}"
    if kind == "counter" and not base.endswith("_total"):
        base += "_total"
    return base


def label(attribute: str) -> str:
    """The Prometheus label of an attribute (resource attributes too, by resource_to_telemetry_conversion)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


# --- metrics ---------------------------------------------------------------------------------------
COST: Final = prometheus_name(names.METRIC_COST, "USD", "counter")
COST_SAVED: Final = prometheus_name(names.METRIC_COST_SAVED, "USD", "counter")
PRICE_UNKNOWN: Final = prometheus_name(names.METRIC_UNKNOWN_PRICE_CALLS, "{call}", "counter")
CACHE_LOOKUPS: Final = prometheus_name(names.METRIC_CACHE_LOOKUPS, "{lookup}", "counter")
CACHE_REFUSALS: Final = prometheus_name(names.METRIC_CACHE_SEMANTIC_REFUSALS, "{lookup}", "counter")
PROMPT_CACHE_SAVED: Final = prometheus_name(names.METRIC_PROMPT_CACHE_SAVED, "USD", "counter")
CACHE_READ_TOKENS: Final = prometheus_name(names.METRIC_CACHED_INPUT_TOKENS, "{token}", "counter")
CACHE_WRITE_TOKENS: Final = prometheus_name(names.METRIC_CACHE_WRITE_TOKENS, "{token}", "counter")
REASONING_TOKENS: Final = prometheus_name(names.METRIC_REASONING_TOKENS, "{token}", "counter")
RATELIMIT_REJECTIONS: Final = prometheus_name(names.METRIC_RATELIMIT_REJECTIONS, "{call}", "counter")
ROUTE_DECISIONS: Final = prometheus_name(names.METRIC_ROUTE_DECISIONS, "{call}", "counter")
TOKEN_USAGE: Final = prometheus_name(names.METRIC_TOKEN_USAGE, "{token}", "histogram")
DURATION: Final = prometheus_name(names.METRIC_OPERATION_DURATION, "s", "histogram")
TIME_TO_FIRST_CHUNK: Final = prometheus_name(names.METRIC_TIME_TO_FIRST_CHUNK, "s", "histogram")
# The budget gauges' names are literals in otel_llmcost/budget/processor.py (and the processor service).
BUDGET_UTILIZATION: Final = prometheus_name(names.METRIC_BUDGET_UTILIZATION, "1", "gauge")
BUDGET_SPEND: Final = prometheus_name("llmcost.budget.spend", "USD", "gauge")
BUDGET_LIMIT: Final = prometheus_name("llmcost.budget.limit", "USD", "gauge")
BUDGET_LEVEL: Final = prometheus_name("llmcost.budget.level", "{level}", "gauge")
BUDGET_PROJECTED: Final = prometheus_name(names.METRIC_BUDGET_PROJECTED, "USD", "gauge")
BACKLOG_SPEND: Final = prometheus_name(names.METRIC_BUDGET_BACKLOG_SPEND, "USD", "gauge")
BACKLOG_WRITES: Final = prometheus_name(names.METRIC_BUDGET_BACKLOG_WRITES, "{write}", "gauge")
BACKLOG_LOST: Final = prometheus_name(names.METRIC_BUDGET_BACKLOG_LOST, "USD", "counter")
BACKLOG_DROPPED: Final = prometheus_name(names.METRIC_BUDGET_BACKLOG_DROPPED, "{write}", "counter")
JOURNAL_ERRORS: Final = prometheus_name(names.METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS, "{error}", "counter")
LEDGER_ERRORS: Final = prometheus_name(names.METRIC_BUDGET_LEDGER_ERRORS, "{error}", "counter")

# --- labels ----------------------------------------------------------------------------------------
PROVIDER: Final = label(names.GEN_AI_PROVIDER_NAME)
REQUEST_MODEL: Final = label(names.GEN_AI_REQUEST_MODEL)
TOKEN_TYPE: Final = label(names.GEN_AI_TOKEN_TYPE)
ERROR_TYPE: Final = label(names.ERROR_TYPE)
TIER: Final = label(names.LLMCOST_USER_TIER)
FEATURE: Final = label(names.LLMCOST_FEATURE)
USER: Final = label(names.LLMCOST_USER_ID)
CACHE_STATUS: Final = label(names.LLMCOST_CACHE_STATUS)
ROUTE_FROM: Final = label(names.LLMCOST_ROUTE_FROM_MODEL)
ROUTE_KIND: Final = label(names.LLMCOST_ROUTE_KIND)
BUDGET_NAME: Final = label("llmcost.budget.name")
BUDGET_SCOPE: Final = label("llmcost.budget.scope")
BUDGET_LEVEL_LABEL: Final = label(names.LLMCOST_BUDGET_LEVEL)
LEDGER_PATH: Final = label(names.LLMCOST_BUDGET_LEDGER_PATH)
SERVICE: Final = label("service.name")
ENVIRONMENT: Final = label("deployment.environment.name")

HIT_STATUSES: Final = f"{names.CACHE_EXACT_HIT}|{names.CACHE_SEMANTIC_HIT}"
LOOKUP_STATUSES: Final = f"{names.CACHE_MISS}|{HIT_STATUSES}"
"""Lookups that could hit: bypassed calls (not cacheable, the app said so, or the storage is down) are left
out of hit rates."""
ROUTED_KINDS: Final = f"{names.ROUTE_COMPLEXITY}|{names.ROUTE_BUDGET_THROTTLE}"
GUARD_REFUSALS: Final = "BudgetExceededError|RateLimitExceeded|ModelNotAllowedError"
"""error.type of calls our own guard refused: decisions, not provider errors."""

# --- dashboard variables ---------------------------------------------------------------------------
# Variable name -> label it filters. With "All" a variable is the regex `.*`, which also matches a series
# that lacks the label: a Go or Java app's GenAI metrics without our tier label still show.
VARIABLES: Final = {
    "service": SERVICE,
    "environment": ENVIRONMENT,
    "provider": PROVIDER,
    "model": REQUEST_MODEL,
    "tier": TIER,
    "feature": FEATURE,
}
CALL: Final = ("service", "environment", "provider", "model", "tier", "feature")
"""Labels of every per-call metric (cost, tokens, duration, routing decisions)."""
CACHE: Final = ("service", "environment", "provider")
"""Cache lookups and refusals carry the provider, not the model or attribution."""
RATELIMIT: Final = ("service", "environment", "provider", "tier")
LEDGER: Final = ("service", "environment")
"""The ledger's health belongs to a process (an app replica or the processor service), not to a call."""

VARIABLE_SOURCE: Final = f'{{__name__=~"{COST}|{DURATION}_count"}}'
"""Series the variables list their values from: our cost counter and the GenAI conventions' duration
histogram, which other instrumentations (other SDKs, other languages) record too."""


def selector(metric: str, filters: tuple[str, ...] = CALL, *matchers: str) -> str:
    """`metric{label=~"$var", ...}` for the dashboard variables in `filters`, plus literal matchers."""
    parts = [f'{VARIABLES[var]}=~"${var}"' for var in filters]
    parts.extend(matchers)
    return f"{metric}{{{', '.join(parts)}}}"


def over_range(series: str, window: str = "$__range") -> str:
    """How much a counter grew over `window`, counting series born inside it in full.

    `increase()` cannot see the first value of a new series (a counter born at 1 grew by 0 for it): a
    series that did not exist at the window's start is taken at its current value instead.
    """
    return f"(({series} unless {series} offset {window}) or increase({series}[{window}]))"
