"""The committed dashboards against real data: the guarded demo workload → our Collector → a real Prometheus
(see `stack.py`). Every panel's queries, with the variables at All and expanded as Grafana expands them,
return data; every metric name a panel, an annotation or a variable uses exists; and the screenshots of
the rendered panels are real pictures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from dashboards import metrics as m
from dashboards.prometheus_api import PrometheusAPI
from dashboards.queries import (
    annotation_queries,
    dashboards,
    expand,
    metric_names,
    panel_queries,
    variable_queries,
)
from dashboards.render import evaluate, render_all

from .stack import ENVIRONMENT, SCRAPE_INTERVAL, SERVICE, Stack, demo_stack

BOARDS = dashboards()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with demo_stack(tmp_path_factory.mktemp("dashboards-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> PrometheusAPI:
    return PrometheusAPI(stack.prometheus_url)


def window(stack: Stack) -> tuple[datetime, datetime]:
    """The dashboard range: from just before the traffic to now (what a user opening it now would pick)."""
    return datetime.fromtimestamp(stack.started - 10, timezone.utc), datetime.now(timezone.utc)


def test_every_metric_name_exists_in_prometheus(api: PrometheusAPI) -> None:
    """Each metric a panel, an annotation or a variable reads is one Prometheus has (no silent drift)."""
    known = api.metric_names()
    used: dict[str, set[str]] = {}
    for name, board in BOARDS.items():
        texts = [q.expr for q in panel_queries(board) + annotation_queries(board)]
        texts += list(variable_queries(board).values())
        for text in texts:
            for metric in metric_names(text):
                used.setdefault(metric, set()).add(name)
    missing = {metric: sorted(where) for metric, where in used.items() if metric not in known}
    assert not missing, f"metrics the dashboards use but Prometheus does not have: {missing}"
    everything_we_record = {m.COST, m.COST_SAVED, m.PRICE_UNKNOWN, m.CACHE_LOOKUPS, m.CACHE_REFUSALS,
                            m.PROMPT_CACHE_SAVED, m.CACHE_READ_TOKENS, m.CACHE_WRITE_TOKENS, m.REASONING_TOKENS,
                            m.RATELIMIT_REJECTIONS, m.ROUTE_DECISIONS, f"{m.TOKEN_USAGE}_sum", f"{m.DURATION}_bucket",
                            f"{m.TIME_TO_FIRST_CHUNK}_bucket", m.BUDGET_UTILIZATION, m.BUDGET_LEVEL, m.BUDGET_LIMIT,
                            m.BACKLOG_SPEND, m.BACKLOG_WRITES, m.BACKLOG_LOST, m.BACKLOG_DROPPED, m.LEDGER_ERRORS,
                            m.JOURNAL_ERRORS}
    assert everything_we_record <= set(used), everything_we_record - set(used)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_query_returns_data(name: str, stack: Stack, api: PrometheusAPI) -> None:
    """With every variable at All, each query of each panel returns at least one series with a finite value."""
    start, end = window(stack)
    empty = []
    results = evaluate(api, BOARDS[name], start, end, SCRAPE_INTERVAL)
    for data in results:
        assert not data.errors, f"{data.panel['title']}: {data.errors}"
        for query, series in data.series:
            if not any(math.isfinite(v) for s in series for _, v in s.points):
                empty.append(f"{query.panel_title} [{query.ref_id}]: {query.expr}")
    assert len(results) == len({q.panel_id for q in panel_queries(BOARDS[name])})
    assert not empty, "queries that return no data:\n" + "\n".join(empty)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_annotations_return_data(name: str, stack: Stack, api: PrometheusAPI) -> None:
    """Budget alerts fired (the otel-llmcost rules) and budget levels above ok both mark the time range."""
    start, end = window(stack)
    for query in annotation_queries(BOARDS[name]):
        expansion = expand(query, start, end, scrape_interval=SCRAPE_INTERVAL)
        series = api.query_range(expansion.expr, expansion.start, expansion.end, expansion.step)
        assert any(v >= 1 for s in series for _, v in s.points), query.panel_title


def test_variables_list_the_workload(stack: Stack, api: PrometheusAPI) -> None:
    """Each variable's label_values query lists what the demo sent: its service, environment, the three
    providers, its models, tiers and features."""
    queries = variable_queries(BOARDS["llmcost-overview.json"])
    listed = {}
    for var, text in queries.items():
        inner = text[len("label_values("):-1]
        match, label = inner.rsplit(", ", 1)
        listed[var] = set(api.label_values(label, expand(match, *window(stack)).expr))
    assert listed["service"] == {SERVICE}
    assert listed["environment"] == {ENVIRONMENT}
    assert listed["provider"] >= {"openai", "anthropic", "gcp.gemini"}
    assert {"gpt-5.4", "gpt-5.4-mini", "claude-haiku-4-5", "acme-llm-7b"} <= listed["model"]
    assert listed["tier"] >= {"free", "pro", "enterprise"}
    assert listed["feature"] >= {"support-chat", "summaries", "search", "analysis"}


def test_a_chosen_value_narrows_the_panels(stack: Stack, api: PrometheusAPI) -> None:
    """Choosing one tier keeps only that tier's spend (the filter reaches the query)."""
    (by_tier,) = [q for q in panel_queries(BOARDS["llmcost-overview.json"]) if q.panel_title == "Cost by tier"]
    start, end = window(stack)
    everything = api.query(expand(by_tier, start, end).expr, end)
    free_only = api.query(expand(by_tier, start, end, values={"tier": ["free"]}).expr, end)
    assert {s.labels["llmcost_user_tier"] for s in everything} >= {"free", "pro", "enterprise"}
    assert [s.labels["llmcost_user_tier"] for s in free_only] == ["free"]


def test_screenshots_show_the_panels(stack: Stack, tmp_path: Path) -> None:
    """`python -m dashboards.render`'s work: one HTML page and one PNG per dashboard; each PNG is a real
    picture (large, many colours: charts, not a blank or an error page) and no panel shows "No data"."""
    start, end = window(stack)
    made = render_all(stack.prometheus_url, tmp_path, start, end, scrape_interval=SCRAPE_INTERVAL)
    assert sorted(made) == sorted(BOARDS)
    for name, (html_path, png_path) in made.items():
        page = html_path.read_text(encoding="utf-8")
        assert 'class="nodata"' not in page and 'class="error"' not in page, name
        assert png_path is not None
        with Image.open(png_path) as image:
            assert image.width >= 1400 and image.height >= 1200, (name, image.size)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 500, (name, len(colours))
        background = max(colours)[0] / (image.width * image.height)
        assert background < 0.9, (name, background)  # not a blank page
