"""The HTML report: one self-contained file (inline CSS and SVG, no script, no web font, no link out),
so it opens offline, attaches to an email and prints as it shows."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import charts
from .breakdown import MEASURES
from .render import Report, _fmt, table_records

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .savings import Recommendation

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#111827}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.muted{color:#6b7280;font-size:13px}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}.kpi{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:20px}.kpi span{color:#6b7280;font-size:12px}.over{color:#dc2626;font-weight:600}
table{border-collapse:collapse;font-size:12.5px;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #e5e7eb;text-align:right}
th:first-child,td:first-child,td.key,th.key{text-align:left}tr.total td{font-weight:700;border-top:2px solid #111827}
.wide{overflow-x:auto}.charts{display:grid;grid-template-columns:1fr;gap:18px}svg{width:100%;height:auto;border:1px solid #f3f4f6;border-radius:6px}
svg .title{font:600 14px sans-serif;fill:#111827}svg .axis{font:11px sans-serif;fill:#6b7280}svg .label{font:12px sans-serif;fill:#374151}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def render_html(report: Report, recommendations: Sequence[Recommendation] = ()) -> str:
    """The whole page as a string."""
    records = table_records(report.table)
    total = records[-1] if records else {}
    kpis = [("spent in the period", f"${total.get('cost_usd', 0) or 0:,.2f}"),
            ("calls", f"{total.get('calls', 0) or 0:,}"),
            ("saved by caches", f"${total.get('saved_usd', 0) or 0:,.2f}")]
    projection = report.projection
    if projection is not None:
        kpis.append(("month-end projection", f"${projection.projected:,.2f}"))
    over = [c for c in report.budgets if c.over]
    parts = [f"<h1>LLM cost report</h1><div class='muted'>{_e(report.source)} · "
             f"{_e(report.since or 'all data')} to {_e(report.until)} · generated "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</div>"]
    parts.append("<div class='kpis'>" + "".join(f"<div class='kpi'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                                for k, v in kpis) + "</div>")
    for check in over:
        parts.append(f"<p class='over'>Budget {_e(check.budget)} ({_e(check.scope)}) is projected at "
                     f"${check.projection.projected:,.2f}, {check.ratio:.0%} of ${check.amount:,.2f}"
                     + (f"; it runs out on {check.runs_out:%Y-%m-%d}" if check.runs_out else "") + ".</p>")
    parts.append("<div class='charts'>")
    if projection is not None:
        budgets = [(c.budget, c.amount) for c in report.budgets if c.scope == "global"][:3]
        parts.append(charts.projection_chart([p.day for p in projection.days], [p.actual for p in projection.days],
                                             [p.cumulative for p in projection.days], [p.low for p in projection.days],
                                             [p.high for p in projection.days], budgets))
    if report.daily is not None and not report.daily.empty:
        by_model = report.daily.groupby("model")["cost_usd"].sum()
        parts.append(charts.bar_chart("Cost by model", [str(m) for m in by_model.index], list(by_model.values)))
    if report.savings_by_day is not None and not report.savings_by_day.empty:
        frame = report.savings_by_day
        parts.append(charts.column_chart("Cost and cache savings per day", list(frame.index),
                                         [("cost", list(frame["cost_usd"])), ("saved by caches", list(frame["saved_usd"]))]))
    parts.append("</div>")
    # Columns with nothing in them (no reasoning models, no errors) are left out; the JSON has them all.
    shown = [(name, label) for name, label in MEASURES
             if name in ("calls", "cost_usd", "share") or any(row[name] not in (None, 0, 0.0) for row in records)]
    parts.append(f"<h2>Breakdown by {_e(', '.join(report.group_by))}</h2><div class='wide'><table><tr>")
    parts.append("".join(f"<th class='key'>{_e(k)}</th>" for k in report.group_by))
    parts.append("".join(f"<th>{_e(label)}</th>" for _, label in shown) + "</tr>")
    for index, row in enumerate(records):
        css = " class='total'" if index == len(records) - 1 else ""
        cells = "".join(f"<td class='key'>{_e(row[k] if row[k] is not None else '(none)')}</td>" for k in report.group_by)
        cells += "".join(f"<td>{_e(_fmt(name, row[name]))}</td>" for name, _ in shown)
        parts.append(f"<tr{css}>{cells}</tr>")
    parts.append("</table></div>")
    if report.budgets:
        parts.append("<h2>Budgets against the projection</h2><table><tr><th>budget</th><th class='key'>scope</th>"
                     "<th>limit</th><th>projected</th><th>of limit</th><th>runs out</th><th>flag</th></tr>")
        for c in report.budgets:
            flag = f"<span class='over'>overrun &gt; {c.margin:.0%}</span>" if c.over else "ok"
            parts.append(f"<tr><td>{_e(c.budget)}</td><td class='key'>{_e(c.scope)}</td><td>${c.amount:,.2f}</td>"
                         f"<td>${c.projection.projected:,.2f}</td><td>{c.ratio:.0%}</td>"
                         f"<td>{_e(c.runs_out.isoformat() if c.runs_out else '-')}</td><td>{flag}</td></tr>")
        parts.append("</table>")
    if recommendations:
        parts.append("<h2>Savings advice</h2><table><tr><th>advice</th><th>per month</th><th>sample</th>"
                     "<th>confidence</th><th class='key'>evidence</th></tr>")
        for r in recommendations:
            monthly = "-" if r.monthly is None else f"${r.monthly:,.2f}"
            parts.append(f"<tr><td>{_e(r.title)}</td><td>{monthly}</td><td>{r.sample:,}</td><td>{_e(r.confidence)}</td>"
                         f"<td class='key'>{_e(r.summary)}</td></tr>")
        parts.append("</table>")
    notes = list(report.notes) + (list(projection.notes) if projection else [])
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>LLM cost report</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
