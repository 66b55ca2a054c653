"""Calls from a Prometheus server's HTTP API, as the Collector's prometheus exporter names our metrics.

Prometheus keeps counters, not calls: each row of the frame is the calls of one label set in one time
step (`calls` from `gen_ai_client_operation_duration_seconds_count`, cost from
`llmcost_cost_USD_total`, tokens from the token counters). Increases are exact: each counter is read
at the end of every step (`last_over_time`) and consecutive values are subtracted, a drop counting as
a restart from zero, so no `rate()` extrapolation blurs known totals. What metrics do not carry stays
at its default: per-call latency (p95 is "no data"), complexity and prompt hashes (the advisor says so);
cache hits are known per provider only (`llmcost_cache_lookups_total` has no model label).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..schema import ReportInputError, conform
from ._progress import progress_bar

if TYPE_CHECKING:
    import pandas as pd

LABELS = {
    "gen_ai_provider_name": "provider", "gen_ai_operation_name": "operation",
    "gen_ai_request_model": "request_model", "gen_ai_response_model": "model",
    "llmcost_user_tier": "tier", "llmcost_feature": "feature", "llmcost_user_id": "user",
    "llmcost_tenant_id": "tenant",
}
# frame column → PromQL selector of the counter that holds it
COUNTERS = {
    "calls": "gen_ai_client_operation_duration_seconds_count",
    "cost_usd": "llmcost_cost_USD_total",
    "saved_usd": "llmcost_cost_saved_USD_total",
    "unpriced_calls": "llmcost_price_unknown_total",
    "input_tokens": 'gen_ai_client_token_usage_sum{gen_ai_token_type="input"}',
    "output_tokens": 'gen_ai_client_token_usage_sum{gen_ai_token_type="output"}',
    "cached_tokens": "llmcost_usage_cache_read_input_tokens_total",
    "cache_write_tokens": "llmcost_usage_cache_write_input_tokens_total",
    "reasoning_tokens": "llmcost_usage_reasoning_output_tokens_total",
}
_MAX_POINTS = 11000  # Prometheus refuses longer query_range answers


def _get(base: str, path: str, params: dict[str, str], timeout: float = 30.0) -> Any:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's server URL
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except Exception:
            detail = exc.reason
        raise ReportInputError(f"Prometheus at {base} refused the query ({exc.code}: {detail})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportInputError(f"cannot reach Prometheus at {base} ({reason}); check the URL and that it runs") from None
    except json.JSONDecodeError:
        raise ReportInputError(f"{base} did not answer with Prometheus API JSON; is it a Prometheus server?") from None
    if body.get("status") != "success":
        raise ReportInputError(f"Prometheus at {base}: {body.get('error', 'query failed')}")
    return body["data"]


def _increases(values: list[list[Any]]) -> list[tuple[float, float]]:
    """(time, increase over the step ending then) of a counter's [time, value] points."""
    out: list[tuple[float, float]] = []
    previous: float | None = None
    for stamp, text in values:
        value = float(text)
        if previous is None:
            out.append((float(stamp), value))  # a series that appears counts from zero
        else:
            out.append((float(stamp), value - previous if value >= previous else value))  # drop: restart
        previous = value
    return out


def read_prometheus(url: str, since: datetime | None, until: datetime | None, *, step: timedelta,
                    progress: bool = False) -> pd.DataFrame:
    """Calls per label set and step in [since, until) (default: the last 35 days)."""
    end = until or datetime.now(timezone.utc)
    start = since or end - timedelta(days=35)
    seconds = int(step.total_seconds())
    if seconds < 1:
        raise ReportInputError("--step must be at least one second")
    if (end - start).total_seconds() / seconds > _MAX_POINTS:
        raise ReportInputError(f"{(end - start)} in steps of {step} is more than {_MAX_POINTS} points; "
                               "use a longer --step or a shorter --since/--until window")
    # One step before the window: the baseline each series' first increase is measured from.
    first = start - step
    by = ", ".join(LABELS)
    rows: dict[tuple[float, tuple[str, ...]], dict[str, Any]] = defaultdict(dict)
    window = (first.timestamp(), end.timestamp())
    with progress_bar("querying Prometheus", len(COUNTERS) + 1, progress) as bar:
        for column, selector in COUNTERS.items():
            query = f"sum by ({by}) (last_over_time({selector}[{seconds}s]))"
            data = _get(url, "/api/v1/query_range", {"query": query, "start": f"{window[0]:.3f}",
                                                     "end": f"{window[1]:.3f}", "step": f"{seconds}s"})
            for series in data.get("result", []):
                labels = tuple(series["metric"].get(label, "") for label in LABELS)
                points = _increases(series.get("values", []))
                baseline = bool(points) and points[0][0] <= window[0] + 0.5
                for index, (stamp, increase) in enumerate(points):
                    if (index == 0 and baseline) or increase == 0:
                        continue
                    row = rows[(stamp - seconds, labels)]
                    row[column] = row.get(column, 0.0) + increase
            bar.advance(1)
        hits = _get(url, "/api/v1/query_range", {
            "query": f"sum by (gen_ai_provider_name, llmcost_cache_status) "
                     f"(last_over_time(llmcost_cache_lookups_total[{seconds}s]))",
            "start": f"{window[0]:.3f}", "end": f"{window[1]:.3f}", "step": f"{seconds}s"})
        for series in hits.get("result", []):
            status = series["metric"].get("llmcost_cache_status", "")
            provider = series["metric"].get("gen_ai_provider_name", "")
            points = _increases(series.get("values", []))
            baseline = bool(points) and points[0][0] <= window[0] + 0.5
            for index, (stamp, increase) in enumerate(points):
                if (index == 0 and baseline) or increase == 0:
                    continue
                labels = tuple(provider if label == "gen_ai_provider_name" else "" for label in LABELS)
                row = rows[(stamp - seconds, labels)]
                row["cache_lookups"] = row.get("cache_lookups", 0.0) + increase
                if status in ("exact_hit", "semantic_hit"):
                    key = "exact_hits" if status == "exact_hit" else "semantic_hits"
                    row[key] = row.get(key, 0.0) + increase
        bar.advance(1)
    records = []
    for (stamp, labels), values in rows.items():
        when = datetime.fromtimestamp(stamp, timezone.utc)
        if when < start or when >= end:
            continue
        record: dict[str, Any] = {"time": when, "source": "prometheus", "calls": 0}
        for label, column in LABELS.items():
            record[column] = labels[list(LABELS).index(label)] or None
        record["request_model"] = record["request_model"] or record["model"]
        record["model"] = record["model"] or record["request_model"]
        for column, value in values.items():
            record[column] = round(value) if column not in ("cost_usd", "saved_usd") else value
        records.append(record)
    return conform(records)
