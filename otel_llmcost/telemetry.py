"""Records one LLM call: a CLIENT span with GenAI attributes and cost, and the metrics.

Every instrumentor goes through `Telemetry.start()` → `Call.finish()` / `Call.fail()`, so a call is
priced, named and counted the same way whichever SDK made it, and counted once. Budgets and reports
work from the metrics (every call records them; traces may be sampled); the span carries per-call
detail. Cost listeners (the in-process budget engine) get every priced call with its full attribution,
including the user ids that metrics leave out for cardinality.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from . import context as attribution
from . import names
from .pricing import Cost, PriceCatalog, UnknownPriceError, Usage

_log = logging.getLogger(__name__)

SCOPE = "otel_llmcost"
_SCOPE_VERSION = "0.1.0"

CostListener = Callable[["CallResult"], None]


@dataclass(frozen=True, slots=True)
class Served:
    """A guard's answer in place of the provider's (a cache hit): the app gets `result`, the provider
    is not called, the call costs nothing and `saved` is what it would have cost."""

    result: Any
    cache_status: str
    saved: Decimal | None = None
    response_model: str | None = None


class Guard(Protocol):
    """A cost control in the call path (budget breaker, cost guard), run before the provider is called."""

    def before(self, call: Call, kwargs: dict[str, Any], endpoint: Any, asynchronous: bool) -> dict[str, Any] | Served:
        """Return the keyword arguments to call the SDK with (a cheaper model, say), a `Served` answer
        (the provider is not called), or raise a `CallRefused` to refuse the call. `endpoint` is the
        instrumentation's description of the SDK method. Work that must happen when the call ends goes
        in `call.on_end`."""


class _RecentCallSpans:
    """Span ids of recent calls we traced, so that a GenAI span another tool made *inside* one of our
    calls (the `anthropic` SDK traces itself) is known to be the same call and is not counted twice."""

    def __init__(self, size: int = 65536) -> None:
        self._ring: list[int] = [0] * size
        self._set: set[int] = set()
        self._next = 0
        self._lock = threading.Lock()

    def add(self, span_id: int) -> None:
        with self._lock:
            old = self._ring[self._next]
            self._set.discard(old)
            self._ring[self._next] = span_id
            self._set.add(span_id)
            self._next = (self._next + 1) % len(self._ring)

    def __contains__(self, span_id: object) -> bool:
        return span_id in self._set


recent_call_spans = _RecentCallSpans()


@dataclass(frozen=True, slots=True)
class CallResult:
    """A finished, priced call as cost listeners see it."""

    provider: str
    operation: str
    request_model: str
    response_model: str | None
    usage: Usage
    cost: Cost | None
    attributes: Mapping[str, Any]
    """Attribution (user, tenant, tier, feature) and GenAI names, as on the span."""
    cache_status: str | None = None
    saved: Decimal | None = None
    settled: bool = False
    """True when a guard already put this call's cost in the budget ledger (reserve, then settle)."""


def status_description(error: BaseException) -> str:
    """What a failed call's span status says: the error's class and HTTP status, never its message.

    A provider's error message may quote the request (the prompt, the API key: OpenAI's 401 names the key
    it got), so it stays in the exception the app receives. Our own refusals (budget, rate limit) say
    nothing private and keep their message, which is what an operator needs.
    """
    from .errors import CallRefused

    if isinstance(error, CallRefused):
        return str(error)[:200]
    status = getattr(error, "status_code", None) or getattr(error, "code", None)
    name = type(error).__qualname__
    return f"{name} (HTTP {status})" if isinstance(status, int) and not isinstance(status, bool) else name


_current: Telemetry | None = None


def current_telemetry() -> Telemetry | None:
    """The telemetry the instrumentors use now (the last one `instrument()` built), if any."""
    return _current


def set_current_telemetry(telemetry: Telemetry | None) -> None:
    global _current
    _current = telemetry


class Telemetry:
    """The tracer, the instruments and the price catalog that every instrumented call shares."""

    def __init__(
        self,
        *,
        catalog: PriceCatalog,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool = False,
        metrics_include_user: bool = False,
        fingerprints: bool = True,
    ) -> None:
        self.catalog = catalog
        self.capture_content = capture_content
        self.fingerprints = fingerprints
        """Record keyed prompt hashes and the complexity class for the savings advisor (no text)."""
        self.metric_keys = names.METRIC_ATTRIBUTION_KEYS + (
            names.HIGH_CARDINALITY_ATTRIBUTION_KEYS if metrics_include_user else ()
        )
        self.tracer = trace.get_tracer(SCOPE, _SCOPE_VERSION, tracer_provider=tracer_provider)
        meter = get_meter(SCOPE, _SCOPE_VERSION, meter_provider=meter_provider)
        self.token_usage = meter.create_histogram(
            names.METRIC_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=names.TOKEN_USAGE_BUCKETS,
        )
        self.duration = meter.create_histogram(
            names.METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=names.DURATION_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            names.METRIC_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=names.DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(names.METRIC_COST, unit="USD", description="Cost of GenAI calls.")
        self.cost_saved = meter.create_counter(
            names.METRIC_COST_SAVED, unit="USD", description="Cost that cache hits avoided."
        )
        self.unknown_price = meter.create_counter(
            names.METRIC_UNKNOWN_PRICE_CALLS, unit="{call}", description="Calls whose model has no known price."
        )
        self.cache_read_tokens = meter.create_counter(
            names.METRIC_CACHED_INPUT_TOKENS, unit="{token}", description="Input tokens read from the provider's prompt cache."
        )
        self.cache_write_tokens = meter.create_counter(
            names.METRIC_CACHE_WRITE_TOKENS, unit="{token}", description="Input tokens written to the provider's prompt cache."
        )
        self.reasoning_tokens = meter.create_counter(
            names.METRIC_REASONING_TOKENS, unit="{token}", description="Output tokens spent on reasoning."
        )
        self.ratelimit_rejections = meter.create_counter(
            names.METRIC_RATELIMIT_REJECTIONS, unit="{call}", description="Calls refused by a rate limit."
        )
        self.cache_lookups = meter.create_counter(
            names.METRIC_CACHE_LOOKUPS, unit="{lookup}", description="Response cache lookups by outcome."
        )
        self.cache_semantic_refusals = meter.create_counter(
            names.METRIC_CACHE_SEMANTIC_REFUSALS, unit="{lookup}",
            description="Semantic cache lookups whose close match a false-hit guard refused (then a miss).",
        )
        self.prompt_cache_saved = meter.create_counter(
            names.METRIC_PROMPT_CACHE_SAVED, unit="USD",
            description="What the provider's prompt cache saved: cache-read tokens priced as plain input, less their price.",
        )
        self.route_decisions = meter.create_counter(
            names.METRIC_ROUTE_DECISIONS, unit="{call}",
            description="The cost guard's routing decisions: model kept, routed by complexity, or budget downgrade.",
        )
        self.listeners: list[CostListener] = []
        self.guard: Guard | None = None
        self._warned_models: set[tuple[str, str]] = set()
        self._warn_lock = threading.Lock()

    def add_listener(self, listener: CostListener) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: CostListener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def start(
        self,
        provider: str,
        operation: str,
        request_model: str,
        request_attributes: Mapping[str, Any] | None = None,
    ) -> Call:
        """Open the span for one call and make it current, so spans the SDK makes become its children."""
        attrs: dict[str, Any] = {
            names.GEN_AI_OPERATION_NAME: operation,
            names.GEN_AI_PROVIDER_NAME: provider,
            names.GEN_AI_REQUEST_MODEL: request_model,
        }
        if request_attributes:
            attrs.update(request_attributes)
        who = attribution.current()
        if who:
            attrs.update(who)
        span = self.tracer.start_span(f"{operation} {request_model}", kind=SpanKind.CLIENT, attributes=attrs)
        if span.is_recording():
            recent_call_spans.add(span.get_span_context().span_id)
        return Call(self, span, provider, operation, request_model, who)

    def warn_unknown_price(self, model: str, provider: str, error: UnknownPriceError) -> None:
        key = (model, provider)
        if key in self._warned_models:
            return
        with self._warn_lock:
            if key in self._warned_models:
                return
            self._warned_models.add(key)
        _log.warning("otel-llmcost: %s; these calls are counted in %s and marked %s=false",
                     error, names.METRIC_UNKNOWN_PRICE_CALLS, names.LLMCOST_PRICE_KNOWN)


class Call:
    """One call in flight. Exactly one of finish() / fail() ends it; later calls are ignored."""

    __slots__ = ("telemetry", "span", "provider", "operation", "request_model", "who", "started",
                 "first_chunk_at", "ended", "_token", "cache_status", "saved", "extra", "_on_end", "settled",
                 "response", "chunks")

    def __init__(self, telemetry: Telemetry, span: Span, provider: str, operation: str, request_model: str,
                 who: Mapping[str, str]) -> None:
        self.telemetry = telemetry
        self.span = span
        self.provider = provider
        self.operation = operation
        self.request_model = request_model
        self.who = who
        self.started = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.ended = False
        self.cache_status: str | None = None
        self.saved: Decimal | None = None
        self.extra: dict[str, Any] = {}
        self._token: object | None = None
        self._on_end: list[Callable[[CallResult | None, BaseException | None], None]] = []
        self.settled = False
        self.response: Any = None
        """The SDK's response object, once it arrived (not for streams); for end-of-call callbacks."""
        self.chunks: list[Any] | None = None
        """Set to a list to have a stream's chunks collected in it (a cache stores them)."""

    def on_end(self, callback: Callable[[CallResult | None, BaseException | None], None]) -> None:
        """Run `callback(result, error)` once when the call ends (a guard settles its reservations here).

        For a stream that is when the stream ends, not when `create` returns.
        """
        self._on_end.append(callback)

    def _ended(self, result: CallResult | None, error: BaseException | None) -> None:
        for callback in self._on_end:
            try:
                callback(result, error)
            except Exception:
                _log.exception("otel-llmcost: an end-of-call callback failed")

    def reroute(self, model: str, from_model: str) -> None:
        """The call goes to `model` instead of `from_model` (budget throttle, routing): say so on the span."""
        self.request_model = model
        self.span.update_name(f"{self.operation} {model}")
        self.span.set_attribute(names.GEN_AI_REQUEST_MODEL, model)
        self.span.set_attribute(names.LLMCOST_ROUTE_FROM_MODEL, from_model)

    def route_decided(self, from_model: str, kind: str) -> None:
        """Count the guard's routing decision for this call (`llmcost.route.decisions`), so dashboards can
        show the share of calls routed and downgraded; the call's request model is the model chosen."""
        attrs = self._metric_attributes(None)
        attrs[names.LLMCOST_ROUTE_FROM_MODEL] = from_model
        attrs[names.LLMCOST_ROUTE_KIND] = kind
        self.telemetry.route_decisions.add(1, attrs)

    # -- context ---------------------------------------------------------------------------------
    def activate(self) -> None:
        """Make the span current while the SDK runs (its own spans and HTTP spans nest under ours)."""
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def deactivate(self) -> None:
        if self._token is not None:
            token, self._token = self._token, None
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:  # a generator finished on another context; nothing to restore
                _log.debug("otel-llmcost: context detach failed", exc_info=True)

    # -- streaming -------------------------------------------------------------------------------
    def serve(self, served: Served) -> None:
        """End the call as answered by a guard: no tokens billed, cost 0, the saving recorded."""
        self.cache_status = served.cache_status
        self.saved = served.saved
        self.finish(Usage(), served.response_model)

    def chunk_received(self) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()

    # -- ending ----------------------------------------------------------------------------------
    def _metric_attributes(self, response_model: str | None, error_type: str | None = None) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            names.GEN_AI_OPERATION_NAME: self.operation,
            names.GEN_AI_PROVIDER_NAME: self.provider,
            names.GEN_AI_REQUEST_MODEL: self.request_model,
        }
        if response_model:
            attrs[names.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type:
            attrs[names.ERROR_TYPE] = error_type
        who = self.who
        if who:
            for key in self.telemetry.metric_keys:
                value = who.get(key)
                if value is not None:
                    attrs[key] = value
        return attrs

    def finish(
        self,
        usage: Usage | None,
        response_model: str | None = None,
        response_attributes: Mapping[str, Any] | None = None,
        *,
        batch: bool = False,
        incomplete: bool = False,
        estimated: bool = False,
        unpriced: bool = False,
        error_type: str | None = None,
    ) -> CallResult | None:
        """Price the call, set the span's usage and cost, record the metrics, end the span; returns
        what end-of-call callbacks and listeners were given (None when there were none).

        `unpriced`: the response could not be read, so the call has no usage; it is counted as a call
        with an unknown price rather than passing as free.
        """
        if self.ended:
            return None
        self.ended = True
        self.deactivate()
        tel = self.telemetry
        span = self.span
        end = time.perf_counter()
        model = response_model or self.request_model
        span_attrs: dict[str, Any] = dict(response_attributes) if response_attributes else {}
        if response_model:
            span_attrs[names.GEN_AI_RESPONSE_MODEL] = response_model
        if self.extra:
            span_attrs.update(self.extra)
        metric_attrs = self._metric_attributes(response_model, error_type)
        cost: Cost | None = None
        if usage is not None:
            span_attrs[names.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            span_attrs[names.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
            if usage.cache_read_tokens:
                span_attrs[names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
            if usage.cache_write_tokens:
                span_attrs[names.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_tokens
            if usage.reasoning_tokens:
                span_attrs[names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
            try:
                cost = tel.catalog.cost(usage, model, self.provider, batch=batch)
            except UnknownPriceError as exc:
                if model != self.request_model:
                    # A dated snapshot the catalog lacks: the requested alias may be priced.
                    with contextlib.suppress(UnknownPriceError):
                        cost = tel.catalog.cost(usage, self.request_model, self.provider, batch=batch)
                if cost is None:
                    tel.warn_unknown_price(model, self.provider, exc)
            if cost is not None:
                span_attrs[names.GEN_AI_USAGE_COST] = float(cost.total)
                span_attrs[names.LLMCOST_PRICE_KNOWN] = True
                span_attrs[names.LLMCOST_PRICE_SOURCE] = cost.source
            else:
                span_attrs[names.LLMCOST_PRICE_KNOWN] = False
            if batch:
                span_attrs[names.LLMCOST_BATCH] = True
            if estimated:
                span_attrs[names.LLMCOST_USAGE_ESTIMATED] = True
        elif unpriced:
            span_attrs[names.LLMCOST_PRICE_KNOWN] = False
        if incomplete:
            span_attrs[names.LLMCOST_STREAM_INCOMPLETE] = True
        if self.cache_status is not None:
            span_attrs[names.LLMCOST_CACHE_STATUS] = self.cache_status
        if self.saved is not None:
            span_attrs[names.LLMCOST_COST_SAVED] = float(self.saved)
        if self.first_chunk_at is not None:
            span_attrs[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_chunk_at - self.started
        span.set_attributes(span_attrs)
        span.end()

        tel.duration.record(end - self.started, metric_attrs)
        if self.first_chunk_at is not None:
            tel.time_to_first_chunk.record(self.first_chunk_at - self.started, metric_attrs)
        if self.saved:
            tel.cost_saved.add(float(self.saved), metric_attrs)
        if usage is not None:
            tel.token_usage.record(usage.input_tokens, {**metric_attrs, names.GEN_AI_TOKEN_TYPE: "input"})
            tel.token_usage.record(usage.output_tokens, {**metric_attrs, names.GEN_AI_TOKEN_TYPE: "output"})
            if usage.cache_read_tokens:
                tel.cache_read_tokens.add(usage.cache_read_tokens, metric_attrs)
            if usage.cache_write_tokens:
                tel.cache_write_tokens.add(usage.cache_write_tokens, metric_attrs)
            if usage.reasoning_tokens:
                tel.reasoning_tokens.add(usage.reasoning_tokens, metric_attrs)
            if cost is not None:
                tel.cost.add(float(cost.total), metric_attrs)
                if usage.cache_read_tokens:
                    self._record_prompt_cache_saving(usage, cost, model, batch, metric_attrs)
            else:
                tel.unknown_price.add(1, metric_attrs)
        elif unpriced:
            tel.unknown_price.add(1, metric_attrs)
        if not self._on_end and not tel.listeners:
            return None  # nobody to tell: the common case stays cheap
        result = CallResult(self.provider, self.operation, self.request_model, response_model,
                            usage or Usage(), cost, {**metric_attrs, **self.who}, self.cache_status, self.saved)
        if self._on_end:
            self._ended(result, None)
            if self.settled:
                result = dataclasses.replace(result, settled=True)
        for listener in tel.listeners:
            try:
                listener(result)
            except Exception:
                _log.exception("otel-llmcost: cost listener %r failed", listener)
        return result

    def _record_prompt_cache_saving(self, usage: Usage, cost: Cost, model: str, batch: bool,
                                    metric_attrs: Mapping[str, Any]) -> None:
        """`llmcost.prompt_cache.saved`: the call priced as if its cache reads were plain input, less its
        price; a metric of its own because the cache writes' premium is already in `llmcost.cost`."""
        try:
            uncached = dataclasses.replace(usage, cache_read_tokens=0)
            saved = self.telemetry.catalog.cost(uncached, cost.model, self.provider, batch=batch).total - cost.total
        except Exception:  # a price that cannot be recomputed leaves the saving unknown, never wrong
            _log.debug("otel-llmcost: pricing the prompt-cache saving of %s failed", model, exc_info=True)
            return
        if saved > 0:
            self.telemetry.prompt_cache_saved.add(float(saved), metric_attrs)

    def fail(self, error: BaseException, usage: Usage | None = None, response_model: str | None = None) -> None:
        """End the call as failed: `error.type` and ERROR status; tokens billed before the error count."""
        if self.ended:
            return
        error_type = type(error).__qualname__
        if usage is not None:
            self.span.set_attribute(names.ERROR_TYPE, error_type)
            self.span.set_status(Status(StatusCode.ERROR, status_description(error)))
            self.finish(usage, response_model, incomplete=True, error_type=error_type)
            return
        self.ended = True
        self.deactivate()
        self.span.set_attributes({**self.extra, names.ERROR_TYPE: error_type})
        self.span.set_status(Status(StatusCode.ERROR, status_description(error)))
        self.span.end()
        self.telemetry.duration.record(time.perf_counter() - self.started,
                                       self._metric_attributes(response_model, error_type))
        if self._on_end:
            self._ended(None, error)
