"""A budget alert end to end, every part real: processor → Prometheus → Alertmanager → webhook receiver.

The processor service runs collector/processor.yaml (ledger and webhook addresses moved to this
machine) and is sent $18 of spend over OTLP/HTTP against the $20 `company-monthly` budget: 90%, past
warn (70%) and throttle (85%), short of stop (95%). Prometheus runs collector/prometheus.yml and the
rules unchanged except for loopback addresses and 1 s intervals; Alertmanager runs
collector/alertmanager.yml with its receiver URLs pointed at the stack's own alert receiver
(collector/alert-receiver/receiver.py), started here as a process.

Timing: the budget alerts' `for: 15s` and the critical route's `group_wait: 10s` are the production
values, so the notification arrives about 30 s after the spend; the test waits up to 120 s (the
machine is shared) and asserts nothing about time.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from otel_llmcost.testing.processes import (
    AlertmanagerServer,
    CollectorProcess,
    HTTPProcess,
    LLMCostProcessor,
    ManagedProcess,
    PrometheusServer,
)
from tests.stack.conftest import SERVICE, run_demo_traffic
from tests.stack.test_rules import ALERTMANAGER_CONFIG, loopback_prometheus_config

REPO = Path(__file__).resolve().parents[2]
RECEIVER_SCRIPT = REPO / "collector" / "alert-receiver" / "receiver.py"
PROCESSOR_CONFIG = REPO / "collector" / "processor.yaml"
COMPOSE_RECEIVER = "http://alert-receiver:9095"
WAIT = 120.0

T = TypeVar("T")


class AlertReceiverProcess(HTTPProcess):
    """The stack's webhook receiver script, as docker-compose runs it, on a loopback port."""

    name = "alert-receiver"
    ready_path = "/healthz"

    def command(self) -> list[str]:
        return [sys.executable, str(RECEIVER_SCRIPT), "--host", "127.0.0.1", "--port", str(self.port)]

    def notifications(self, path: str) -> list[dict[str, Any]]:
        return get_json(f"{self.url}/alerts?path={path}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, probe: Callable[[], T | None], *logs: ManagedProcess) -> T:
    """Poll `probe` until it returns something; on timeout fail with what was awaited and the logs."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"no {what} within {WAIT:g} s\n" + "\n".join(process.log_tail(20) for process in logs))


def cost_export(usd: float, start_ns: int) -> bytes:
    """An OTLP/JSON export of the `llmcost.cost` counter as an app instrumented with otel-llmcost sends it."""
    now = time.time_ns()
    return json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chat"}}]},
        "scopeMetrics": [{"scope": {"name": "otel_llmcost"}, "metrics": [{
            "name": "llmcost.cost", "unit": "USD",
            "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [{
                "startTimeUnixNano": str(start_ns), "timeUnixNano": str(now), "asDouble": usd,
                "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-5.4"}}],
            }]}}]}]}]}).encode()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    receiver = AlertReceiverProcess()
    processes: list[ManagedProcess] = [receiver]
    try:
        receiver.start()
        config = PROCESSOR_CONFIG.read_text()
        assert config.count(COMPOSE_RECEIVER) == 1 and config.count("sqlite:////var/lib/otel-llmcost/") == 1
        config = config.replace(COMPOSE_RECEIVER, receiver.url)
        config = config.replace("sqlite:////var/lib/otel-llmcost/", f"sqlite:///{tmp_path}/")
        (tmp_path / "processor.yaml").write_text(config)
        processor = LLMCostProcessor(tmp_path / "processor.yaml", workdir=tmp_path / "processor", token="test")
        processes.append(processor)
        processor.start()

        am_config = ALERTMANAGER_CONFIG.read_text()
        assert COMPOSE_RECEIVER in am_config
        alertmanager = AlertmanagerServer(yaml.safe_load(am_config.replace(COMPOSE_RECEIVER, receiver.url)))
        processes.append(alertmanager)
        alertmanager.start()

        processor_target = f"127.0.0.1:{processor.port}"
        # No Collector here: its job scrapes the processor too, which also shows that a budget reported
        # by two jobs (the processor, and apps with in-process budgets via the Collector) alerts once.
        targets = {"otel-collector": processor_target, "llmcost-processor": processor_target,
                   "prometheus": "127.0.0.1:1"}
        prometheus = PrometheusServer(loopback_prometheus_config(targets, f"127.0.0.1:{alertmanager.port}"))
        targets["prometheus"] = f"127.0.0.1:{prometheus.port}"
        prometheus.config_path.write_text(yaml.safe_dump(
            loopback_prometheus_config(targets, f"127.0.0.1:{alertmanager.port}"), sort_keys=False))
        processes.append(prometheus)
        prometheus.start()
        yield {"receiver": receiver, "processor": processor, "alertmanager": alertmanager,
               "prometheus": prometheus, "all": processes}
    finally:
        for process in reversed(processes):
            process.close()


def test_budget_at_90_percent_pages_through_alertmanager_with_warn_inhibited(stack: dict[str, Any]) -> None:
    """90% of a budget: Throttle reaches the page webhook with budget/scope labels; Warn is inhibited."""
    receiver, processor = stack["receiver"], stack["processor"]
    alertmanager, prometheus = stack["alertmanager"], stack["prometheus"]
    # A running app's counter: the processor takes its first export as the baseline (spend from before
    # it counted), and counts what the counter gains after.
    started = time.time_ns() - 60 * 10**9
    for usd in (0.0, 18.0):
        request = urllib.request.Request(f"{processor.url}/v1/metrics", data=cost_export(usd, started),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        time.sleep(0.01)  # the second point must be newer

    def page() -> dict[str, Any] | None:
        for notification in receiver.notifications("/alertmanager/page"):
            for alert in notification["payload"]["alerts"]:
                if alert["labels"]["alertname"] == "LLMBudgetThrottle" and alert["status"] == "firing":
                    return alert
        return None

    alert = wait_for("LLMBudgetThrottle notification on /alertmanager/page", page, *stack["all"])
    assert alert["labels"] == {"alertname": "LLMBudgetThrottle", "severity": "critical",
                               "budget": "company-monthly", "scope": "global", "stack": "otel-llmcost"}
    assert alert["annotations"]["summary"] == "LLM budget company-monthly (global) is throttling at 90%"
    assert "routed to the cheaper substitute" in alert["annotations"]["description"]

    # Warn fired in Prometheus too, and Alertmanager holds it back under Throttle.
    def warn_state() -> dict[str, Any] | None:
        alerts = get_json(f"{alertmanager.url}/api/v2/alerts")
        return next((a for a in alerts if a["labels"]["alertname"] == "LLMBudgetWarn"), None)

    warn = wait_for("LLMBudgetWarn in Alertmanager", warn_state, *stack["all"])
    assert warn["status"]["state"] == "suppressed"
    assert warn["status"]["inhibitedBy"]
    firing = {a["labels"]["alertname"]: a for a in get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]}
    assert firing["LLMBudgetWarn"]["state"] == "firing"
    assert "LLMBudgetStop" not in firing
    # One alert per budget although two jobs report it.
    throttles = [a for a in get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
                 if a["labels"]["alertname"] == "LLMBudgetThrottle"]
    assert len(throttles) == 1
    assert not any(n for n in receiver.notifications("/alertmanager/ticket")
                   for a in n["payload"]["alerts"] if a["labels"]["alertname"] == "LLMBudgetWarn")

    # The processor's own budget webhook (collector/processor.yaml) reached the same receiver.
    levels = {(n["payload"]["budget"], n["payload"]["level"]) for n in receiver.notifications("/llmcost/budget")}
    assert {("company-monthly", "warn"), ("company-monthly", "throttle")} <= levels
    assert ("company-monthly", "stop") not in levels


def prom_query(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return get_json(url)["data"]["result"]


def test_rules_evaluate_real_telemetry(collector: CollectorProcess, processor: LLMCostProcessor,
                                       tmp_path: Path) -> None:
    """Demo traffic through our Collector and the processor: the rules' selectors and labels find real series."""
    targets = {"otel-collector": collector.prometheus_target, "llmcost-processor": f"127.0.0.1:{processor.port}",
               "prometheus": "127.0.0.1:1"}
    with PrometheusServer(loopback_prometheus_config(targets, None), workdir=tmp_path) as prometheus:
        wait_for("first scrape of the Collector and the processor", lambda: len(prom_query(
            prometheus, 'up{job=~"otel-collector|llmcost-processor"} == 1')) == 2, prometheus, collector)
        # Long enough (at 40 calls a second) for Prometheus to see the counters grow between scrapes.
        run_demo_traffic(collector, calls=200, rate=40)
        service = f'service_name="{SERVICE}"'

        def series(expr: str) -> list[dict[str, Any]] | None:
            return prom_query(prometheus, expr) or None

        def with_labels(expr: str, label: str, wanted: set[str]) -> list[dict[str, Any]] | None:
            found = prom_query(prometheus, expr)
            return found if wanted <= {s["metric"].get(label) for s in found} else None

        logs = (prometheus, collector, processor)
        assert wait_for("spend rate", lambda: series("llmcost:cost_usd:rate5m > 0"), *logs)
        # The processor's budget (conftest) and the demo app's in-process one, via the Collector.
        both = {"stack-monthly", "demo-monthly"}
        utilization = wait_for("budget utilization from both sources", lambda: with_labels(
            "llmcost:budget_utilization:ratio", "budget", both), *logs)
        assert {("stack-monthly", "global"), ("demo-monthly", "global")} <= {
            (s["metric"]["budget"], s["metric"]["scope"]) for s in utilization}
        wait_for("burn rates of both global budgets", lambda: with_labels(
            "llmcost:budget_burn_rate:rate5m", "budget", both), *logs)
        providers = {s["metric"]["gen_ai_provider_name"] for s in wait_for(
            "call rates", lambda: series(f"llmcost:calls:rate5m{{{service}}}"), *logs)}
        assert {"openai", "anthropic", "gcp.gemini"} <= providers
        ratios = wait_for("error ratios", lambda: series(f"llmcost:call_error_ratio:rate5m{{{service}}}"), *logs)
        assert {s["metric"]["gen_ai_provider_name"] for s in ratios} == providers
        assert all(0 <= float(s["value"][1]) <= 1 for s in ratios)
        hit_ratio = wait_for("cache hit ratio", lambda: series(f"llmcost:cache_hit_ratio:rate30m{{{service}}}"), *logs)
        assert 0 <= float(hit_ratio[0]["value"][1]) <= 1
        # The demo calls a self-hosted model nobody has a price for: its counter is born at 1 or more,
        # which only the "new series" half of the rule can see.
        unknown = wait_for("LLMUnknownModelPrice pending or firing", lambda: series(
            f'ALERTS{{alertname="LLMUnknownModelPrice",{service}}}'), *logs)
        assert {s["metric"]["gen_ai_request_model"] for s in unknown} == {"acme-llm-7b"}
        assert not prom_query(prometheus, 'ALERTS{alertname="LLMCostProcessorDown"}')
