"""What the three dashboards share: the variables, the budget-alert annotations and the assembly (ids,
grid, time range), so that each dashboard module only says which panels it shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as dm

from . import metrics as m
from .panels import DATASOURCE, DATASOURCE_UID

TAGS = ["otel-llmcost", "llm", "cost"]

_VARIABLE_LABELS = {
    "service": "Service",
    "environment": "Environment",
    "provider": "Provider",
    "model": "Model",
    "tier": "Tier",
    "feature": "Feature",
}
# Each variable lists the values left by the ones before it (a chain), so choosing a service narrows
# the environments, providers and models offered.
_CHAIN = ("service", "environment", "provider", "model", "tier", "feature")


def variable_query(name: str) -> str:
    """`label_values(...)` of variable `name` over our cost counter and the GenAI duration histogram."""
    before = _CHAIN[: _CHAIN.index(name)]
    source = m.VARIABLE_SOURCE[:-1] + "".join(f', {m.VARIABLES[v]}=~"${v}"' for v in before) + "}"
    return f"label_values({source}, {m.VARIABLES[name]})"


def variables() -> list[cogbuilder.Builder[dm.VariableModel]]:
    """The datasource variable, then one multi-value variable per filter, "All" (= `.*`) by default."""
    result: list[cogbuilder.Builder[dm.VariableModel]] = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
        .description("The Prometheus that scrapes the OpenTelemetry Collector (and the otel-llmcost processor).")
    ]
    for name in _CHAIN:
        result.append(
            dash.QueryVariable(name).label(_VARIABLE_LABELS[name]).datasource(DATASOURCE)
            .query(variable_query(name)).multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
            .description(f"Filters on the `{m.VARIABLES[name]}` label; All also keeps series without it.")
        )
    return result


class PrometheusAnnotation(dm.AnnotationQuery):
    """A Prometheus annotation query with the fields Grafana's Prometheus datasource reads
    (`titleFormat`, `textFormat`, `tagKeys`) that the SDK's generic model lacks."""

    def __init__(self, name: str, expr: str, color: str, title: str, text: str, tag_keys: str) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, hide=False, icon_color=color, expr=expr)
        self.title_format = title
        self.text_format = text
        self.tag_keys = tag_keys

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        # No `step`: Grafana then uses the dashboard's interval, so a short alert still shows when zoomed in.
        payload.update(titleFormat=self.title_format, textFormat=self.text_format, tagKeys=self.tag_keys,
                       useValueForTime=False)
        return payload


class _Built(cogbuilder.Builder[dm.AnnotationQuery]):
    def __init__(self, value: dm.AnnotationQuery) -> None:
        self.value = value

    def build(self) -> dm.AnnotationQuery:
        return self.value


def alert_annotations() -> list[cogbuilder.Builder[dm.AnnotationQuery]]:
    """Grafana's own annotations, then budget alerts: Prometheus alerts that fired (the otel-llmcost
    rules in collector/rules/), and the budget levels themselves (warn and above), which show even when
    Prometheus has no alert rules loaded."""
    builtin = dm.AnnotationQuery(name="Annotations & Alerts", datasource=dm.DataSourceRef(type_val="grafana",
                                 uid="-- Grafana --"), enable=True, hide=True, icon_color="rgba(0, 211, 255, 1)",
                                 type_val="dashboard", built_in=1)
    return [
        _Built(builtin),
        _Built(PrometheusAnnotation(
            "Alerts fired", 'ALERTS{alertstate="firing", alertname=~"LLM.*"}', "red",
            "{{alertname}}", "{{budget}} {{scope}} {{service_name}} {{gen_ai_request_model}} {{source}}",
            "alertname,severity")),
        _Built(PrometheusAnnotation(
            "Budget levels", f"max by ({m.BUDGET_NAME}, {m.BUDGET_SCOPE}, {m.BUDGET_LEVEL_LABEL}) "
            f"({m.BUDGET_LEVEL} >= 1)", "orange",
            f"Budget {{{{{m.BUDGET_NAME}}}}} at {{{{{m.BUDGET_LEVEL_LABEL}}}}}", f"scope {{{{{m.BUDGET_SCOPE}}}}}",
            f"{m.BUDGET_LEVEL_LABEL}")),
    ]


Section = tuple[str, Sequence[Any]]


def assemble(uid: str, title: str, description: str, sections: Sequence[Section]) -> dm.Dashboard:
    """A dashboard of rows (one per section) with panels laid out left to right, ids in order."""
    board = (
        dash.Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
        .time("now-6h", "now").refresh("30s").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .variables(variables()).annotations(alert_annotations())
        .link(dash.DashboardLink("otel-llmcost dashboards").type(dm.DashboardLinkType.DASHBOARDS)
              .tags(["otel-llmcost"]).as_dropdown(True).include_vars(True).keep_time(True))
    )
    next_id = 1
    for heading, panels in sections:
        board = board.with_row(dash.Row(heading).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(next_id))
            next_id += 1
    return board.build()
