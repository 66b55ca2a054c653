"""Issue #6 end to end: an instrumented app spends a budget through the real stack until it is stopped.

Every part is real and runs on loopback: the app (this test process) calls the real `openai` SDK
against the loopback LLM server, with otel-llmcost's instrumentation and cost guard (an exact response
cache, and routing whose budget level comes from a `HintsClient` polling the processor every 0.2 s);
it exports OTLP/HTTP metrics (every 0.5 s) and traces to our Collector build running
collector/otelcol.yaml (endpoints by environment only), which forwards to Prometheus (scraping it),
to a gRPC trace backend and to the processor service (`otel-llmcost processor`) holding one small
global budget. Prometheus runs collector/prometheus.yml and the rules unchanged but for loopback
targets and 1 s intervals; Alertmanager runs collector/alertmanager.yml with its receiver URLs on the
test's webhook receiver and group_wait shortened to 1 s (production: 10 s critical, 30 s warning) so
that the test waits only for the rules' own `for: 15s`. The processor's budget webhook posts, signed,
to the same receiver.

The app makes one call at a time and waits until the hints it reads reflect that call's cost (spend
goes app → Collector → processor → hints), so the level each call sees follows from the spend before
it, and the run is the same on a fast or a loaded machine. The call sizes are scripted on the loopback
server so that one call crosses warn (70%) and another throttle (85%), and the cheaper substitute's
calls (30% of the price) then walk up to stop (95%) in smaller steps.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_llmcost
from otel_llmcost.budget import BudgetExceededError, Level, verify_signature
from otel_llmcost.budget.webhook import SIGNATURE_HEADER
from otel_llmcost.cache import ExactCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.guard import install_guard
from otel_llmcost.hints import HintsClient
from otel_llmcost.pricing import PriceCatalog, Usage
from otel_llmcost.routing import Router, parse_routing_config
from otel_llmcost.testing import WebhookReceiver
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply
from otel_llmcost.testing.processes import (
    AlertmanagerServer,
    CollectorProcess,
    LLMCostProcessor,
    ManagedProcess,
    PrometheusServer,
    collector_binary,
)
from tests.stack.conftest import COLLECTOR_CONFIG, TraceBackend
from tests.stack.e2e_helpers import (
    alertmanager_alerts,
    alertmanager_config,
    get_json,
    logs,
    prom_value,
    wait_for,
)
from tests.stack.test_rules import loopback_prometheus_config

SERVICE = "llmcost-e2e"
ENVIRONMENT = "e2e-test"
BUDGET = "e2e-monthly"
AMOUNT = Decimal("0.50")
THRESHOLDS = {"warn": 0.70, "throttle": 0.85, "stop": 0.95}  # the rules' levels, written out for both
MODEL, SUBSTITUTE = "gpt-5.4", "gpt-5.4-mini"
TOKEN = "e2e-hints-token"
SECRET_ENV, SECRET = "E2E_LLMCOST_WEBHOOK_SECRET", "e2e-webhook-secret"
# Provider usage of each call, scripted on the loopback server. At the catalog's prices the first call
# spends 63% of the budget on the requested model, each later one 9% on it or 2.7% on the substitute:
# 63 ok → 72 warn → 81 → 90 throttle → 92.7 → 95.4 stop (the test checks against the catalog, not these).
FIRST_USAGE = {"prompt_tokens": 42_000, "completion_tokens": 14_000}
STEP_USAGE = {"prompt_tokens": 6_000, "completion_tokens": 2_000}
MAX_CALLS = 20  # a guard against a loop that never reaches stop; the plan needs 6 calls
WAIT = 90.0  # deadline of each wait (a hang on a loaded machine), not an assertion on time
EPSILON = 1e-9  # USD: far below one call (the smallest costs $0.0135), above float rounding


@dataclass
class Stack:
    receiver: WebhookReceiver
    processor: LLMCostProcessor
    alertmanager: AlertmanagerServer
    prometheus: PrometheusServer
    collector: CollectorProcess
    trace_backend: TraceBackend

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        return (self.processor, self.collector, self.prometheus, self.alertmanager)


@pytest.fixture
def stack(tmp_path: Path, trace_backend: TraceBackend) -> Iterator[Stack]:
    """The receiver, processor, Alertmanager, Collector and Prometheus, on loopback, stopped afterwards."""
    with contextlib.ExitStack() as cleanup:
        receiver = cleanup.enter_context(WebhookReceiver())
        processor_config = {
            "timezone": "UTC",
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "thresholds": THRESHOLDS,
            "budgets": [{"name": BUDGET, "amount": str(AMOUNT), "window": "month"}],
            "routing": {"substitutes": {MODEL: SUBSTITUTE}},
            "alerts": {"log": True, "webhooks": [
                {"url": f"{receiver.base_url}/llmcost/budget", "format": "json", "secret_env": SECRET_ENV}]},
        }
        processor = LLMCostProcessor(processor_config, workdir=tmp_path / "processor", token=TOKEN,
                                     env={SECRET_ENV: SECRET})
        cleanup.callback(processor.close)
        processor.start()

        # Both routes wait 1 s instead of 10 s / 30 s before a group's first notification (the only
        # change besides the receiver address), so Alertmanager adds little to the rules' `for: 15s`.
        alertmanager = AlertmanagerServer(alertmanager_config(receiver.base_url, group_wait="1s"),
                                          workdir=tmp_path / "alertmanager")
        cleanup.callback(alertmanager.close)
        alertmanager.start()

        collector = CollectorProcess(
            COLLECTOR_CONFIG, workdir=tmp_path / "collector", binary=collector_binary(),
            env={"LLMCOST_PROCESSOR_ENDPOINT": processor.url, "LLMCOST_TRACES_ENDPOINT": trace_backend.endpoint})
        cleanup.callback(collector.close)
        collector.start()

        targets = {"otel-collector": collector.prometheus_target,
                   "llmcost-processor": f"127.0.0.1:{processor.port}", "prometheus": "127.0.0.1:1"}
        am_target = f"127.0.0.1:{alertmanager.port}"
        prometheus = PrometheusServer(loopback_prometheus_config(targets, am_target),
                                      workdir=tmp_path / "prometheus")
        cleanup.callback(prometheus.close)
        targets["prometheus"] = f"127.0.0.1:{prometheus.port}"  # its own port is known only now
        prometheus.config_path.write_text(yaml.safe_dump(loopback_prometheus_config(targets, am_target),
                                                         sort_keys=False))
        prometheus.start()
        yield Stack(receiver, processor, alertmanager, prometheus, collector, trace_backend)


@dataclass
class App:
    """The instrumented app: providers exporting to the Collector, in-memory copies to check against."""

    sdk: openai.OpenAI
    hints: HintsClient
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    catalog: PriceCatalog

    def recorded_cost(self) -> float:
        """USD the app recorded on `llmcost.cost` so far (the same counter it exports)."""
        data = self.metrics.get_metrics_data()
        return float(sum(getattr(point, "value", 0) for rm in (data.resource_metrics if data else ())
                         for sm in rm.scope_metrics for metric in sm.metrics if metric.name == "llmcost.cost"
                         for point in metric.data.data_points))

    def call_spans(self) -> list[Any]:
        """Our spans of the app's calls, in the order the calls started."""
        spans = [s for s in self.spans.get_finished_spans() if s.instrumentation_scope is not None
                 and s.instrumentation_scope.name == "otel_llmcost"]
        return sorted(spans, key=lambda s: s.start_time)


@pytest.fixture
def app(stack: Stack, llm_server: LoopbackLLMServer) -> Iterator[App]:
    """otel-llmcost with the cost guard, exporting to the stack's Collector; uninstrumented afterwards."""
    resource = Resource.create({"service.name": SERVICE, "deployment.environment.name": ENVIRONMENT})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer_provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{stack.collector.otlp_http_url}/v1/traces"), schedule_delay_millis=200))
    metrics = InMemoryMetricReader()
    exporting = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{stack.collector.otlp_http_url}/v1/metrics"), export_interval_millis=500)
    meter_provider = MeterProvider(resource=resource, metric_readers=[exporting, metrics])
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    hints = HintsClient(stack.processor.url, token=TOKEN, interval=0.2)
    try:
        # Complexity routing keeps the requested model at every level, so a reroute here is the budget's.
        routing = parse_routing_config({"routing": {"complexity": {
            level: {"openai": "requested"} for level in ("simple", "medium", "complex")}}})
        install_guard(telemetry=telemetry, hints=hints,
                      router=Router(routing.table, routing.build_classifier(), prices=telemetry.catalog),
                      cache=ResponseCache(ExactCache("memory://"), catalog=telemetry.catalog))
        sdk = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-e2e-test", max_retries=0)
        yield App(sdk, hints, spans, metrics, telemetry.catalog)
    finally:
        hints.close()
        otel_llmcost.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def level_at(spend: float) -> str:
    """The budget level of a spend (as the processor's thresholds and the alert rules define it)."""
    reached = [name for name, fraction in THRESHOLDS.items() if spend >= fraction * float(AMOUNT)]
    return reached[-1] if reached else "ok"


def ask(app: App, text: str) -> Any:
    return app.sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                           temperature=0)


def test_budget_walks_ok_throttle_stop_through_the_real_stack(stack: Stack, app: App,
                                                              llm_server: LoopbackLLMServer) -> None:
    """Spend crosses warn, throttle, stop: hints, routing, refusals, signed webhooks, Alertmanager, one ledger."""
    diagnostics = logs(*stack.processes)
    # The hints endpoint wants the bearer token; the app's client has it and got a first answer.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack.processor.url}/v1/hints", timeout=10)
    assert refused.value.code == 401
    wait_for("a first answer from /v1/hints", lambda: app.hints.age is not None, WAIT,
             lambda: f"{app.hints.last_error}\n{diagnostics()}")
    seen = [app.hints.hints({}).level.label]

    # -- drive calls until the hints the app reads say stop ------------------------------------------
    llm_server.script(Reply(provider="openai", usage=FIRST_USAGE))
    llm_server.script(Reply(provider="openai", usage=STEP_USAGE, times=MAX_CALLS))
    first_answer = None
    cumulative = [0.0]  # the app's recorded cost before the first call and after each call
    for number in range(MAX_CALLS):
        if app.hints.hints({}).level >= Level.STOP:
            break
        response = ask(app, f"Question {number}: what changed in the quarterly numbers?")
        first_answer = first_answer or response.choices[0].message.content
        cumulative.append(app.recorded_cost())

        def reflected(target: float = cumulative[-1] / float(AMOUNT)) -> bool:
            """The call's cost has gone app → Collector → processor → the app's hints client."""
            return abs(app.hints.hints({}).utilization - target) < EPSILON

        wait_for(f"hints reflecting the spend after call {number + 1} (${cumulative[-1]:.6f})", reflected,
                 WAIT, lambda: f"hints say {app.hints.hints({})}\n{diagnostics()}")
        seen.append(app.hints.hints({}).level.label)
    else:
        pytest.fail(f"{MAX_CALLS} calls did not reach stop; levels seen: {seen}")
    calls = len(cumulative) - 1

    # The hints went ok → warn → throttle → stop, each level held for at least one call but stop.
    assert [level for i, level in enumerate(seen) if i == 0 or seen[i - 1] != level] == [
        "ok", "warn", "throttle", "stop"]
    assert seen == [level_at(spend) for spend in cumulative]

    # Each call saw the level of the spend before it, and from throttle on went to the substitute.
    spans = app.call_spans()
    assert len(spans) == calls
    expected_levels = [level_at(spend) for spend in cumulative[:-1]]
    assert [s.attributes["llmcost.budget.level"] for s in spans] == expected_levels
    throttled = [level in ("throttle", "stop") for level in expected_levels]
    assert [s.attributes["gen_ai.request.model"] for s in spans] == [SUBSTITUTE if t else MODEL for t in throttled]
    assert [s.attributes.get("llmcost.route.from_model") for s in spans] == [MODEL if t else None for t in throttled]
    assert [r.json["model"] for r in llm_server.requests] == [SUBSTITUTE if t else MODEL for t in throttled]
    catalog = app.catalog
    step = Usage(input_tokens=STEP_USAGE["prompt_tokens"], output_tokens=STEP_USAGE["completion_tokens"])
    expected_costs = [float(catalog.cost(Usage(input_tokens=FIRST_USAGE["prompt_tokens"],
                                               output_tokens=FIRST_USAGE["completion_tokens"]), MODEL).total)]
    expected_costs += [float(catalog.cost(step, SUBSTITUTE if t else MODEL).total) for t in throttled[1:]]
    assert [s.attributes["gen_ai.usage.cost"] for s in spans] == pytest.approx(expected_costs, abs=EPSILON)
    assert sum(throttled) >= 2, "the plan must send calls to the substitute"

    # -- at stop: a new question is refused, a repeated one is served from the cache -----------------
    sent = len(llm_server.requests)
    with pytest.raises(BudgetExceededError) as stopped:
        ask(app, "A question nobody asked before: is it refused?")
    assert (stopped.value.budget, stopped.value.scope_key) == (BUDGET, "global")
    replay = ask(app, "Question 0: what changed in the quarterly numbers?")
    assert replay.choices[0].message.content == first_answer
    assert len(llm_server.requests) == sent, "nothing reaches the provider at stop"
    refused_span, cached_span = app.call_spans()[calls:]
    assert refused_span.attributes["llmcost.budget.level"] == "stop"
    assert refused_span.attributes["error.type"] == "BudgetExceededError"
    assert (cached_span.attributes["llmcost.budget.level"], cached_span.attributes["llmcost.cache.status"]) == (
        "stop", "exact_hit")
    spent = app.recorded_cost()
    assert spent == pytest.approx(cumulative[-1], abs=EPSILON)  # refusal and cache hit cost nothing
    assert spent == pytest.approx(sum(s.attributes["gen_ai.usage.cost"] for s in spans), abs=EPSILON)

    # -- the processor's webhook: one signed alert per level, in order, with the spend it saw --------
    def level_alerts() -> list[Any] | None:
        found = [d for d in stack.receiver.deliveries("/llmcost/budget") if d.json.get("level") != "forecast"]
        return found if any(d.json["level"] == "stop" for d in found) else None

    alerts = wait_for("the processor's stop alert at the webhook", level_alerts, WAIT, diagnostics)
    assert [d.json["level"] for d in alerts] == ["warn", "throttle", "stop"]
    for delivery in stack.receiver.deliveries("/llmcost/budget"):
        header = delivery.headers[SIGNATURE_HEADER.lower()]
        assert verify_signature(SECRET, header, delivery.body), f"bad signature {header} on {delivery.body!r}"
        assert not verify_signature("another-secret", header, delivery.body)
        assert (delivery.json["type"], delivery.json["budget"], delivery.json["scope_key"]) == (
            "llmcost.budget.alert", BUDGET, "global")
        assert Decimal(delivery.json["limit"]) == AMOUNT
    for delivery in alerts:
        spend = float(delivery.json["spend"])
        assert spend >= THRESHOLDS[delivery.json["level"]] * float(AMOUNT)
        assert any(abs(spend - value) < EPSILON for value in cumulative), (spend, cumulative)
    assert len([d for d in stack.receiver.deliveries("/llmcost/budget") if d.json["level"] == "forecast"]) <= 1

    # -- exactly once across the Collector: processor and Prometheus hold what the app recorded --------
    def processor_spend() -> float | None:
        return next((value for series, value in stack.processor.metrics().items()
                     if series.startswith("llmcost_budget_spend_USD{") and f'"{BUDGET}"' in series), None)

    assert processor_spend() == pytest.approx(spent, abs=EPSILON)
    cost_total = f'sum(llmcost_cost_USD_total{{service_name="{SERVICE}",deployment_environment_name="{ENVIRONMENT}"}})'
    wait_for("the app's cost in Prometheus (via the Collector)",
             lambda: abs((prom_value(stack.prometheus.url, cost_total) or 0.0) - spent) < EPSILON, WAIT,
             lambda: f"{prom_value(stack.prometheus.url, cost_total)} != {spent}\n{diagnostics()}")
    budget_spend = f'llmcost:budget_spend:usd{{budget="{BUDGET}",scope="global"}}'
    wait_for("the processor's spend in Prometheus",
             lambda: abs((prom_value(stack.prometheus.url, budget_spend) or 0.0) - spent) < EPSILON, WAIT,
             diagnostics)
    assert stack.processor.metrics().get(
        'llmcost_processor_requests_total{path="/v1/metrics",status="200"}', 0) > 0

    # -- Prometheus rules → Alertmanager → the receiver -----------------------------------------------
    def stop_page() -> dict[str, Any] | None:
        return next((a for a in alertmanager_alerts(stack.receiver, "/alertmanager/page")
                     if a["labels"]["alertname"] == "LLMBudgetStop" and a["status"] == "firing"), None)

    page = wait_for("LLMBudgetStop paged through Alertmanager", stop_page, WAIT, diagnostics)
    rule_labels = {"budget": BUDGET, "scope": "global", "stack": "otel-llmcost"}
    assert page["labels"] == {"alertname": "LLMBudgetStop", "severity": "critical", **rule_labels}
    assert page["annotations"]["summary"].startswith(f"LLM budget {BUDGET} (global) is exhausted")
    # Warn and throttle fired before stop (their `for` started earlier): each was either notified on its
    # severity's route before stop fired, or is held back by stop's inhibition; never lost.
    held = {a["labels"]["alertname"]: a for a in app_alertmanager_alerts(stack)}
    stop_fingerprint = held["LLMBudgetStop"]["fingerprint"]
    for name, route, severity in (("LLMBudgetWarn", "/alertmanager/ticket", "warning"),
                                  ("LLMBudgetThrottle", "/alertmanager/page", "critical")):
        assert held[name]["labels"] == {"alertname": name, "severity": severity, **rule_labels}
        notified = [a for a in alertmanager_alerts(stack.receiver, route) if a["labels"]["alertname"] == name]
        assert notified or stop_fingerprint in held[name]["status"]["inhibitedBy"], (name, held[name])
        assert all(a["labels"] == held[name]["labels"] for a in notified)
    assert not [a for a in alertmanager_alerts(stack.receiver, "/alertmanager/ticket")
                if a["labels"]["alertname"] in ("LLMBudgetThrottle", "LLMBudgetStop")]

    # -- the spans went on through the Collector with the routing decision ---------------------------
    def routed_remote() -> list[Any] | None:
        routed = [s for s in stack.trace_backend.spans()
                  if any(a.key == "llmcost.route.from_model" and a.value.string_value == MODEL
                         for a in s.attributes)]
        return routed if len(routed) == sum(throttled) else None

    routed = wait_for("the routed spans at the trace backend", routed_remote, WAIT, diagnostics)
    assert {a.value.string_value for s in routed for a in s.attributes if a.key == "gen_ai.request.model"} == {
        SUBSTITUTE}
    # Nothing downstream carries the prompts or the API key (no content capture was asked for).
    downstream = [repr(s) for s in stack.trace_backend.spans()]
    downstream += [d.body.decode() for path in ("/llmcost/budget", "/alertmanager/page", "/alertmanager/ticket")
                   for d in stack.receiver.deliveries(path)]
    assert not [text for text in downstream if "quarterly numbers" in text or "sk-e2e-test" in text]


def app_alertmanager_alerts(stack: Stack) -> list[dict[str, Any]]:
    """Alertmanager's current alerts (active and suppressed) of the test's budget."""
    return [a for a in get_json(f"{stack.alertmanager.url}/api/v2/alerts") if a["labels"].get("budget") == BUDGET]
