"""Panel builders that make the issue's rules hard to forget: every panel gets a description, a unit,
thresholds and a legend, reads from the `$datasource` variable, and every query has a refId and legend.

They return `grafana-foundation-sdk` builders; `layout.py` places them on the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_UID = "llmcost-prometheus"
"""The uid of the provisioned Prometheus (dashboards/provisioning/datasources/prometheus.yaml)."""
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Units (Grafana's unit ids; custom ones as "suffix:")
USD = "currencyUSD"
USD_PER_HOUR = "suffix: USD/h"
PERCENT = "percentunit"  # 0..1 shown as %
SECONDS = "s"
TOKENS = "suffix: tokens"
TOKENS_PER_MIN = "suffix: tokens/min"
CALLS = "suffix: calls"
CALLS_PER_MIN = "suffix: calls/min"
LEVEL = "none"

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"
BUDGET_STEPS = ((None, GREEN), (0.70, YELLOW), (0.85, ORANGE), (0.95, RED))
"""The lesson's budget levels: warn 70%, throttle 85%, stop 95%."""
LEVEL_NAMES = {0: ("ok", GREEN), 1: ("warn", YELLOW), 2: ("throttle", ORANGE), 3: ("stop", RED)}


@dataclass(frozen=True)
class Query:
    """One PromQL target: `instant` for stats and bar gauges that show one value per series."""

    expr: str
    legend: str
    instant: bool = False


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=value, color=color) for value, color in steps])


def _targets(queries: Sequence[Query]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    built: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for i, query in enumerate(queries):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + i))
        target = target.instant() if query.instant else target.range()
        built.append(target.datasource(DATASOURCE))
    return built


def _legend(table: bool = False) -> common.VizLegendOptions:
    legend = common.VizLegendOptions().show_legend(True).placement(cm.LegendPlacement.BOTTOM)
    if table:
        return legend.display_mode(cm.LegendDisplayMode.TABLE).calcs(["mean", "max", "lastNotNull"])
    return legend.display_mode(cm.LegendDisplayMode.LIST)


def time_series(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    steps: Sequence[tuple[float | None, str]] = ((None, GREEN),),
    *,
    show_thresholds: bool = False,
    stacked: bool = False,
    bars: bool = False,
    table_legend: bool = False,
    max_value: float | None = None,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A time series; `show_thresholds` draws the threshold steps as dashed lines (budget levels)."""
    panel = (
        timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
        .thresholds(thresholds(*steps)).legend(_legend(table_legend))
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
        .line_width(2).fill_opacity(25 if stacked else 10).span(width).height(height).min(0)
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(
            cm.GraphThresholdsStyleMode.DASHED if show_thresholds else cm.GraphThresholdsStyleMode.OFF))
    )
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS)
    if max_value is not None:
        panel = panel.max(max_value)
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def single_stat(
    title: str,
    description: str,
    unit: str,
    query: Query,
    steps: Sequence[tuple[float | None, str]] = ((None, BLUE),),
    *,
    time_from: str | None = None,
    decimals: int | None = None,
    no_value: str | None = None,
    width: int = 6,
    height: int = 4,
) -> stat.Panel:
    """One number (the last value of an instant query); `time_from` sets the panel's own range
    (`now/d`: today so far, `now/M`: this month so far)."""
    panel = (
        stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
        .thresholds(thresholds(*steps)).span(width).height(height)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
    )
    if time_from:
        panel = panel.time_from(time_from)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if no_value:
        panel = panel.no_value(no_value)
    for target in _targets([query]):
        panel = panel.with_target(target)
    return panel


def bars(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    steps: Sequence[tuple[float | None, str]] = ((None, BLUE),),
    *,
    max_value: float | None = None,
    no_value: str | None = None,
    width: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    """Horizontal bars, one per series (instant queries over the dashboard's range): rankings."""
    panel = (
        bargauge.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
        .thresholds(thresholds(*steps)).span(width).height(height).min(0)
        .orientation(cm.VizOrientation.HORIZONTAL).display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .legend(_legend()).show_unfilled(True)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    if no_value:
        panel = panel.no_value(no_value)
    for target in _targets(queries):
        panel = panel.with_target(target)
    return panel


def levels_timeline(title: str, description: str, query: Query, *, width: int = 24,
                    height: int = 7) -> statetimeline.Panel:
    """Budget levels over time as coloured bands: 0 ok, 1 warn, 2 throttle, 3 stop."""
    mappings: list[dm.ValueMapping] = [dm.ValueMap(options={str(value): dm.ValueMappingResult(text=text, color=color, index=value)})
                for value, (text, color) in LEVEL_NAMES.items()]
    panel = (
        statetimeline.Panel().title(title).description(description).unit(LEVEL).datasource(DATASOURCE)
        .thresholds(thresholds((None, GREEN), (1, YELLOW), (2, ORANGE), (3, RED)))
        .mappings(mappings).legend(_legend()).span(width).height(height)
        .show_value(cm.VisibilityMode.AUTO).merge_values(True)
    )
    for target in _targets([query]):
        panel = panel.with_target(target)
    return panel


def row(title: str) -> dash.Row:
    return dash.Row(title)
