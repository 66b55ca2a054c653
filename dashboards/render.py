"""Draw what the dashboards show from a live Prometheus, without Grafana: one static HTML page per
dashboard (panels at their grid positions, charts as inline SVG, no network), then a PNG of each page
from headless Chromium, so a person can look at what a user would see.

    python -m dashboards.render --prometheus http://127.0.0.1:9090 --out shots/ --minutes 30

Queries are the committed JSON's, with every variable at All, expanded as Grafana expands them
(`dashboards.queries`). This is a look at the data through our panels, not a Grafana rendering:
colours, units, thresholds and legends follow the panel settings in a simplified way.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .prometheus_api import PrometheusAPI, PrometheusQueryError, Series
from .queries import JSON_DIR, PanelQuery, dashboards, expand, panel_queries, panels

ROW_PX = 34
COLUMN_COUNT = 24
PAGE_WIDTH = 1400
PALETTE = ("#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#37872d",
           "#c4162a", "#1f60c4", "#fa6400")
COLOURS = {"green": "#73bf69", "yellow": "#fade2a", "orange": "#ff9830", "red": "#f2495c", "blue": "#5794f2",
           "dark-red": "#c4162a"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=5000")


@dataclass
class PanelData:
    """A panel's results: `series` per query, or the error Prometheus gave."""

    panel: dict[str, Any]
    queries: list[PanelQuery]
    series: list[tuple[PanelQuery, list[Series]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(s.points for _, result in self.series for s in result)


def evaluate(api: PrometheusAPI, board: Mapping[str, Any], start: datetime, end: datetime,
             scrape_interval: float) -> list[PanelData]:
    """Every panel's queries over [start, end] as Grafana would send them with the variables at All."""
    by_panel: dict[int, list[PanelQuery]] = {}
    for query in panel_queries(board):
        by_panel.setdefault(query.panel_id, []).append(query)
    results = []
    for panel in panels(board):
        data = PanelData(panel, by_panel.get(panel["id"], []))
        for query in data.queries:
            expansion = expand(query, start, end, scrape_interval=scrape_interval)
            try:
                if query.instant:
                    result = api.query(expansion.expr, expansion.end)
                else:
                    result = api.query_range(expansion.expr, expansion.start, expansion.end, expansion.step)
            except PrometheusQueryError as exc:
                data.errors.append(str(exc))
                continue
            result = [Series(s.labels, [(t, v) for t, v in s.points if math.isfinite(v)]) for s in result]
            data.series.append((query, [s for s in result if s.points]))
        results.append(data)
    return results


# -- formatting -----------------------------------------------------------------------------------
def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """A value as the panel's unit shows it (Grafana's currencyUSD, percentunit, s, suffix:...)."""
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "currencyUSD":
        digits = decimals if decimals is not None else (2 if abs(value) >= 1 else 4)
        return f"${value:,.{digits}f}"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    suffix = unit[len("suffix:"):] if unit.startswith("suffix:") else ""
    if abs(value) >= 1_000_000:
        text = f"{value / 1_000_000:.2f}M"
    elif abs(value) >= 1000:
        text = f"{value / 1000:.1f}K"
    elif value == int(value):
        text = f"{int(value)}"
    else:
        text = f"{value:.{decimals if decimals is not None else 3}g}"
    return text + suffix


def legend_name(template: str, labels: Mapping[str, str]) -> str:
    if not template or template == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def _steps(panel: Mapping[str, Any]) -> list[tuple[float | None, str]]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [(s.get("value"), COLOURS.get(s.get("color", ""), s.get("color", "#888"))) for s in steps]


def _colour_for(value: float, panel: Mapping[str, Any]) -> str:
    colour = "#5794f2"
    for limit, step_colour in _steps(panel):
        if limit is None or value >= limit:
            colour = step_colour
    return colour


# -- SVG ------------------------------------------------------------------------------------------
def _line_chart(data: PanelData, width: int, height: int) -> str:
    panel = data.panel
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    lines = [(legend_name(q.legend, s.labels), s.points) for q, result in data.series for s in result]
    times = [t for _, pts in lines for t, _ in pts]
    values = [v for _, pts in lines for _, v in pts]
    show_steps = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get(
        "thresholdsStyle", {}).get("mode", "off") != "off"
    limits = [v for v, _ in _steps(panel) if v is not None] if show_steps else []
    fixed_max = panel.get("fieldConfig", {}).get("defaults", {}).get("max")
    top = max([*values, *limits])
    if top <= 0:
        top = 1.0  # all zero: an axis from 0 to 1 rather than to a rounding error
    elif fixed_max is not None and max(values) <= fixed_max:
        top = min(top, fixed_max)
    top *= 1.08
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1.0)
    left, bottom, legend_h = 88, 22, 16 * min(len(lines), 6) + 4
    plot_w, plot_h = width - left - 10, height - bottom - legend_h - 8

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return 6 + plot_h - (v / top) * plot_h

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        value = top * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     'stroke="#2c3235" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" class="axis">'
                     f'{html.escape(format_value(value, unit))}</text>')
    for limit, colour in (_steps(panel) if show_steps else []):
        if limit is not None and limit <= top:
            parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                         f'stroke="{colour}" stroke-dasharray="6 4" stroke-width="1.5"/>')
    for i, stamp in enumerate((t0, t0 + span / 2, t1)):
        anchor = ("start", "middle", "end")[i]
        label = datetime.fromtimestamp(stamp, timezone.utc).strftime("%H:%M:%S")
        parts.append(f'<text x="{x(stamp):.1f}" y="{6 + plot_h + 16:.1f}" text-anchor="{anchor}" class="axis">'
                     f"{label}</text>")
    for i, (name, points) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        if i < 6:
            ly = height - legend_h + 14 * i + 10
            last = format_value(points[-1][1], unit)
            parts.append(f'<rect x="{left}" y="{ly - 8}" width="12" height="4" fill="{colour}"/>'
                         f'<text x="{left + 18}" y="{ly - 3}" class="legend">{html.escape(name)} '
                         f"(last {html.escape(last)})</text>")
    if len(lines) > 6:
        parts.append(f'<text x="{width - 12}" y="{height - 6}" text-anchor="end" class="legend">'
                     f"+{len(lines) - 6} more series</text>")
    parts.append("</svg>")
    return "".join(parts)


def _bars(data: PanelData, width: int) -> str:
    panel = data.panel
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "")
    rows = sorted(((legend_name(q.legend, s.labels), s.points[-1][1]) for q, result in data.series for s in result),
                  key=lambda item: -item[1])[:12]
    top = defaults.get("max") or max([v for _, v in rows] + [1e-12])
    out = []
    for name, value in rows:
        share = max(0.0, min(value / top, 1.0)) if top else 0
        colour = _colour_for(value, panel)
        out.append(f'<div class="bar"><span class="name">{html.escape(name)}</span>'
                   f'<span class="track"><span class="fill" style="width:{share * 100:.1f}%;background:{colour}">'
                   f'</span></span><span class="val" style="color:{colour}">{html.escape(format_value(value, unit))}'
                   "</span></div>")
    return "".join(out)


def _stat(data: PanelData) -> str:
    panel = data.panel
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    value = next(s.points[-1][1] for _, result in data.series for s in result)
    colour = _colour_for(value, panel)
    text = format_value(value, defaults.get("unit", ""), defaults.get("decimals"))
    return f'<div class="stat" style="color:{colour}">{html.escape(text)}</div>'


def _timeline(data: PanelData, width: int) -> str:
    mapping: dict[str, tuple[str, str]] = {}
    for item in data.panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        for key, result in item.get("options", {}).items():
            mapping[key] = (result.get("text", key), COLOURS.get(result.get("color", ""), "#888"))
    rows = [(legend_name(q.legend, s.labels), s.points) for q, result in data.series for s in result]
    times = [t for _, pts in rows for t, _ in pts]
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1.0)
    label_w, bar_w = 220, width - 240
    out = [f'<svg width="{width}" height="{26 * len(rows) + 24}" xmlns="http://www.w3.org/2000/svg">']
    for i, (name, points) in enumerate(rows):
        y = 4 + 26 * i
        out.append(f'<text x="0" y="{y + 15}" class="legend">{html.escape(name)}</text>')
        step = span / max(len(points) - 1, 1)
        for t, v in points:
            text, colour = mapping.get(str(int(v)), (str(v), "#888"))
            x = label_w + (t - t0) / span * bar_w
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(step / span * bar_w, 1) + 0.6:.1f}" height="20" '
                       f'fill="{colour}"><title>{html.escape(text)}</title></rect>')
    out.append(f'<text x="{label_w}" y="{26 * len(rows) + 18}" class="axis">'
               + "  ".join(f"■ {t}" for t, _ in mapping.values()) + "</text></svg>")
    return "".join(out)


def panel_html(data: PanelData) -> str:
    panel = data.panel
    grid = panel["gridPos"]
    width = int(PAGE_WIDTH / COLUMN_COUNT * grid["w"]) - 16
    height = grid["h"] * ROW_PX - 46
    if data.errors:
        body = '<div class="error">' + "<br>".join(html.escape(e) for e in data.errors) + "</div>"
    elif data.empty:
        no_value = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue") or "No data"
        body = f'<div class="nodata">{html.escape(no_value)}</div>'
    elif panel["type"] == "stat":
        body = _stat(data)
    elif panel["type"] == "bargauge":
        body = _bars(data, width)
    elif panel["type"] == "state-timeline":
        body = _timeline(data, width)
    else:
        body = _line_chart(data, width, height)
    style = (f"grid-column:{grid['x'] + 1} / span {grid['w']};grid-row:{grid['y'] + 1} / span {grid['h']}")
    return (f'<section class="panel" style="{style}" title="{html.escape(panel.get("description", ""))}">'
            f'<h3>{html.escape(panel["title"])}</h3>{body}</section>')


def page(board: Mapping[str, Any], results: Sequence[PanelData], start: datetime, end: datetime) -> str:
    sections = [panel_html(d) for d in results]
    for row in board.get("panels", []):
        if row.get("type") == "row":
            g = row["gridPos"]
            sections.append(f'<h2 style="grid-column:1 / span 24;grid-row:{g["y"] + 1} / span 1">'
                            f'{html.escape(row["title"])}</h2>')
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(board['title'])}</title><style>
body{{background:#111217;color:#ccccdc;font:13px/1.3 sans-serif;margin:0;padding:12px;width:{PAGE_WIDTH}px}}
h1{{font-size:20px;margin:0 0 4px}} .sub{{color:#8e8e8e;margin-bottom:10px}}
.grid{{display:grid;grid-template-columns:repeat({COLUMN_COUNT},1fr);grid-auto-rows:{ROW_PX}px;gap:0 0}}
h2{{font-size:15px;margin:8px 0 0;align-self:end;border-bottom:1px solid #2c3235}}
.panel{{background:#181b1f;border:1px solid #2c3235;border-radius:3px;margin:4px;padding:6px 8px;overflow:hidden}}
h3{{font-size:13px;margin:0 0 6px;font-weight:500}} .axis{{fill:#8e8e8e;font-size:10px}}
.legend{{fill:#ccccdc;font-size:11px}} .stat{{font-size:34px;font-weight:600;text-align:center;margin-top:4px}}
.nodata{{color:#8e8e8e;text-align:center;margin-top:20px}} .error{{color:#f2495c;font-size:11px}}
.bar{{display:flex;align-items:center;gap:6px;margin:3px 0;font-size:11px}}
.name{{width:38%;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}}
.track{{flex:1;background:#22252b;height:14px}} .fill{{display:block;height:14px}}
.val{{width:80px;text-align:right;font-weight:600}}
</style></head><body><h1>{html.escape(board['title'])}</h1>
<div class="sub">{html.escape(board.get('description', ''))} — every variable at All; {start:%Y-%m-%d %H:%M:%S}
to {end:%H:%M:%S} UTC</div>
<div class="grid" style="grid-template-rows:repeat({rows},{ROW_PX}px)">{''.join(sections)}</div></body></html>"""


def page_height(board: Mapping[str, Any]) -> int:
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    return rows * ROW_PX + 90


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no Chromium found to take the screenshot: apt-get install -y chromium")


def screenshot(html_path: Path, png_path: Path, height: int) -> None:
    """A PNG of a local page from headless Chromium (no network: the page needs none)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
                   f"--window-size={PAGE_WIDTH + 24},{height}", html_path.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png_path.is_file():
        raise RuntimeError(f"chromium could not screenshot {html_path} (exit {result.returncode}):\n{result.stderr[-2000:]}")


def render_all(prometheus: str, out: Path, start: datetime, end: datetime, *, scrape_interval: float = 15.0,
               take_screenshots: bool = True, directory: Path = JSON_DIR) -> dict[str, tuple[Path, Path | None]]:
    """HTML (and PNG) of every dashboard; returns {file name: (html, png)}."""
    api = PrometheusAPI(prometheus)
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple[Path, Path | None]] = {}
    for name, board in dashboards(directory).items():
        results = evaluate(api, board, start, end, scrape_interval)
        html_path = out / name.replace(".json", ".html")
        html_path.write_text(page(board, results, start, end), encoding="utf-8")
        png_path = None
        if take_screenshots:
            png_path = out / name.replace(".json", ".png")
            screenshot(html_path, png_path, page_height(board))
        made[name] = (html_path, png_path)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, default=Path("shots"), help="where the HTML and PNG go (default shots/)")
    parser.add_argument("--minutes", type=float, default=30, help="time range ending now (default 30)")
    parser.add_argument("--scrape-interval", type=float, default=15,
                        help="the Prometheus scrape interval in seconds, as Grafana's datasource is told (default 15)")
    parser.add_argument("--no-screenshot", action="store_true", help="write the HTML only")
    args = parser.parse_args(argv)
    end = datetime.now(timezone.utc)
    start = end - timedelta(minutes=args.minutes)
    try:
        made = render_all(args.prometheus, args.out, start, end, scrape_interval=args.scrape_interval,
                          take_screenshots=not args.no_screenshot)
    except (PrometheusQueryError, FileNotFoundError, RuntimeError) as exc:
        print(f"dashboards.render: {exc}", file=sys.stderr)
        return 1
    for html_path, png_path in made.values():
        print(f"wrote {html_path}" + (f" and {png_path}" if png_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
