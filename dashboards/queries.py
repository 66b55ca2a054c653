"""The queries a dashboard's panels send, with the variables replaced the way Grafana replaces them.

The live test and the screenshot renderer evaluate the committed JSON itself, not the Python that made
it, so what they check is what Grafana loads. Replacement follows Grafana's Prometheus datasource:
a multi-value variable set to All becomes its `allValue` (`.*`), chosen values become `(a|b)` with regex
characters escaped; `$__interval` is the range over the panel's data points rounded to Grafana's steps
and never below the datasource's scrape interval; `$__rate_interval` is
max(`$__interval` + scrape interval, 4 × scrape interval); `$__range` is the panel's range in seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

JSON_DIR = Path(__file__).resolve().parent / "json"
ALL = ".*"

# Grafana's interval rounding (kbn.roundInterval): upper bound of the raw interval -> interval used, seconds.
_ROUNDING = (
    (0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5), (1.5, 1), (3.5, 2),
    (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300), (750, 600),
    (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600), (9000, 7200), (16200, 10800), (32400, 21600),
    (86400, 43200), (604800, 86400), (1814400, 604800), (3628800, 2592000),
)


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel (or one annotation, `panel_type` "annotation")."""

    dashboard: str
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    legend: str
    instant: bool
    time_from: str | None
    unit: str


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def dashboards(directory: Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    """Every committed dashboard by file name."""
    return {path.name: load(path) for path in sorted(directory.glob("*.json"))}


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels that show data (rows left out; a collapsed row's panels included)."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    found = []
    for panel in panels(board):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets", []):
            found.append(PanelQuery(board["uid"], panel["id"], panel["title"], panel["type"], target.get("refId", ""),
                                    target["expr"], target.get("legendFormat", ""), bool(target.get("instant")),
                                    panel.get("timeFrom"), unit))
    return found


def annotation_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    return [PanelQuery(board["uid"], 0, item["name"], "annotation", "", item["expr"], item.get("titleFormat", ""),
                       False, None, "")
            for item in board.get("annotations", {}).get("list", []) if item.get("expr")]


def variable_queries(board: Mapping[str, Any]) -> dict[str, str]:
    """Query variables' `label_values(...)` queries by variable name."""
    return {var["name"]: var["query"] for var in board.get("templating", {}).get("list", [])
            if var.get("type") == "query"}


def round_interval(seconds: float) -> float:
    for bound, value in _ROUNDING:
        if seconds < bound:
            return value
    return 31536000.0


def format_seconds(seconds: float) -> str:
    """A PromQL duration: whole seconds when possible, else milliseconds."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


def panel_range(time_from: str | None, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The range a panel queries: the dashboard's, unless the panel sets its own (`now/d`: today so far,
    `now/M`: this month so far, `now-6h` and the like), computed in the range's time zone."""
    if not time_from:
        return start, end
    if time_from == "now/d":
        return end.replace(hour=0, minute=0, second=0, microsecond=0), end
    if time_from == "now/M":
        return end.replace(day=1, hour=0, minute=0, second=0, microsecond=0), end
    match = re.fullmatch(r"(?:now-)?(\d+)([smhdw])", time_from)
    if match:
        from datetime import timedelta

        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return end - timedelta(seconds=int(match.group(1)) * unit), end
    raise ValueError(f"panel relative time {time_from!r} is not one this checker understands; add it here")


@dataclass(frozen=True)
class Expansion:
    expr: str
    start: datetime
    end: datetime
    step: float
    """Seconds between points of a range query ($__interval)."""


def _value(values: Sequence[str] | None) -> str:
    if values is None:
        return ALL
    # Inside a PromQL string a regex escape needs two backslashes (Grafana's prometheusRegularEscape).
    escaped = [re.sub(r"([.^$|?*+()\[\]{}'])", r"\\\\\1", v.replace("\\", "\\\\\\\\")) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(
    query: PanelQuery | str,
    start: datetime,
    end: datetime,
    *,
    scrape_interval: float = 15.0,
    max_data_points: int = 1000,
    values: Mapping[str, Sequence[str] | None] | None = None,
    datasource_uid: str = "llmcost-prometheus",
) -> Expansion:
    """The query as Grafana sends it. `values`: chosen variable values, None (or absent) for All."""
    expr = query.expr if isinstance(query, PanelQuery) else query
    time_from = query.time_from if isinstance(query, PanelQuery) else None
    start, end = panel_range(time_from, start, end)
    range_s = max((end - start).total_seconds(), 1.0)
    interval = max(round_interval(range_s / max_data_points), scrape_interval)
    rate_interval = max(interval + scrape_interval, 4 * scrape_interval)
    builtins = {
        "__rate_interval": format_seconds(rate_interval),
        "__interval_ms": str(int(interval * 1000)),
        "__interval": format_seconds(interval),
        "__range_s": str(round(range_s)),
        "__range_ms": str(round(range_s * 1000)),
        "__range": f"{round(range_s)}s",
        "datasource": datasource_uid,
    }
    chosen = dict(values or {})

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in builtins:
            return builtins[name]
        return _value(chosen.get(name))

    expanded = re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)
    return Expansion(expanded, start, end, interval)


_NAME_REGEX = re.compile(r'__name__=~"([^"]+)"')
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "and", "or", "unless",
             "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a query reads: every identifier in metric position (not a function, a label, a
    keyword or a duration), and the names of a `__name__=~"a|b"` matcher."""
    names: set[str] = set()
    for alternatives in _NAME_REGEX.findall(expr):
        names.update(alternatives.split("|"))
    variable = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.S)
    text = variable.group(1) if variable else expr  # a variable's label is not a metric
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = _LABEL_LISTS.sub(" ", text)  # grouping labels
    text = re.sub(r"\boffset\s+\S+", " ", text)
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
