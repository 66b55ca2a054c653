"""Inline SVG charts for the HTML report: drawn here, so the file needs no script, font or network.

Each function returns one `<svg>` element sized by its viewBox (it scales with the page). Text is
escaped; colours are fixed and readable in print.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import date

_W, _H = 720, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 30, 40
_PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777")


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0 or math.isnan(value):
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def _money(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def _frame(title: str, y_max: float, body: str) -> str:
    plot_h = _H - _TOP - _BOTTOM
    grid = []
    for i in range(5):
        y = _TOP + plot_h - plot_h * i / 4
        grid.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                    f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{_money(y_max * i / 4)}</text>')
    return (f'<svg viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(title)}">'
            f'<text x="{_LEFT}" y="18" class="title">{html.escape(title)}</text>{"".join(grid)}{body}</svg>')


def projection_chart(days: Sequence[date], actual: Sequence[float | None], cumulative: Sequence[float],
                     low: Sequence[float], high: Sequence[float], budgets: Sequence[tuple[str, float]] = ()) -> str:
    """Cumulative spend in the window: actual (solid), projected (dashed) with its band, budget lines."""
    n = len(days)
    if n == 0:
        return _frame("Cost over the month", 1.0, "")
    top = _nice_max(max([*high, *cumulative, *(amount for _, amount in budgets)]) * 1.05)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(i: int) -> float:
        return _LEFT + plot_w * (i + 1) / n

    def y(v: float) -> float:
        return _TOP + plot_h - plot_h * v / top

    last_actual = max((i for i, a in enumerate(actual) if a is not None), default=-1)
    future = [i for i in range(n) if i >= last_actual]
    parts = []
    if future:
        band = " ".join(f"{x(i):.1f},{y(high[i]):.1f}" for i in future)
        band += " " + " ".join(f"{x(i):.1f},{y(low[i]):.1f}" for i in reversed(future))
        parts.append(f'<polygon points="{band}" fill="#93c5fd" fill-opacity="0.45" stroke="none"/>')
        line = " ".join(f"{x(i):.1f},{y(cumulative[i]):.1f}" for i in future)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="2" stroke-dasharray="6 4"/>')
    if last_actual >= 0:
        line = " ".join(f"{x(i):.1f},{y(cumulative[i]):.1f}" for i in range(last_actual + 1))
        parts.append(f'<polyline points="{_LEFT},{y(0):.1f} {line}" fill="none" stroke="#111827" stroke-width="2.5"/>')
    for k, (name, amount) in enumerate(budgets):
        colour = _PALETTE[3 + k % 3]
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(amount):.1f}" y2="{y(amount):.1f}" '
                     f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="2 3"/>'
                     f'<text x="{_W - _RIGHT - 4}" y="{y(amount) - 4:.1f}" text-anchor="end" class="label" '
                     f'fill="{colour}">{html.escape(name)} {_money(amount)}</text>')
    for i in range(0, n, max(1, n // 8)):
        parts.append(f'<text x="{x(i):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" class="axis">'
                     f'{days[i]:%b %d}</text>')
    parts.append(f'<text x="{_LEFT + 8}" y="{_TOP + 12}" class="label">— spent  - - projected (80% band shaded)</text>')
    return _frame("Cumulative cost this month, with the projection", top, "".join(parts))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> str:
    """Horizontal bars, largest first (cost by model)."""
    pairs = sorted(zip(labels, values, strict=True), key=lambda p: p[1], reverse=True)[:10]
    if not pairs:
        return _frame(title, 1.0, "")
    top = _nice_max(max(v for _, v in pairs))
    height = _TOP + 26 * len(pairs) + 20
    width = _W - 220 - _RIGHT - 60
    bars = []
    for i, (label, value) in enumerate(pairs):
        y = _TOP + 8 + 26 * i
        w = width * value / top if top else 0
        bars.append(f'<text x="210" y="{y + 14}" text-anchor="end" class="label">{html.escape(label[:32])}</text>'
                    f'<rect x="220" y="{y}" width="{w:.1f}" height="18" fill="{_PALETTE[i % len(_PALETTE)]}"/>'
                    f'<text x="{224 + w:.1f}" y="{y + 14}" class="label">{_money(value)}</text>')
    return (f'<svg viewBox="0 0 {_W} {height}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{html.escape(title)}"><text x="{_LEFT}" y="18" class="title">{html.escape(title)}</text>'
            f'{"".join(bars)}</svg>')


def column_chart(title: str, days: Sequence[date], series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Stacked daily columns (cost and cache savings per day)."""
    n = len(days)
    if n == 0:
        return _frame(title, 1.0, "")
    totals = [sum(values[i] for _, values in series) for i in range(n)]
    top = _nice_max(max(totals) * 1.05)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / n
    parts = []
    for i in range(n):
        base = 0.0
        for k, (_name, values) in enumerate(series):
            v = values[i]
            if v <= 0:
                continue
            h = plot_h * v / top
            y = _TOP + plot_h - plot_h * base / top - h
            parts.append(f'<rect x="{_LEFT + slot * i + slot * 0.1:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
                         f'height="{h:.1f}" fill="{_PALETTE[k % len(_PALETTE)]}"/>')
            base += v
    for i in range(0, n, max(1, n // 8)):
        parts.append(f'<text x="{_LEFT + slot * (i + 0.5):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" '
                     f'class="axis">{days[i]:%b %d}</text>')
    legend = "".join(f'<rect x="{_LEFT + 160 * k + 8}" y="{_TOP + 2}" width="10" height="10" '
                     f'fill="{_PALETTE[k % len(_PALETTE)]}"/><text x="{_LEFT + 160 * k + 22}" y="{_TOP + 11}" '
                     f'class="label">{html.escape(name)}</text>' for k, (name, _) in enumerate(series))
    return _frame(title, top, "".join(parts) + legend)
