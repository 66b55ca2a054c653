"""Report and advice output: rich tables for the terminal, JSON, CSV (HTML lives in `html`).

The numbers are the same in every format; only the terminal rounds them for reading. JSON carries
everything (breakdown rows, projection, budget checks, notes); CSV is the breakdown table, or the
recommendations for `advise`, since a CSV file holds one table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .breakdown import MEASURES

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from .projection import BudgetCheck, Projection
    from .savings import Recommendation


@dataclass
class Report:
    """Everything `otel-llmcost report` shows."""

    source: str
    since: str | None
    until: str
    group_by: list[str]
    table: pd.DataFrame
    projection: Projection | None
    budgets: list[BudgetCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    daily: pd.DataFrame | None = None
    """Cost per day and model (for the HTML charts)."""
    savings_by_day: pd.DataFrame | None = None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN → null, numpy scalars → Python, dates → ISO text."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _clean(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def report_json(report: Report) -> str:
    body = {
        "source": report.source, "since": report.since, "until": report.until, "group_by": report.group_by,
        "breakdown": table_records(report.table),
        "projection": report.projection.as_dict() if report.projection else None,
        "budgets": [check.as_dict() for check in report.budgets], "notes": report.notes,
    }
    return json.dumps(_clean(body), indent=2)


def report_csv(report: Report) -> str:
    out = io.StringIO()
    report.table.to_csv(out, index=False, lineterminator="\n")
    return out.getvalue()


def advice_json(recommendations: Sequence[Recommendation], meta: dict[str, Any]) -> str:
    return json.dumps(_clean({**meta, "recommendations": [r.as_dict() for r in recommendations]}), indent=2)


def advice_csv(recommendations: Sequence[Recommendation]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "title", "saving_usd", "monthly_usd", "sample", "confidence", "summary"])
    for r in recommendations:
        writer.writerow([r.kind, r.title, "" if r.saving is None else repr(r.saving),
                         "" if r.monthly is None else repr(r.monthly), r.sample, r.confidence, r.summary])
    return out.getvalue()


# --- terminal ---------------------------------------------------------------------------------------------
def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data" if column == "p95_latency_s" else "-"
    if column in ("cost_usd", "saved_usd"):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.2f}"
    if column in ("share", "prompt_cache_share", "cache_hit_rate"):
        return f"{value:.1%}"
    if column == "p95_latency_s":
        return f"{value:.3f}"
    if isinstance(value, (int,)) or (hasattr(value, "dtype") and "int" in str(value.dtype)):
        return f"{int(value):,}"
    return str(value)


_SHORT = {"calls": "calls", "cost_usd": "USD", "share": "share", "input_tokens": "input tok",
          "cached_tokens": "cached", "output_tokens": "output tok", "reasoning_tokens": "reasoning",
          "prompt_cache_share": "prompt cache", "cache_hits": "cache hits", "cache_hit_rate": "hit rate",
          "saved_usd": "saved USD", "unpriced_calls": "unpriced", "errors": "errors", "p95_latency_s": "p95 s"}


def terminal() -> Console:
    """A console for standard output: the terminal's width, or wide enough for the tables when piped."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=180)


def print_report(report: Report, console: Console) -> None:
    from rich.table import Table

    title = f"LLM cost by {', '.join(report.group_by)} — {report.source}"
    if report.since:
        title += f" from {report.since}"
    title += f" to {report.until}"
    table = Table(title=title, title_justify="left")
    for key in report.group_by:
        table.add_column(key)
    records = table_records(report.table)
    # Columns with nothing in them (no reasoning models, no errors) only take room in a terminal.
    shown = [name for name, _ in MEASURES
             if name in ("calls", "cost_usd", "share") or any(row[name] not in (None, 0, 0.0) for row in records)]
    for name in shown:
        table.add_column(_SHORT[name], justify="right")
    for index, row in enumerate(records):
        cells = [str(row[k]) if row[k] is not None else "(none)" for k in report.group_by]
        cells += [_fmt(name, row[name]) for name in shown]
        table.add_row(*cells, style="bold" if index == len(records) - 1 else None,
                      end_section=index == len(records) - 2)
    console.print(table)
    projection = report.projection
    if projection is not None:
        console.print(
            f"\nMonth-end projection ({projection.window_start:%Y-%m-%d} to {projection.window_end:%Y-%m-%d}): "
            f"[bold]${projection.projected:,.2f}[/bold] (80% band ${projection.low:,.2f}-${projection.high:,.2f}); "
            f"spent ${projection.spent:,.2f} so far; trailing 7 days: weekday ${projection.weekday_mean:,.2f}/day, "
            f"weekend ${projection.weekend_mean:,.2f}/day")
        for note in projection.notes:
            console.print(f"  note: {note}")
    if report.budgets:
        budgets = Table(title="Budgets against the projection", title_justify="left")
        for name in ("budget", "scope", "limit USD", "projected USD", "of limit", "runs out", "flag"):
            budgets.add_column(name, justify="right" if "USD" in name or name == "of limit" else "left")
        for check in report.budgets:
            flag = f"[red]OVERRUN > {check.margin:.0%}[/red]" if check.over else "ok"
            budgets.add_row(check.budget, check.scope, f"{check.amount:,.2f}", f"{check.projection.projected:,.2f}",
                            f"{check.ratio:.0%}", check.runs_out.isoformat() if check.runs_out else "-", flag)
        console.print(budgets)
    for note in report.notes:
        console.print(f"note: {note}")


def print_advice(recommendations: Sequence[Recommendation], console: Console, days: int, calls: int) -> None:
    from rich.table import Table

    table = Table(title=f"Savings advice from {calls:,} calls over {days} day(s)", title_justify="left")
    for name, justify in (("advice", "left"), ("period USD", "right"), ("per month USD", "right"),
                          ("sample", "right"), ("confidence", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in recommendations:
        table.add_row(r.title, "-" if r.saving is None else f"{r.saving:,.2f}",
                      "-" if r.monthly is None else f"{r.monthly:,.2f}", f"{r.sample:,}", r.confidence)
    console.print(table)
    for r in recommendations:
        console.print(f"[bold]{r.title}[/bold]: {r.summary}", highlight=False)
    total = sum(r.monthly for r in recommendations if r.monthly is not None and r.monthly > 0)
    console.print(f"Together up to ${total:,.2f} a month (figures overlap: a cached call needs no routing).")
