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

Counted spans are deduplicated by trace id + span id, so a resent batch counts once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import names
from ..budget.policy import DIMENSIONS
from .attributes import all_attributes, as_text, some_attributes
from .events import SOURCE_SPAN, SPAN, CostEvent, usd_units
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
_USAGE_KEYS = frozenset({_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _CACHE_CREATION, _REASONING, _COST,
                         _RESPONSE_MODEL, _REQUEST_MODEL, _PROVIDER, "gen_ai.system"})
ATTRIBUTION_KEYS = frozenset({names.LLMCOST_USER_ID, names.LLMCOST_TENANT_ID, names.LLMCOST_USER_TIER,
                              names.LLMCOST_FEATURE, names.GEN_AI_OPERATION_NAME, _RESPONSE_MODEL,
                              _REQUEST_MODEL, _PROVIDER})


def attribution_keys(dimensions: Iterable[str]) -> frozenset[str]:
    """The span attributes budgets may be scoped by: ours plus any attribute a budget names."""
    keys = set(ATTRIBUTION_KEYS)
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
    value = attrs.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"{key}={value!r} is not a token count")
    return int(value)


def extract_spans(request: Any, pricer: ServicePricer, mode: str = "off",
                  wanted: frozenset[str] = ATTRIBUTION_KEYS) -> SpansBatch:
    """Price the GenAI spans of an `ExportTraceServiceRequest`; events for those that count (see doc)."""
    batch = SpansBatch()
    keys = _USAGE_KEYS | wanted
    for resource_spans in request.resource_spans:
        resource = {k: as_text(v) for k, v in all_attributes(resource_spans.resource.attributes).items()
                    if v is not None}
        ours: set[bytes] = set()
        if mode == "foreign":
            for scope_spans in resource_spans.scope_spans:
                if scope_spans.scope.name == _OWN_SCOPE:
                    ours.update(span.span_id for span in scope_spans.spans)
        for scope_spans in resource_spans.scope_spans:
            own_scope = scope_spans.scope.name == _OWN_SCOPE
            spans = scope_spans.spans
            batch.spans += len(spans)
            for span in spans:
                attrs = some_attributes(span.attributes, keys)
                if _INPUT not in attrs and _OUTPUT not in attrs and _COST not in attrs:
                    continue
                units = _price(attrs, pricer, batch)
                if units is None:
                    continue
                batch.priced += 1
                batch.units_priced += units
                if mode == "off" or (mode == "foreign" and (own_scope or (ours and span.parent_span_id in ours))):
                    continue
                attribution = dict(resource)
                for key in wanted:
                    value = attrs.get(key)
                    if value is not None:
                        attribution[key] = as_text(value)
                batch.events.append(CostEvent(SPAN, span.trace_id + span.span_id, span.end_time_unix_nano,
                                              units, tuple(sorted(attribution.items())), SOURCE_SPAN))
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
