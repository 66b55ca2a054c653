"""The budget engine in the process: fed by the instrumentation, enforced in the call path."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import otel_llmcost
from otel_llmcost.budget import Budget, BudgetConfig, BudgetEngine, BudgetExceededError, Routing, Scope
from otel_llmcost.budget.processor import SPEND_SOURCE, enable_budgets
from tests.budget.helpers import ListSink
from tests.conftest import llmcost_spans, metric_points

D = Decimal
PROMPT = "Please check this order history and tell me what I bought. " * 60  # ~3,600 chars


@pytest.fixture
def client(llm_server):
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)


def test_lesson_exercise_1000_calls_against_one_dollar(instrumented, client, span_exporter):
    """1,000 calls against $1.00/month: warn, throttle and stop fire once each at the right call; after
    throttle every call goes to the cheaper model; after stop every call is refused."""
    sink = ListSink()
    engine = BudgetEngine(BudgetConfig(budgets=(Budget("monthly", D("1.00")),),
                                       routing=Routing({"gpt-4o": "gpt-4o-mini"})), sinks=[sink])
    enable_budgets(engine=engine, enforce=True)
    outcomes: list[str] = []
    for _ in range(1000):
        try:
            client.chat.completions.create(model="gpt-4o", max_tokens=40,
                                           messages=[{"role": "user", "content": PROMPT}])
            outcomes.append("served")
        except BudgetExceededError as refusal:
            assert refusal.budget == "monthly" and refusal.limit == D("0.95")
            outcomes.append("refused")
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 1000
    costs = [D(str(s.attributes.get("gen_ai.usage.cost", 0))) for s in spans]
    models = [s.attributes["gen_ai.request.model"] for s in spans]
    # The crossing calls, from the costs the spans recorded.
    running, crossed = D(0), {}
    for index, cost in enumerate(costs):
        running += cost
        for level, share in (("warn", D("0.70")), ("throttle", D("0.85")), ("stop", D("0.95"))):
            if level not in crossed and running >= share:
                crossed[level] = index
    assert [a.level for a in sink.alerts if a.level != "forecast"] == ["warn", "throttle", "stop"]
    assert set(crossed) == {"warn", "throttle", "stop"}
    throttle_at, stop_at = crossed["throttle"], crossed["stop"]
    assert set(models[: throttle_at + 1]) == {"gpt-4o"}
    assert set(models[throttle_at + 1: stop_at + 1]) == {"gpt-4o-mini"}
    assert all(s.attributes["llmcost.route.from_model"] == "gpt-4o" for s in spans[throttle_at + 1: stop_at + 1])
    assert outcomes[: stop_at + 1] == ["served"] * (stop_at + 1)
    assert outcomes[stop_at + 1:] == ["refused"] * (999 - stop_at)
    assert stop_at < 999, "the workload must reach the stop level"
    refused = spans[stop_at + 1]
    assert refused.attributes["error.type"] == "BudgetExceededError"
    assert refused.attributes["llmcost.budget.level"] == "stop"
    spend = engine.state()[0].spend
    assert spend == sum(costs)
    assert D("0.95") <= spend < D("0.95") + costs[stop_at]  # overshoot within one request


def test_sampled_traces_still_count_every_call(llm_server, client, meter_provider, metric_reader):
    """With a tracer that samples 1% of traces, the budget still sees every call's cost."""
    sampled = TracerProvider(sampler=TraceIdRatioBased(0.01))
    otel_llmcost.instrument(tracer_provider=sampled, meter_provider=meter_provider)
    try:
        engine = BudgetEngine([Budget("daily", D("100"))], sinks=[])
        processor = enable_budgets(engine=engine)
        for i in range(200):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
        assert processor.force_flush()
    finally:
        otel_llmcost.uninstrument()
    metered = sum(p.value for p in metric_points(metric_reader, "llmcost.cost"))
    assert float(engine.state()[0].spend) == pytest.approx(metered, rel=1e-9)
    assert metered > 0


def test_per_user_budget_throttles_only_that_user(instrumented, client, span_exporter):
    """A per-user budget throttles the user over it; other users keep their model."""
    engine = BudgetEngine(BudgetConfig(budgets=(Budget("per-user", D("0.02"), scope=Scope(by=("user",))),),
                                       routing=Routing({"gpt-4o": "gpt-4o-mini"})), sinks=[])
    enable_budgets(engine=engine, enforce=True)
    with otel_llmcost.attributes(user_id="heavy"):
        for _ in range(9):  # ~$0.00265 each on gpt-4o: throttled after the 7th
            client.chat.completions.create(model="gpt-4o", max_tokens=40,
                                           messages=[{"role": "user", "content": PROMPT}])
    with otel_llmcost.attributes(user_id="light"):
        client.chat.completions.create(model="gpt-4o", max_tokens=40, messages=[{"role": "user", "content": "hi"}])
    spans = llmcost_spans(span_exporter)
    heavy = [s.attributes["gen_ai.request.model"] for s in spans if s.attributes["llmcost.user.id"] == "heavy"]
    assert heavy == ["gpt-4o"] * 7 + ["gpt-4o-mini"] * 2
    assert spans[-1].attributes["gen_ai.request.model"] == "gpt-4o"
    assert spans[-1].attributes["llmcost.budget.level"] == "ok"


def test_budget_state_exported_as_gauges(instrumented, client, meter_provider, metric_reader):
    """Utilization, spend, limit and level of each budget are exported as metrics."""
    engine = BudgetEngine([Budget("monthly", D("1.00"))], sinks=[])
    processor = enable_budgets(engine=engine, meter_provider=meter_provider)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    processor.force_flush()
    utilization = metric_points(metric_reader, "llmcost.budget.utilization")
    spend = metric_points(metric_reader, "llmcost.budget.spend")
    assert utilization[0].attributes == {"llmcost.budget.name": "monthly", "llmcost.budget.scope": "global"}
    assert utilization[0].value == pytest.approx(spend[0].value / 1.0) and spend[0].value > 0
    assert metric_points(metric_reader, "llmcost.budget.limit")[0].value == 1.0
    assert metric_points(metric_reader, "llmcost.budget.level")[0].attributes["llmcost.budget.level"] == "ok"


def test_spans_of_uninstrumented_code_are_priced_once(llm_server, monkeypatch):
    """Anthropic's own spans are priced from GenAI attributes when we do not wrap the SDK, and not
    counted again when we do."""
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    from opentelemetry import trace

    provider = TracerProvider()
    engine = BudgetEngine([Budget("monthly", D("100"))], sinks=[])
    telemetry = otel_llmcost.Telemetry(catalog=otel_llmcost.PriceCatalog(), tracer_provider=provider)
    processor = enable_budgets(engine=engine, telemetry=telemetry, tracer_provider=provider)
    provider.add_span_processor(SimpleSpanProcessor(_Collect()))
    old = trace._TRACER_PROVIDER  # the SDK traces through the global provider
    trace._TRACER_PROVIDER = provider
    try:
        client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0)
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                         messages=[{"role": "user", "content": "hello"}])
        processor.force_flush()
        uninstrumented = engine.state()[0].spend
        usage = message.usage
        expected = (usage.input_tokens * D(1) + usage.output_tokens * D(5)) / D(1_000_000)
        assert uninstrumented == expected
        assert processor.foreign_spans_priced == 1

        otel_llmcost.instrument(tracer_provider=provider)
        processor.attach(otel_llmcost.telemetry.current_telemetry())
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hello"}])
        processor.force_flush()
        assert engine.state()[0].spend == 2 * expected  # ours priced it; the SDK's child span was skipped
        assert processor.foreign_spans_priced == 1
    finally:
        otel_llmcost.uninstrument()
        trace._TRACER_PROVIDER = old
        processor.shutdown()
    assert SPEND_SOURCE == "llmcost.spend.source"


class _Collect:
    """A span exporter that keeps nothing: the processor under test does the work."""

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self):
        return None

    def force_flush(self, timeout_millis=30000):
        return True


def test_enable_budgets_needs_instrumentation():
    """Budgets without instrumentation say what to do."""
    otel_llmcost.uninstrument()
    with pytest.raises(RuntimeError, match="call otel_llmcost.instrument"):
        enable_budgets(engine=BudgetEngine([Budget("b", D("1"))], sinks=[]))


def test_meter_provider_unused_warning_free():
    """A processor can be created with its own meter provider and shut down cleanly."""
    engine = BudgetEngine([Budget("b", D("1"))], sinks=[])
    telemetry = otel_llmcost.Telemetry(catalog=otel_llmcost.PriceCatalog())
    processor = enable_budgets(engine=engine, telemetry=telemetry, meter_provider=MeterProvider())
    processor.shutdown()
    processor.shutdown()


def test_alerts_as_opentelemetry_log_and_span(tracer_provider, span_exporter):
    """An alert becomes an OpenTelemetry log record (event llmcost.budget.alert) and a span."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from otel_llmcost.budget.otel_sink import OpenTelemetrySink

    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    sink = OpenTelemetrySink(logger_provider=logger_provider, tracer_provider=tracer_provider)
    engine = BudgetEngine([Budget("monthly", D("1.00"))], sinks=[sink])
    engine.record_cost(D("0.72"), {})
    records = logs.get_finished_logs()
    assert len(records) == 1
    record = records[0].log_record
    assert record.event_name == "llmcost.budget.alert"
    assert record.attributes["llmcost.budget.level"] == "warn"
    assert record.attributes["llmcost.budget.spend"] == 0.72 and record.severity_text == "WARN"
    assert "monthly" in record.body
    span = [s for s in span_exporter.get_finished_spans() if s.name == "llmcost.budget.alert"][0]
    assert span.attributes["llmcost.budget.limit"] == 1.0 and span.events[0].name == "llmcost.budget.alert"


def test_at_stop_cached_answers_are_served_and_the_rest_refused(instrumented, client, llm_server, span_exporter):
    """Past the stop level the guard still serves what the cache holds, and refuses everything else."""
    from otel_llmcost.cache import ExactCache
    from otel_llmcost.cache.callpath import ResponseCache
    from otel_llmcost.guard import install_guard

    engine = BudgetEngine([Budget("monthly", D("0.01"))], sinks=[])
    install_guard(budget=engine, cache=ResponseCache(ExactCache()))
    faq = [{"role": "user", "content": "What is the return policy?"}]
    client.chat.completions.create(model="gpt-4o", temperature=0, messages=faq)
    engine.record_cost(D("0.0096"), {})  # spend seen elsewhere takes the budget past 95%
    cached = client.chat.completions.create(model="gpt-4o", temperature=0, messages=faq)
    with pytest.raises(BudgetExceededError) as info:
        client.chat.completions.create(model="gpt-4o", temperature=0,
                                       messages=[{"role": "user", "content": "Something new"}])
    assert cached.choices[0].message.content
    assert info.value.budget == "monthly" and "resets at" in str(info.value)
    spans = llmcost_spans(span_exporter)
    assert spans[1].attributes["llmcost.cache.status"] == "exact_hit"
    assert spans[1].attributes["llmcost.budget.level"] == "stop"
    assert spans[2].attributes["error.type"] == "BudgetExceededError"
    assert sum(r.path.endswith("/chat/completions") for r in llm_server.requests) == 1
