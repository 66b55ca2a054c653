"""The demo's traffic through the real Collector (our build, collector/otelcol.yaml) into a real Prometheus.

`otel-llmcost demo --traffic` sends OTLP/HTTP to the Collector; Prometheus scrapes the Collector's
prometheus exporter; the Collector also forwards everything over OTLP/HTTP (gzip protobuf) to where the
processor service sits, here a sink that decodes what arrives. Only endpoints change, by environment.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.testing.processes import CollectorProcess, LLMCostProcessor, PrometheusServer

from .conftest import ENVIRONMENT, SERVICE, OTLPSink, TraceBackend

CALL_LABELS = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
               "llmcost_user_tier", "llmcost_feature", "service_name", "deployment_environment_name"}
# Names as Prometheus shows them (suffixes on); each must have a series with a value above zero.
POSITIVE_COUNTERS = {
    "llmcost_cost_USD_total": CALL_LABELS,
    "llmcost_cost_saved_USD_total": {"gen_ai_request_model", "service_name"},
    "llmcost_price_unknown_total": {"gen_ai_request_model", "service_name"},
    "llmcost_cache_lookups_total": {"llmcost_cache_status", "service_name"},
    "llmcost_ratelimit_rejections_total": {"llmcost_user_tier", "service_name"},
    "llmcost_usage_cache_read_input_tokens_total": CALL_LABELS,
    "llmcost_usage_cache_write_input_tokens_total": CALL_LABELS,
    "llmcost_usage_reasoning_output_tokens_total": CALL_LABELS,
    "gen_ai_client_token_usage_count": CALL_LABELS | {"gen_ai_token_type"},
    "gen_ai_client_token_usage_sum": CALL_LABELS | {"gen_ai_token_type"},
    "gen_ai_client_operation_duration_seconds_count": CALL_LABELS,
    "gen_ai_client_operation_duration_seconds_sum": CALL_LABELS,
    "gen_ai_client_operation_time_to_first_chunk_seconds_count": CALL_LABELS,
    "llmcost_budget_spend_USD": {"llmcost_budget_name", "llmcost_budget_scope", "service_name"},
    "llmcost_budget_limit_USD": {"llmcost_budget_name", "llmcost_budget_scope", "service_name"},
    "llmcost_budget_utilization_ratio": {"llmcost_budget_name", "llmcost_budget_scope", "service_name"},
}
WAIT = 60.0  # seconds to wait for data to show up (a deadline for polling, not an assertion on time)


def prom_query(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(what: str, probe: Any, diagnostics: Any = None) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` (and diagnostics) after WAIT s."""
    deadline = time.monotonic() + WAIT
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            pytest.fail(f"{what} did not show up within {WAIT:g} s{extra}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def traffic(demo_traffic: str) -> str:
    return demo_traffic


def test_config_is_valid_for_the_real_collector(collector: CollectorProcess) -> None:
    """`otelcol-llmcost validate` accepts collector/otelcol.yaml with compose defaults and with test endpoints."""
    collector.validate()
    # No overrides: the ${env:VAR:-default} fallbacks (compose's service names) must resolve on their own.
    collector.validate(env={})


def test_demo_traffic_reaches_prometheus_with_our_names(traffic: str, prometheus: PrometheusServer,
                                                        collector: CollectorProcess) -> None:
    """Every metric the stack relies on is in Prometheus under its expected name, labels and a value > 0."""
    for name, labels in POSITIVE_COUNTERS.items():
        expr = f'{name}{{service_name="{SERVICE}"}} > 0'
        series = wait_for(f"{expr} in Prometheus", lambda expr=expr: prom_query(prometheus, expr),
                          lambda: collector.log_tail(20))
        found = set().union(*(s["metric"].keys() for s in series))
        assert labels <= found, f"{name}: labels {sorted(labels - found)} missing; has {sorted(found)}"
        assert {s["metric"]["deployment_environment_name"] for s in series} == {ENVIRONMENT}


def test_histograms_keep_the_advisory_buckets(traffic: str, prometheus: PrometheusServer) -> None:
    """Token usage and duration arrive as histograms with the GenAI conventions' bucket bounds."""
    tokens = wait_for("token usage buckets", lambda: prom_query(
        prometheus, f'gen_ai_client_token_usage_bucket{{service_name="{SERVICE}",gen_ai_token_type="input"}}'))
    bounds = {float(s["metric"]["le"]) for s in tokens}
    assert {1.0, 4.0, 16.0, 1024.0, 67108864.0, float("inf")} <= bounds
    assert {s["metric"]["gen_ai_token_type"] for s in prom_query(
        prometheus, f'gen_ai_client_token_usage_count{{service_name="{SERVICE}"}}')} >= {"input", "output"}
    durations = prom_query(prometheus, f'gen_ai_client_operation_duration_seconds_bucket{{service_name="{SERVICE}"}}')
    assert {0.01, 0.02, 0.04, 81.92} <= {float(s["metric"]["le"]) for s in durations}


def test_budget_and_cache_series_carry_their_labels(traffic: str, prometheus: PrometheusServer) -> None:
    """Budget gauges name budget, scope and level; cache lookups count misses and hits apart."""
    levels = wait_for("llmcost_budget_level", lambda: prom_query(
        prometheus, f'llmcost_budget_level{{service_name="{SERVICE}"}}'))
    names = {s["metric"]["llmcost_budget_name"] for s in levels}
    assert names == {"demo-monthly", "per-user-hourly", "summaries-daily"}
    for series in levels:
        level = series["metric"]["llmcost_budget_level"]
        assert level in ("ok", "warn", "throttle", "stop")
        assert float(series["value"][1]) == ("ok", "warn", "throttle", "stop").index(level)
    scopes = {s["metric"]["llmcost_budget_scope"] for s in levels}
    assert {"global", "feature=summaries"} <= scopes and any(s.startswith("user=") for s in scopes)
    statuses = {s["metric"]["llmcost_cache_status"] for s in prom_query(
        prometheus, f'llmcost_cache_lookups_total{{service_name="{SERVICE}"}} > 0')}
    assert "miss" in statuses and statuses & {"exact_hit", "semantic_hit"}, statuses


def test_provider_errors_are_labelled_with_error_type(traffic: str, prometheus: PrometheusServer) -> None:
    """Calls that failed at the provider are in the duration histogram with error_type."""
    failed = wait_for("duration series with error_type", lambda: prom_query(
        prometheus, f'gen_ai_client_operation_duration_seconds_count{{service_name="{SERVICE}",error_type!=""}}'))
    assert all(s["metric"]["error_type"] for s in failed)


def test_collector_forwards_otlp_http_to_the_processor(traffic: str, otlp_sink: OTLPSink,
                                                       prometheus: PrometheusServer) -> None:
    """The Collector sends our metrics and spans on to the processor endpoint, gzip-compressed protobuf."""
    wanted = {"llmcost.cost", "llmcost.cost.saved", "gen_ai.client.token.usage", "gen_ai.client.operation.duration",
              "llmcost.budget.utilization"}
    wait_for("our metrics at the processor endpoint", lambda: wanted <= otlp_sink.metric_names(),
             lambda: f"received: {sorted(otlp_sink.metric_names())}")
    exports = otlp_sink.exports("/v1/metrics")
    assert {e.content_encoding for e in exports} == {"gzip"}
    assert {e.content_type for e in exports} == {"application/x-protobuf"}
    resources = {
        (a.key, a.value.string_value)
        for e in exports for rm in e.request.resource_metrics for a in rm.resource.attributes
    }
    assert ("service.name", SERVICE) in resources
    assert ("deployment.environment.name", ENVIRONMENT) in resources

    spans = wait_for("spans at the processor endpoint", otlp_sink.spans)
    costs = [
        a.value.double_value for span in spans for a in span.attributes if a.key == "gen_ai.usage.cost"
    ]
    assert costs and max(costs) > 0
    keys = {a.key for span in spans for a in span.attributes}
    assert {"gen_ai.provider.name", "gen_ai.request.model", "gen_ai.usage.input_tokens"} <= keys
    assert not any(k.startswith("gen_ai.input.messages") or k.startswith("gen_ai.output.messages") for k in keys)


def test_the_processor_counts_the_spend_prometheus_shows(traffic: str, processor: LLMCostProcessor,
                                                         prometheus: PrometheusServer) -> None:
    """Spend the real processor service counted from the forwarded metrics equals the cost in Prometheus."""
    global_spend = 'llmcost_budget_spend_USD{llmcost_budget_name="stack-monthly",llmcost_budget_scope="global"}'

    def converged() -> bool:
        shown = prom_query(prometheus, f'sum(llmcost_cost_USD_total{{service_name="{SERVICE}"}})')
        counted = processor.metrics().get(global_spend, 0.0)
        total = float(shown[0]["value"][1]) if shown else 0.0
        return total > 0 and abs(counted - total) <= 1e-9 + 1e-6 * total

    wait_for("processor spend equal to the cost in Prometheus", converged,
             lambda: f"{processor.metrics()}\n{processor.log_tail(10)}")
    metrics = processor.metrics()
    assert metrics.get('llmcost_processor_points_total{result="counted"}', 0) > 0
    assert metrics.get('llmcost_processor_requests_total{path="/v1/metrics",status="200"}', 0) > 0
    summaries = [v for k, v in metrics.items()
                 if k.startswith("llmcost_budget_spend_USD{") and 'llmcost_budget_name="stack-summaries"' in k]
    assert summaries and max(summaries) > 0


def test_traces_reach_the_trace_backend_over_grpc(traffic: str, trace_backend: TraceBackend) -> None:
    """Spans go on to the trace backend (jaeger in compose) over OTLP/gRPC, priced, with no message text."""
    spans = wait_for("spans at the trace backend", trace_backend.spans)
    priced = [span for span in spans if any(a.key == "gen_ai.usage.cost" for a in span.attributes)]
    assert priced, f"{len(spans)} spans, none with gen_ai.usage.cost"
    keys = {a.key for span in spans for a in span.attributes}
    assert {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.response.model"} <= keys
    assert not {k for k in keys if k in ("gen_ai.input.messages", "gen_ai.output.messages")}


LEDGER_HEALTH = ("llmcost_budget_backlog_spend_USD", "llmcost_budget_backlog_writes",
                 "llmcost_budget_backlog_lost_USD_total", "llmcost_budget_backlog_dropped_total",
                 "llmcost_budget_ledger_errors_total", "llmcost_budget_backlog_journal_errors_total")


def test_ledger_health_reaches_prometheus_under_the_names_the_rules_use(traffic: str,
                                                                       prometheus: PrometheusServer) -> None:
    """The in-process ledger-health instruments arrive through the real Collector under the names the
    LLMBudgetLedgerBacklog / LLMBudgetSpendLost rules query (zero while the ledger is healthy)."""
    rules = (Path(__file__).resolve().parents[2] / "collector" / "rules" / "llmcost.rules.yml").read_text()
    for name in LEDGER_HEALTH:
        series = wait_for(f"{name} in Prometheus", lambda name=name: prom_query(
            prometheus, f'{name}{{service_name="{SERVICE}"}}'))
        assert all(float(s["value"][1]) == 0 for s in series), (name, series)  # the demo's ledger never failed
    used = {name for name in LEDGER_HEALTH if name in rules}
    assert {"llmcost_budget_backlog_spend_USD", "llmcost_budget_backlog_lost_USD_total"} <= used
