"""The committed dashboards: generated from the code, complete on every panel, filtered by variables only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from dashboards import generate, metrics
from dashboards.panels import DATASOURCE_UID
from dashboards.queries import annotation_queries, dashboards, expand, metric_names, panel_queries, panels

REPO = Path(__file__).resolve().parents[2]
BOARDS = dashboards()
VARIABLES = ["datasource", "service", "environment", "provider", "model", "tier", "feature"]


def test_committed_json_is_what_the_code_generates() -> None:
    """dashboards/json/ matches `python -m dashboards.generate`; run it and commit when this fails."""
    assert generate.stale() == {}
    assert sorted(BOARDS) == sorted(generate.DASHBOARDS)


def test_check_mode_reports_a_hand_edited_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check exits 1 and names the file when the JSON was edited by hand, 0 once regenerated."""
    generate.write(tmp_path)
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "llmcost-overview.json"
    path.write_text(path.read_text().replace("Spend today", "Spend today!"))
    (tmp_path / "old.json").write_text("{}")
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "llmcost-overview.json" in err and "Spend today!" in err and "old.json" in err


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_has_description_unit_thresholds_legend(name: str) -> None:
    """Each panel says what it shows, in which unit, with thresholds, a legend, and reads `$datasource`."""
    for panel in panels(BOARDS[name]):
        where = f"{name} panel {panel['title']!r}"
        defaults = panel["fieldConfig"]["defaults"]
        assert len(panel.get("description", "")) > 30, where
        assert defaults.get("unit"), where
        assert defaults["thresholds"]["steps"][0]["value"] is None, where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        if panel["type"] in ("timeseries", "bargauge", "state-timeline"):
            assert panel["options"]["legend"]["showLegend"] is True, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["refId"] and target["legendFormat"], where
            assert target["datasource"]["uid"] == "${datasource}", where


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables_and_no_sdk_specific_filter(name: str) -> None:
    """The seven variables exist (multi, All = `.*`); no query filters on one SDK's resource attributes."""
    board = BOARDS[name]
    found = {v["name"]: v for v in board["templating"]["list"]}
    assert list(found) == VARIABLES
    assert found["datasource"]["query"] == "prometheus"
    assert found["datasource"]["current"]["value"] == DATASOURCE_UID
    for var in VARIABLES[1:]:
        assert found[var]["multi"] and found[var]["includeAll"] and found[var]["allValue"] == ".*", var
        assert f"label_values({{__name__=~\"{metrics.COST}|{metrics.DURATION}_count\"" in found[var]["query"]
    texts = [q.expr for q in panel_queries(board) + annotation_queries(board)] + [v["query"] for v in found.values()]
    for text in texts:
        for forbidden in ("telemetry_sdk", "otel_scope", "job=", "instance="):
            assert forbidden not in text, text


def test_call_metrics_are_filtered_by_every_variable() -> None:
    """A query on a per-call metric filters on all six variables (so a selection never leaves one out)."""
    checked = 0
    for board in BOARDS.values():
        for query in panel_queries(board):
            if metrics.COST + "{" in query.expr:
                for var, label in metrics.VARIABLES.items():
                    assert f'{label}=~"${var}"' in query.expr, (query.panel_title, var)
                checked += 1
    assert checked >= 10


def test_metric_names_follow_the_collector_naming() -> None:
    """Derived names are the ones Prometheus shows through the Collector (suffixes on)."""
    assert metrics.COST == "llmcost_cost_USD_total"
    assert metrics.COST_SAVED == "llmcost_cost_saved_USD_total"
    assert metrics.PRICE_UNKNOWN == "llmcost_price_unknown_total"
    assert metrics.CACHE_LOOKUPS == "llmcost_cache_lookups_total"
    assert metrics.RATELIMIT_REJECTIONS == "llmcost_ratelimit_rejections_total"
    assert metrics.CACHE_READ_TOKENS == "llmcost_usage_cache_read_input_tokens_total"
    assert metrics.TOKEN_USAGE == "gen_ai_client_token_usage"
    assert metrics.DURATION == "gen_ai_client_operation_duration_seconds"
    assert metrics.TIME_TO_FIRST_CHUNK == "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert metrics.BUDGET_UTILIZATION == "llmcost_budget_utilization_ratio"
    assert metrics.BUDGET_SPEND == "llmcost_budget_spend_USD"
    assert metrics.BUDGET_LEVEL == "llmcost_budget_level"
    assert metrics.prometheus_name("x.duration", "s", "gauge") == "x_duration_seconds"
    assert metrics.prometheus_name("x.total", "{call}", "counter") == "x_total"


def test_expansion_as_grafana_does_it() -> None:
    """All becomes `.*`; chosen values a regex group; intervals and range from the time range."""
    end = datetime(2026, 11, 27, 15, 30, tzinfo=timezone.utc)
    expr = 'sum(rate(m{a=~"$service", b=~"${tier}"}[$__rate_interval])) + increase(m[$__range])'
    six_hours = expand(expr, end - timedelta(hours=6), end)
    assert six_hours.expr == 'sum(rate(m{a=~".*", b=~".*"}[60s])) + increase(m[21600s])'
    assert six_hours.step == 20
    two_days = expand(expr, end - timedelta(days=2), end, values={"service": ["api.v1", "web"]})
    assert two_days.expr == 'sum(rate(m{a=~"(api\\\\.v1|web)", b=~".*"}[135s])) + increase(m[172800s])'
    short = expand(expr, end - timedelta(minutes=5), end, scrape_interval=1)
    assert "[4s]" in short.expr and short.step == 1


def test_panel_relative_times() -> None:
    """`now/d` and `now/M` panels query today and this month so far."""
    (today,) = [q for q in panel_queries(BOARDS["llmcost-overview.json"]) if q.panel_title == "Spend today"]
    end = datetime(2026, 11, 27, 15, 30, tzinfo=timezone.utc)
    expanded = expand(today, end - timedelta(hours=6), end)
    assert expanded.start == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert "offset 55800s" in expanded.expr and "[55800s]" in expanded.expr


def test_metric_names_parsed_from_queries() -> None:
    assert metric_names('sum by (le) (rate(a_bucket{x="1"}[1m])) / b{}') == {"a_bucket", "b"}
    assert metric_names('label_values({__name__=~"c|d_count"}, x)') == {"c", "d_count"}
    assert metric_names('max by (n, s) (c) or predict_linear(d{s="g"}[1h], scalar(time() % 86400)) offset 5m'
                        ' / on(n) group_left(s) e') == {"c", "d", "e"}


def test_provisioning_points_at_the_json_and_the_fixed_datasource() -> None:
    """The datasource file provisions the uid the dashboards default to; the dashboard provider reads a
    directory (which docker-compose fills from dashboards/json/)."""
    provisioning = REPO / "dashboards" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "llmcost.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    for board in BOARDS.values():
        assert json.dumps(board).count(DATASOURCE_UID) == 1  # only as the variable's default
