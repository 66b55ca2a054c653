"""`BudgetProcessor`: the in-process companion that applies budgets to the cost stream.

It is fed where the instrumentation records the `llmcost.cost` metric — every call, sampled or not —
with the call's full attribution (user and tenant ids included, even when they are kept off exported
metrics for cardinality). As an OpenTelemetry `SpanProcessor` it also prices GenAI spans made by code we
do not wrap (another instrumentation, an SDK that traces itself), from their `gen_ai.*` attributes; that
spend is only seen when the span is sampled, so it is marked `llmcost.spend.source=sampled_span`.
Budget state is exported as observable gauges, and the ledger's health (spend waiting for it in an
outage, spend lost for good, errors) as gauges and observable counters. Ledger writes happen on a worker thread: `on_end` and
the app's call path never wait for a ledger (a Redis round trip), never block, never raise.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation, get_meter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import names
from ..pricing import PriceCatalog, UnknownPriceError
from ..pricing.usage import from_genai_attributes
from ..telemetry import SCOPE, CallResult, Telemetry, recent_call_spans
from .engine import BudgetEngine
from .health import DESCRIPTIONS, LedgerHealth, ledger_health
from .otel_sink import OpenTelemetrySink

_log = logging.getLogger(__name__)

SPEND_SOURCE = "llmcost.spend.source"
_ATTRIBUTION = (names.LLMCOST_USER_ID, names.LLMCOST_TENANT_ID, names.LLMCOST_USER_TIER, names.LLMCOST_FEATURE,
                names.GEN_AI_PROVIDER_NAME, names.GEN_AI_REQUEST_MODEL, names.GEN_AI_RESPONSE_MODEL,
                names.GEN_AI_OPERATION_NAME)
_STOP = object()


class BudgetProcessor(SpanProcessor):
    """Budgets applied in-process: see the module docstring.

    `enforce=True` also puts the budget breaker in the call path of every instrumented SDK (throttle →
    cheaper model, stop → refuse with `BudgetExceededError`, reserve before / settle after each call);
    the cost guard, when configured, does this instead.
    """

    def __init__(
        self,
        engine: BudgetEngine,
        *,
        telemetry: Telemetry | None = None,
        catalog: PriceCatalog | None = None,
        meter_provider: MeterProvider | None = None,
        price_foreign_spans: bool = True,
        max_queue: int = 100_000,
    ) -> None:
        self.engine = engine
        self.catalog = catalog or (telemetry.catalog if telemetry else PriceCatalog())
        self.price_foreign_spans = price_foreign_spans
        self.dropped = 0
        self.foreign_spans_priced = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._telemetry: Telemetry | None = None
        self._shutdown = False
        self._health_failed = False
        self._worker = threading.Thread(target=self._run, name="llmcost-budget", daemon=True)
        self._worker.start()
        meter = get_meter("otel_llmcost.budget", meter_provider=meter_provider)
        meter.create_observable_gauge(names.METRIC_BUDGET_UTILIZATION, [self._observe_utilization], unit="1",
                                      description="Spend over the budget amount in the current window (0..1+).")
        meter.create_observable_gauge("llmcost.budget.spend", [self._observe_spend], unit="USD",
                                      description="Spend counted against a budget in its current window.")
        meter.create_observable_gauge("llmcost.budget.limit", [self._observe_limit], unit="USD",
                                      description="The budget amount of the current window.")
        meter.create_observable_gauge("llmcost.budget.level", [self._observe_level], unit="{level}",
                                      description="Budget level: 0 ok, 1 warn, 2 throttle, 3 stop.")
        meter.create_observable_gauge(names.METRIC_BUDGET_PROJECTED, [self._observe_projected], unit="USD",
                                      description="Spend projected at the end of the window at the rate so far.")
        self._register_health(meter)
        if telemetry is not None:
            self.attach(telemetry)

    # -- feeding -----------------------------------------------------------------------------------
    def attach(self, telemetry: Telemetry) -> None:
        """Receive every priced call the instrumentation records."""
        self.detach()
        self._telemetry = telemetry
        telemetry.add_listener(self.on_call)

    def detach(self) -> None:
        if self._telemetry is not None:
            self._telemetry.remove_listener(self.on_call)
            self._telemetry = None

    def on_call(self, result: CallResult) -> None:
        """A call finished (from the telemetry); its cost goes to the ledger unless a guard settled it."""
        if result.cost is None or result.settled:
            return
        self._enqueue((result.cost.total, _attribution(result.attributes), datetime.now(timezone.utc)))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        """Price a GenAI span that no instrumented call of ours covers."""
        if not self.price_foreign_spans:
            return
        try:
            scope = span.instrumentation_scope
            if scope is not None and scope.name == SCOPE:
                return
            attrs = span.attributes or {}
            if names.GEN_AI_USAGE_INPUT_TOKENS not in attrs and names.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs:
                return
            if span.parent is not None and span.parent.span_id in recent_call_spans:
                return  # the SDK's own span inside a call we priced already
            self._enqueue(("span", dict(attrs), span.end_time))
        except Exception:
            _log.debug("budget processor: reading a span failed", exc_info=True)

    def _enqueue(self, item: Any) -> None:
        if self._shutdown:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _log.warning("budget processor: queue full, %d cost events dropped so far", self.dropped)

    # -- worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], threading.Event):
                    item[0].set()
                elif item[0] == "span":
                    self._price_span(item[1], item[2])
                else:
                    cost, attributes, at = item
                    self.engine.record_cost(cost, attributes, at)
            except Exception:
                _log.exception("budget processor: a cost event could not be applied")
            finally:
                self._queue.task_done()

    def _price_span(self, attrs: Mapping[str, Any], end_time: int | None) -> None:
        usage = from_genai_attributes(attrs)
        if usage is None:
            return
        model = attrs.get(names.GEN_AI_RESPONSE_MODEL) or attrs.get(names.GEN_AI_REQUEST_MODEL)
        provider = attrs.get(names.GEN_AI_PROVIDER_NAME) or attrs.get("gen_ai.system")
        if not isinstance(model, str):
            return
        cost_attr = attrs.get(names.GEN_AI_USAGE_COST)
        if isinstance(cost_attr, (int, float)) and not isinstance(cost_attr, bool) and cost_attr >= 0:
            cost = Decimal(str(cost_attr))  # another tool priced it already
        else:
            try:
                cost = self.catalog.cost(usage, model, provider if isinstance(provider, str) else None).total
            except UnknownPriceError:
                return
        at = datetime.fromtimestamp(end_time / 1e9, timezone.utc) if end_time else datetime.now(timezone.utc)
        attributes = _attribution(attrs)
        attributes[SPEND_SOURCE] = "sampled_span"
        self.foreign_spans_priced += 1
        self.engine.record_cost(cost, attributes, at)

    # -- export ------------------------------------------------------------------------------------
    def _observations(self, value: str) -> Iterable[Observation]:
        for status in self.engine.state():
            attrs = {"llmcost.budget.name": status.budget, "llmcost.budget.scope": status.scope_key}
            if value == "utilization":
                yield Observation(status.utilization, attrs)
            elif value == "spend":
                yield Observation(float(status.spend), attrs)
            elif value == "limit":
                yield Observation(float(status.limit), attrs)
            elif value == "projected":
                if status.forecast is not None:  # none for rolling windows, or too early in the window
                    yield Observation(float(status.forecast), attrs)
            else:
                yield Observation(int(status.level), {**attrs, names.LLMCOST_BUDGET_LEVEL: status.level.label})

    def _observe_utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations("utilization"))

    def _observe_spend(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations("spend"))

    def _observe_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations("limit"))

    def _observe_level(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations("level"))

    def _observe_projected(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations("projected"))

    # -- the ledger's health -------------------------------------------------------------------------
    def _register_health(self, meter: Meter) -> None:
        """Instruments that show a ledger outage and spend lost for good, which otherwise only the logs say.

        Gauges for what waits now; observable counters (monotonic, cumulative) for totals since start,
        so `increase()` over them works in Prometheus as for any counter.
        """
        gauge, counter = meter.create_observable_gauge, meter.create_observable_counter
        for create, name, callback, unit in (
            (gauge, names.METRIC_BUDGET_BACKLOG_SPEND, self._observe_backlog_spend, "USD"),
            (gauge, names.METRIC_BUDGET_BACKLOG_WRITES, self._observe_backlog_writes, "{write}"),
            (counter, names.METRIC_BUDGET_BACKLOG_LOST, self._observe_lost, "USD"),
            (counter, names.METRIC_BUDGET_BACKLOG_DROPPED, self._observe_dropped_writes, "{write}"),
            (counter, names.METRIC_BUDGET_LEDGER_ERRORS, self._observe_ledger_errors, "{error}"),
            (counter, names.METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS, self._observe_journal_errors, "{error}"),
        ):
            create(name, [callback], unit=unit, description=DESCRIPTIONS[name])
        counter(names.METRIC_BUDGET_EVENTS_DROPPED, [self._observe_events_dropped], unit="{event}",
                description="Cost events the budget processor dropped because its queue was full.")

    def _health(self, pick: Callable[[LedgerHealth], list[Observation]]) -> list[Observation]:
        """Observations from one health snapshot; an export must never fail on them (logged once)."""
        try:
            return pick(ledger_health(self.engine))
        except Exception:
            if not self._health_failed:
                self._health_failed = True
                _log.exception("budget processor: reading the ledger's health for the metrics failed")
            return []

    def _observe_backlog_spend(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [Observation(float(h.waiting_usd))])

    def _observe_backlog_writes(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [Observation(h.waiting_writes)])

    def _observe_lost(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [Observation(float(h.lost_usd))])

    def _observe_dropped_writes(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [Observation(h.dropped_writes)])

    def _observe_ledger_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [
            Observation(h.call_errors, {names.LLMCOST_BUDGET_LEDGER_PATH: "call"}),
            Observation(h.replay_errors, {names.LLMCOST_BUDGET_LEDGER_PATH: "replay"}),
        ])

    def _observe_journal_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._health(lambda h: [Observation(h.journal_errors)])

    def _observe_events_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.dropped)]

    # -- lifecycle ---------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every queued cost event has reached the ledger."""
        if self._shutdown:
            return True
        done = threading.Event()
        try:
            self._queue.put((done, None), timeout=timeout_millis / 1000)
        except queue.Full:
            return False
        return done.wait(timeout_millis / 1000) and self.engine.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self.force_flush()
        self._shutdown = True
        self.detach()
        self._queue.put(_STOP)
        self._worker.join(timeout=5)


def _attribution(attrs: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(attrs[key]) for key in _ATTRIBUTION if attrs.get(key) is not None}


def enable_budgets(
    config: Any = None,
    *,
    engine: BudgetEngine | None = None,
    telemetry: Telemetry | None = None,
    tracer_provider: Any = None,
    meter_provider: MeterProvider | None = None,
    enforce: bool = False,
    otel_alerts: bool = True,
) -> BudgetProcessor:
    """Budgets in this process, in one call.

    `config`: a `BudgetConfig` or YAML path (default `$OTEL_LLMCOST_CONFIG`), or pass a ready `engine`.
    The processor is fed by the instrumentation's telemetry (from `otel_llmcost.instrument()`), prices
    other tools' GenAI spans when `tracer_provider` is given, exports budget gauges on `meter_provider`,
    and with `enforce=True` puts the budget breaker in the call path. Alerts also go out as
    OpenTelemetry log records and spans unless `otel_alerts=False`.
    """
    from ..telemetry import current_telemetry
    from .breaker import BudgetBreaker

    telemetry = telemetry or current_telemetry()
    if telemetry is None:
        raise RuntimeError("no instrumentation to take costs from: call otel_llmcost.instrument() first")
    engine = engine or BudgetEngine.from_config(config)
    if otel_alerts and not any(isinstance(sink, OpenTelemetrySink) for sink in engine.sinks):
        engine.sinks.append(OpenTelemetrySink(tracer_provider=tracer_provider))
    processor = BudgetProcessor(engine, telemetry=telemetry, meter_provider=meter_provider)
    if tracer_provider is not None:
        tracer_provider.add_span_processor(processor)
    if enforce:
        telemetry.guard = BudgetBreaker(engine, telemetry.catalog)
    return processor
