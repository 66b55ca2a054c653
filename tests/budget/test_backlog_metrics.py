"""The ledger's health as OpenTelemetry metrics: spend waiting for the ledger, spend lost, errors.

Real components: the OpenAI SDK against the loopback LLM server, instrumented; a `BudgetProcessor` on a
`RedisLedger` over a redis-server of our own that the tests stop and start; metrics read with an
`InMemoryMetricReader`. Expected USD comes from the costs the calls' spans recorded.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llmcost import names
from otel_llmcost.budget import Alert, Budget, BudgetEngine
from otel_llmcost.budget.ledger.backlog import BacklogPolicy
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.budget.processor import BudgetProcessor, enable_budgets
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.processes import RedisServer
from tests.conftest import llmcost_spans

D = Decimal
#: A bound on waiting for the background replay, never a latency assertion.
DEADLINE = 20.0
HEALTH = (names.METRIC_BUDGET_BACKLOG_SPEND, names.METRIC_BUDGET_BACKLOG_WRITES, names.METRIC_BUDGET_BACKLOG_LOST,
          names.METRIC_BUDGET_BACKLOG_DROPPED, names.METRIC_BUDGET_LEDGER_ERRORS,
          names.METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS, names.METRIC_BUDGET_EVENTS_DROPPED)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (it is stopped and restarted), without persistence."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def client(llm_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)


def collect(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    """One collection: metric name → {sorted attributes: point}, with each metric's kind checked."""
    found: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found[metric.name] = {tuple(sorted((p.attributes or {}).items())): p
                                      for p in metric.data.data_points}
                if metric.name in HEALTH:
                    found[metric.name + "#meta"] = {(): (type(metric.data).__name__, metric.unit,
                                                         getattr(metric.data, "is_monotonic", None))}
    return found


def value(points: dict[str, dict[tuple[tuple[str, Any], ...], Any]], name: str, **attributes: str) -> Any:
    return points[name][tuple(sorted(attributes.items()))].value


def calls(client: openai.OpenAI, count: int, exporter: Any) -> list[Decimal]:
    """`count` real calls; their costs as the spans recorded them."""
    before = len(llmcost_spans(exporter))
    for i in range(count):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
    spans = llmcost_spans(exporter)[before:]
    assert len(spans) == count
    return [D(str(span.attributes["gen_ai.usage.cost"])) for span in spans]


def engine_on(redis: RedisServer, size: int = 10_000) -> BudgetEngine:
    ledger = RedisLedger.from_url(redis.url, prefix=f"test:{uuid.uuid4().hex}")
    return BudgetEngine([Budget("daily", D("100"))], ledger, sinks=[],
                        backlog=BacklogPolicy(size=size, retry_initial=0.05, retry_max=0.2))


def test_spend_waiting_for_a_stopped_ledger_shows_and_returns_to_zero(
    instrumented: Telemetry, client: openai.OpenAI, span_exporter: Any, meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader, redis: RedisServer,
) -> None:
    """Redis stopped: the gauges show exactly the writes and USD waiting; restarted: back to 0, the spend
    counted, nothing lost."""
    engine = engine_on(redis)
    processor = enable_budgets(engine=engine, meter_provider=meter_provider)
    try:
        calls(client, 3, span_exporter)
        assert processor.force_flush()
        points = collect(metric_reader)
        assert value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 0
        assert value(points, names.METRIC_BUDGET_BACKLOG_SPEND) == 0
        assert value(points, names.METRIC_BUDGET_LEDGER_ERRORS, **{names.LLMCOST_BUDGET_LEDGER_PATH: "call"}) == 0
        assert points[names.METRIC_BUDGET_BACKLOG_SPEND + "#meta"][()] == ("Gauge", "USD", None)
        assert points[names.METRIC_BUDGET_BACKLOG_WRITES + "#meta"][()] == ("Gauge", "{write}", None)
        assert points[names.METRIC_BUDGET_BACKLOG_LOST + "#meta"][()] == ("Sum", "USD", True)
        assert points[names.METRIC_BUDGET_BACKLOG_DROPPED + "#meta"][()] == ("Sum", "{write}", True)
        assert points[names.METRIC_BUDGET_LEDGER_ERRORS + "#meta"][()] == ("Sum", "{error}", True)

        redis.stop()
        waiting = calls(client, 5, span_exporter)
        assert processor.force_flush()
        points = collect(metric_reader)
        assert value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 5
        assert value(points, names.METRIC_BUDGET_BACKLOG_SPEND) == float(sum(waiting))
        assert value(points, names.METRIC_BUDGET_BACKLOG_LOST) == 0
        assert value(points, names.METRIC_BUDGET_BACKLOG_DROPPED) == 0
        assert value(points, names.METRIC_BUDGET_LEDGER_ERRORS, **{names.LLMCOST_BUDGET_LEDGER_PATH: "call"}) >= 5
        deadline = time.monotonic() + DEADLINE  # the background retry fails too, with backoff
        while engine.stats.replay_errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        points = collect(metric_reader)
        assert value(points, names.METRIC_BUDGET_LEDGER_ERRORS, **{names.LLMCOST_BUDGET_LEDGER_PATH: "replay"}) > 0

        redis.start()  # same port, empty: only the replayed spend will be in it
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            points = collect(metric_reader)
            if value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 0:
                break
            time.sleep(0.05)
        assert value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 0
        assert value(points, names.METRIC_BUDGET_BACKLOG_SPEND) == 0
        assert value(points, names.METRIC_BUDGET_BACKLOG_LOST) == 0
        assert engine.state()[0].spend == sum(waiting)
    finally:
        processor.shutdown()
        engine.close()


def test_spend_dropped_by_a_full_backlog_shows_in_the_lost_counters(
    instrumented: Telemetry, client: openai.OpenAI, span_exporter: Any, meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader, redis: RedisServer,
) -> None:
    """A backlog of 2 and 5 calls during an outage: 2 wait, 3 are dropped and their exact USD is lost."""
    engine = engine_on(redis, size=2)
    processor = enable_budgets(engine=engine, meter_provider=meter_provider)
    try:
        redis.stop()
        costs = calls(client, 5, span_exporter)
        assert processor.force_flush()
        points = collect(metric_reader)
        assert value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 2
        assert value(points, names.METRIC_BUDGET_BACKLOG_SPEND) == float(sum(costs[:2]))
        assert value(points, names.METRIC_BUDGET_BACKLOG_DROPPED) == 3
        assert value(points, names.METRIC_BUDGET_BACKLOG_LOST) == float(sum(costs[2:]))
        assert sum(costs[2:]) > 0

        redis.start()
        deadline = time.monotonic() + DEADLINE
        while engine.pending()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        points = collect(metric_reader)  # the waiting spend is in; the lost stays lost (a counter)
        assert value(points, names.METRIC_BUDGET_BACKLOG_WRITES) == 0
        assert value(points, names.METRIC_BUDGET_BACKLOG_DROPPED) == 3
        assert value(points, names.METRIC_BUDGET_BACKLOG_LOST) == float(sum(costs[2:]))
        assert engine.state()[0].spend == sum(costs[:2])
    finally:
        processor.shutdown()
        engine.close()


class BlockingSink:
    """An alert sink that holds the processor's worker on the first alert until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, alert: Alert) -> None:
        self.entered.set()
        self.release.wait(DEADLINE)


def test_cost_events_dropped_by_a_full_processor_queue_are_counted(
    instrumented: Telemetry, client: openai.OpenAI, meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    """With the worker held and a queue of 2, 3 more calls' cost events are dropped, and counted as 3."""
    sink = BlockingSink()
    engine = BudgetEngine([Budget("tiny", D("0.000001"))], sinks=[sink])
    processor = BudgetProcessor(engine, telemetry=instrumented, meter_provider=meter_provider, max_queue=2)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "first"}])
        assert sink.entered.wait(DEADLINE), "the first call's cost should cross the tiny budget and alert"
        for i in range(5):  # 2 fit in the queue, 3 do not
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
        points = collect(metric_reader)
        assert value(points, names.METRIC_BUDGET_EVENTS_DROPPED) == 3 == processor.dropped
        assert points[names.METRIC_BUDGET_EVENTS_DROPPED + "#meta"][()] == ("Sum", "{event}", True)
    finally:
        sink.release.set()
        processor.shutdown()
        engine.close()


class FailingHealthEngine(BudgetEngine):
    """An engine whose backlog cannot be read (the failure an observation callback must swallow)."""

    def pending(self) -> tuple[int, Decimal]:
        raise RuntimeError("backlog unreadable")


def test_a_failing_health_read_never_breaks_the_export(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture,
) -> None:
    """The health instruments report nothing, the budget gauges still export, and it is logged once."""
    engine = FailingHealthEngine([Budget("daily", D("10"))], sinks=[])
    processor = BudgetProcessor(engine, meter_provider=meter_provider)
    try:
        with caplog.at_level(logging.ERROR, logger="otel_llmcost.budget.processor"):
            for _ in range(3):
                points = collect(metric_reader)
                assert value(points, names.METRIC_BUDGET_UTILIZATION,
                             **{"llmcost.budget.name": "daily", "llmcost.budget.scope": "global"}) == 0
                assert not points.get(names.METRIC_BUDGET_BACKLOG_WRITES)
                assert value(points, names.METRIC_BUDGET_EVENTS_DROPPED) == 0
        failures = [r for r in caplog.records if "ledger's health" in r.getMessage()]
        assert len(failures) == 1
    finally:
        processor.shutdown()
        engine.close()
