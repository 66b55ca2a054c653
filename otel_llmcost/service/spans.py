"""GenAI spans → priced calls, and which of them count against budgets.

A span with GenAI usage attributes (`gen_ai.usage.input_tokens` / `output_tokens`, cache and reasoning
shares; whoever wrote them) is priced by model, or taken at its `gen_ai.usage.cost` when another tool
priced it already. Spans give per-call detail; budgets are fed from metrics, which every call records
whatever the trace sampling. So whether a span's cost also counts against budgets is a setting
(`processor.span_accounting`), never a guess that could count a call twice:

* ``off`` (default): spans are priced and counted in `/metrics`, budgets come from metrics only;
* ``foreign``: spans not made by otel-llmcost count too — for apps whose instrumentation sends no token
  metrics. Our own spans never count here (our `llmcost.cost` metric covers them), nor do spans whose
  parent is one of ours in the same export (an SDK's own span inside a call we priced);
* ``all``: every priced span counts — for apps that send traces unsampled and no metrics at all.

Counted spans are deduplicated by trace id + span id (behind their end time, see `events.mark_key`), so a
resent batch counts once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import filterfalse
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import names
from ..budget.policy import DIMENSIONS
from .attributes import all_attributes, as_text
from .events import MAX_FUTURE_NS, MAX_UNITS, SOURCE_SPAN, SPAN, CostEvent, usd_units
from .lite import AttributeCache
from .pricing import ServicePricer

SpanAccounting = Literal["off", "foreign", "all"]
SPAN_ACCOUNTING_MODES: tuple[str, ...] = ("off", "foreign", "all")
_OWN_SCOPE = "otel_llmcost"
_INPUT = names.GEN_AI_USAGE_INPUT_TOKENS
_OUTPUT = names.GEN_AI_USAGE_OUTPUT_TOKENS
_CACHE_READ = names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_CACHE_WRITE = names.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
_CACHE_CREATION = names.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
_REASONING = names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
_COST = names.GEN_AI_USAGE_COST
_RESPONSE_MODEL = names.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = names.GEN_AI_REQUEST_MODEL
_PROVIDER = names.GEN_AI_PROVIDER_NAME
_MISSING: Any = object()
USAGE_KEYS = frozenset({_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _CACHE_CREATION, _REASONING, _COST,
                         _RESPONSE_MODEL, _REQUEST_MODEL, _PROVIDER, "gen_ai.system"})


def attribution_keys(dimensions: Iterable[str]) -> frozenset[str]:
    """The attributes budgets are scoped by (the only ones a span's attribution needs)."""
    keys: set[str] = set()
    for dimension in dimensions:
        keys.update(DIMENSIONS.get(dimension, (dimension,)))
    return frozenset(keys)


@dataclass
class SpansBatch:
    """The priced spans of one export request and the counts of the rest."""

    events: list[CostEvent] = field(default_factory=list)
    spans: int = 0
    priced: int = 0
    unpriced: int = 0
    invalid: int = 0
    units_priced: int = 0
    errors: list[str] = field(default_factory=list)


def _tokens(attrs: dict[str, Any], key: str) -> int:
    value = attrs.get(key, 0)
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"{key}={value!r} is not a token count")
    return int(value)


def extract_spans(request: Any, pricer: ServicePricer, mode: str = "off",
                  wanted: frozenset[str] = frozenset(), cache: AttributeCache | None = None,
                  max_future_ns: int = MAX_FUTURE_NS) -> SpansBatch:
    """Price the GenAI spans of a trace request (`lite.LiteTraceRequest`); events for those that count.

    `wanted`: the attributes budgets are scoped by (`attribution_keys`); resource attributes among them
    apply to every span of the resource, span attributes win. This is the processor's hot loop: it is
    written flat (no call per attribute, one dict look-up per repeated attribute, integer pricing for
    plain per-token prices), and falls back to `_price` for anything unusual.
    """
    batch = SpansBatch()
    if cache is None or cache.scoped != wanted:
        cache = AttributeCache(USAGE_KEYS, wanted)
    tables = cache.tables()
    known, usage_pairs, scoped_pairs = tables
    is_known = known.__contains__
    usage_get = usage_pairs.get
    scoped_get = scoped_pairs.get
    unread = cache.unread
    rates = pricer.integer_rates_today()
    events = batch.events
    priced = units_priced = 0
    horizon = time.time_ns() + max_future_ns
    for resource_spans in request.resource_spans:
        resource_attributes = Resource.FromString(resource_spans.resource).attributes
        resource = {k: as_text(v) for k, v in all_attributes(resource_attributes).items()
                    if v is not None and k in wanted}
        scopes = [(InstrumentationScope.FromString(ss.scope).name, ss.spans) for ss in resource_spans.scope_spans]
        ours: set[bytes] = set()
        if mode == "foreign":
            for name, spans in scopes:
                if name == _OWN_SCOPE:
                    ours.update(span.span_id for span in spans)
        for name, spans in scopes:
            own_scope = name == _OWN_SCOPE
            batch.spans += len(spans)
            for span in spans:
                attributes = list(span.attributes)  # one bytes object each (its hash is then cached)
                # Only the attributes not seen before take a Python step (usually one: the response id,
                # which nobody reads); a span whose read attributes are all cached is read by C `map`s.
                try:
                    for raw in filterfalse(is_known, attributes):
                        if not unread(raw):
                            cache.remember(raw, cache.parse(raw), tables)
                except ValueError as exc:
                    batch.invalid += 1
                    if len(batch.errors) < 5:
                        batch.errors.append(str(exc))
                    continue
                usage: dict[str, Any] = dict(filter(None, map(usage_get, attributes)))
                if not usage:
                    continue
                units: int | None = None
                tokens_in = usage.get(_INPUT, 0)
                tokens_out = usage.get(_OUTPUT, 0)
                read = usage.get(_CACHE_READ, 0)
                write = usage.get(_CACHE_WRITE, 0) or usage.get(_CACHE_CREATION, 0)
                if (_INPUT in usage or _OUTPUT in usage) and _COST not in usage \
                        and type(tokens_in) is int and type(tokens_out) is int \
                        and type(read) is int and type(write) is int \
                        and tokens_in >= read + write and read >= 0 and write >= 0 and tokens_out >= 0:
                    model = usage.get(_RESPONSE_MODEL) or usage.get(_REQUEST_MODEL)
                    provider = usage.get(_PROVIDER) or usage.get("gen_ai.system")
                    rate = rates.get((model, provider), _MISSING) if type(model) is str and model else None
                    if rate is _MISSING:
                        rate = pricer._integer_rates(str(model), provider if type(provider) is str else None)
                    if rate is not None and tokens_in <= rate[4]:  # beyond: a higher price tier
                        pico = ((tokens_in - read - write) * rate[0] + read * rate[1] + write * rate[2]
                                + tokens_out * rate[3])
                        units, rest = divmod(pico, 1000)
                        if rest > 500 or (rest == 500 and units & 1):  # half to even, as Decimal rounds
                            units += 1
                if units is None:
                    if _INPUT not in usage and _OUTPUT not in usage and _COST not in usage:
                        continue  # model or provider attributes alone: not a call with usage
                    units = _price(usage, pricer, batch)
                    if units is None:
                        continue
                end = span.end_time_unix_nano
                if units > MAX_UNITS or end > horizon:
                    batch.invalid += 1
                    if len(batch.errors) < 5:
                        batch.errors.append(f"a span worth ${units / 1e9:,.0f} (over $1,000,000)" if units > MAX_UNITS
                                            else f"a span ending at {end}, in the future beyond the allowed clock skew")
                    continue
                priced += 1
                units_priced += units
                if mode == "off" or (mode == "foreign" and (own_scope or (ours and span.parent_span_id in ours))):
                    continue
                attribution = dict(resource) if resource else {}
                attribution.update(filter(None, map(scoped_get, attributes)))
                # fixed64 `end` always fits the 8 bytes of `events.mark_key`, inlined here
                events.append(CostEvent(SPAN, end.to_bytes(8, "big") + span.trace_id + span.span_id, end, units,
                                        attribution, SOURCE_SPAN))
    batch.priced += priced
    batch.units_priced += units_priced
    return batch


def _price(attrs: dict[str, Any], pricer: ServicePricer, batch: SpansBatch) -> int | None:
    cost = attrs.get(_COST)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < float("inf"):
        return usd_units(float(cost))  # priced already by the tool that made the span
    model = attrs.get(_RESPONSE_MODEL) or attrs.get(_REQUEST_MODEL)
    provider = attrs.get(_PROVIDER) or attrs.get("gen_ai.system")
    try:
        input_tokens = _tokens(attrs, _INPUT)
        output_tokens = _tokens(attrs, _OUTPUT)
        cache_read = _tokens(attrs, _CACHE_READ)
        cache_write = _tokens(attrs, _CACHE_WRITE) or _tokens(attrs, _CACHE_CREATION)
        reasoning = _tokens(attrs, _REASONING)
    except ValueError as exc:
        batch.invalid += 1
        if len(batch.errors) < 5:
            batch.errors.append(f"span with {exc}")
        return None
    if not isinstance(model, str) or not model:
        batch.unpriced += 1
        return None
    units = pricer.call_units(model, provider if isinstance(provider, str) else None, input_tokens,
                              output_tokens, cache_read, cache_write, reasoning)
    if units is None:
        batch.unpriced += 1
    return units
