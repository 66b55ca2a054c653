"""Breakdowns of the calls frame: cost, calls, tokens, cache and latency per group.

One table per report: a row per value of the `--group-by` keys (provider, model, user, tier, feature,
day), most expensive first, with the totals row computed from the same columns (never a sum of rounded
figures). A figure the source cannot give (latency from Prometheus) is NaN, rendered as "no data".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .schema import GROUP_KEYS, ReportInputError

if TYPE_CHECKING:
    import pandas as pd

MEASURES: tuple[tuple[str, str], ...] = (
    ("calls", "calls"),
    ("cost_usd", "cost (USD)"),
    ("share", "share of cost"),
    ("input_tokens", "input tokens"),
    ("cached_tokens", "cached input tokens"),
    ("output_tokens", "output tokens"),
    ("reasoning_tokens", "reasoning tokens"),
    ("prompt_cache_share", "provider prompt-cache share of input"),
    ("cache_hits", "response cache hits"),
    ("cache_hit_rate", "hit rate of cache lookups"),
    ("saved_usd", "saved by the cache (USD)"),
    ("unpriced_calls", "calls with unknown price"),
    ("errors", "failed calls"),
    ("p95_latency_s", "p95 latency (s)"),
)
"""Breakdown columns and their labels, in display order."""


def with_day(frame: pd.DataFrame, timezone: str = "UTC") -> pd.DataFrame:
    """The frame with a `day` column: the calendar date of each call in `timezone`."""
    out = frame.copy()
    out["day"] = out["time"].dt.tz_convert(timezone).dt.date
    return out


def parse_group_by(text: str | Sequence[str] | None) -> list[str]:
    """`--group-by provider,model` → frame columns; ReportInputError naming the allowed keys."""
    if not text:
        return ["provider", "model"]
    items = text.split(",") if isinstance(text, str) else list(text)
    keys = [item.strip().lower() for item in items if item.strip()]
    unknown = [key for key in keys if key not in GROUP_KEYS]
    if unknown:
        raise ReportInputError(f"cannot group by {', '.join(unknown)}; use any of {', '.join(GROUP_KEYS)}")
    return [GROUP_KEYS[key] for key in keys]


def _p95(durations: pd.Series) -> float:
    values = durations.dropna()
    return float(values.quantile(0.95)) if len(values) else float("nan")


def breakdown(frame: pd.DataFrame, group_by: Sequence[str], timezone: str = "UTC") -> pd.DataFrame:
    """One row per group (see the module docstring), plus a last row `total`."""
    import pandas as pd

    data = with_day(frame, timezone) if "day" in group_by else frame.copy()
    data["cache_hits"] = data["exact_hits"] + data["semantic_hits"]
    keys = list(group_by)
    for key in keys:
        data[key] = data[key].map(lambda v: "(none)" if v is None or v != v else v)
    sums = ["calls", "cost_usd", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
            "cache_hits", "cache_lookups", "saved_usd", "unpriced_calls", "errors"]
    grouped = data.groupby(keys, dropna=False, sort=False)
    table = grouped[sums].sum()
    table["p95_latency_s"] = grouped["duration_s"].apply(_p95)
    total = data[sums].sum()
    total_row = pd.DataFrame([{**total.to_dict(), "p95_latency_s": _p95(data["duration_s"])}],
                             index=pd.MultiIndex.from_tuples([("total",) + ("",) * (len(keys) - 1)], names=keys)
                             if len(keys) > 1 else pd.Index(["total"], name=keys[0]))
    table = table.sort_values(["cost_usd", "calls"], ascending=False)
    table = pd.concat([table, total_row])
    overall = float(total["cost_usd"])
    table["share"] = table["cost_usd"] / overall if overall else float("nan")
    table["prompt_cache_share"] = (table["cached_tokens"] / table["input_tokens"]).where(table["input_tokens"] > 0)
    table["cache_hit_rate"] = (table["cache_hits"] / table["cache_lookups"]).where(table["cache_lookups"] > 0)
    for column in ("calls", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cache_hits",
                   "cache_lookups", "unpriced_calls", "errors"):
        table[column] = table[column].astype("int64")
    return table[[name for name, _ in MEASURES]].reset_index()


def daily_cost(frame: pd.DataFrame, timezone: str = "UTC") -> pd.Series:
    """Cost per calendar day in `timezone`, every day from the first to the last present (0 if none)."""
    import pandas as pd

    data = with_day(frame, timezone)
    series = data.groupby("day")["cost_usd"].sum()
    if series.empty:
        return series
    days = pd.date_range(min(series.index), max(series.index), freq="D").date
    return series.reindex(days, fill_value=0.0)
