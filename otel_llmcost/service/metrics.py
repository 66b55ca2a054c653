"""Which metric points carry spend, and the streams they belong to.

Two kinds of metrics count:

* `llmcost.cost` (USD counter) from apps instrumented with otel-llmcost: the spend itself;
* `gen_ai.client.token.usage` (histogram by `gen_ai.token.type`, model, provider) from apps
  instrumented by anything else, in any language: its `sum` is priced here by model.

A resource (one app replica) that sends `llmcost.cost` is taken as fully covered by it: its token
histograms describe the same calls and are not priced again. Every other metric is ignored.

A stream is one time series: the resource's attributes, the scope name, the metric name and the point's
attributes. Each replica of an app has its own resource (`service.instance.id`), hence its own stream,
and budgets sum the increments of all of them. A cumulative point is keyed by its stream and start time,
so a restarted app (new start time) opens a new series instead of looking like a drop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import names
from .attributes import all_attributes, as_text
from .events import (
    CUMULATIVE,
    DELTA,
    MAX_FUTURE_NS,
    MAX_UNITS,
    SOURCE_COST_METRIC,
    SOURCE_TOKEN_METRIC,
    Attribution,
    CostEvent,
    mark_key,
    usd_units,
)
from .pricing import ServicePricer

_DELTA_TEMPORALITY = 1
_CUMULATIVE_TEMPORALITY = 2
_NO_RECORDED_VALUE = 1
_OWN_SCOPE = "otel_llmcost"


@dataclass
class MetricsBatch:
    """The cost events of one export request, and what happened to the other points."""

    events: list[CostEvent] = field(default_factory=list)
    horizon: int = 2**64
    rejected: int = 0
    unpriced: int = 0
    ignored: int = 0
    covered: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5 and reason not in self.errors:
            self.errors.append(reason)

    def add(self, event: CostEvent, name: str) -> None:
        """Keep an event, or reject it if its amount or time cannot be real (see `events.MAX_*`)."""
        if event.units > MAX_UNITS:
            self.reject(f"{name}: a point worth ${event.units / 1e9:,.0f} (over $1,000,000) is not an LLM bill")
        elif event.time > self.horizon:
            self.reject(f"{name}: time_unix_nano {event.time} is in the future by more than the allowed "
                        f"clock skew; check the sender's clock")
        else:
            self.events.append(event)


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _attribution(resource: Mapping[str, Any], point: Mapping[str, Any]) -> Attribution:
    merged = {key: as_text(value) for key, value in resource.items() if value is not None}
    merged.update((key, as_text(value)) for key, value in point.items() if value is not None)
    return merged


def _identity(attributes: Mapping[str, Any]) -> str:
    return repr(sorted((k, as_text(v)) for k, v in attributes.items()))


def _temporality(code: int, batch: MetricsBatch, name: str) -> int | None:
    if code == _CUMULATIVE_TEMPORALITY:
        return CUMULATIVE
    if code == _DELTA_TEMPORALITY:
        return DELTA
    batch.reject(f"{name}: aggregation temporality unspecified")
    return None


def _event(kind: int, stream: str, start: int, at: int, value: float, units: int,
           attribution: Attribution, source: str) -> CostEvent:
    if kind == CUMULATIVE:
        key = _digest("c", stream, str(start))
    else:
        key = mark_key(at, _digest("d", stream, str(start), str(at)))
    return CostEvent(kind, key, at, units, attribution, source, value, start)


def extract_metrics(request: Any, pricer: ServicePricer, now_ns: int | None = None,
                    max_future_ns: int = MAX_FUTURE_NS) -> MetricsBatch:
    """Cost events from an `ExportMetricsServiceRequest` (see the module doc)."""
    batch = MetricsBatch()
    now = now_ns or time.time_ns()
    batch.horizon = now + max_future_ns
    for resource_metrics in request.resource_metrics:
        resource = all_attributes(resource_metrics.resource.attributes)
        resource_id = _identity(resource)
        scopes = resource_metrics.scope_metrics
        has_cost = any(m.name == names.METRIC_COST for sm in scopes for m in sm.metrics)
        for scope_metrics in scopes:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                if metric.name == names.METRIC_COST:
                    _cost_points(metric, resource, f"{resource_id}|{scope}", batch, now)
                elif metric.name == names.METRIC_TOKEN_USAGE:
                    if has_cost or scope == _OWN_SCOPE:
                        shape = metric.WhichOneof("data")
                        batch.covered += len(getattr(metric, shape).data_points) if shape else 0
                        continue
                    _token_points(metric, resource, f"{resource_id}|{scope}", batch, pricer, now)
                else:
                    batch.ignored += 1
    return batch


def _cost_points(metric: Any, resource: Mapping[str, Any], stream_base: str, batch: MetricsBatch,
                 now: int) -> None:
    if metric.WhichOneof("data") != "sum":
        batch.reject(f"{metric.name} must be a Sum (counter), not a {metric.WhichOneof('data')}")
        return
    if not metric.sum.is_monotonic:
        batch.reject(f"{metric.name} must be monotonic (a counter)")
        return
    kind = _temporality(metric.sum.aggregation_temporality, batch, metric.name)
    if kind is None:
        return
    for point in metric.sum.data_points:
        if point.flags & _NO_RECORDED_VALUE:
            continue
        which = point.WhichOneof("value")
        value = float(point.as_double if which == "as_double" else point.as_int)
        if which is None or not value >= 0 or value == float("inf"):
            batch.reject(f"{metric.name}: a point with value {value!r}; counters are finite and ≥ 0")
            continue
        attributes = all_attributes(point.attributes)
        stream = f"{stream_base}|{metric.name}|{_identity(attributes)}"
        batch.add(_event(kind, stream, point.start_time_unix_nano, point.time_unix_nano or now,
                         value, usd_units(value), _attribution(resource, attributes), SOURCE_COST_METRIC),
                  metric.name)


def _token_points(metric: Any, resource: Mapping[str, Any], stream_base: str, batch: MetricsBatch,
                  pricer: ServicePricer, now: int) -> None:
    shape = metric.WhichOneof("data")
    if shape not in ("histogram", "exponential_histogram"):  # SDKs may be configured for either
        batch.reject(f"{metric.name} must be a Histogram, not a {shape}")
        return
    data = getattr(metric, shape)
    kind = _temporality(data.aggregation_temporality, batch, metric.name)
    if kind is None:
        return
    for point in data.data_points:
        if point.flags & _NO_RECORDED_VALUE:
            continue
        if not point.HasField("sum"):
            batch.reject(f"{metric.name}: a histogram point without a sum cannot be priced")
            continue
        value = point.sum
        if not value >= 0 or value == float("inf"):
            batch.reject(f"{metric.name}: a point with sum {value!r}; token counts are finite and ≥ 0")
            continue
        attributes = all_attributes(point.attributes)
        token_type = attributes.get(names.GEN_AI_TOKEN_TYPE)
        model = attributes.get(names.GEN_AI_RESPONSE_MODEL) or attributes.get(names.GEN_AI_REQUEST_MODEL)
        provider = attributes.get(names.GEN_AI_PROVIDER_NAME) or attributes.get("gen_ai.system")
        if token_type not in ("input", "output") or not isinstance(model, str):
            batch.ignored += 1
            continue
        rate = pricer.token_rate(model, provider if isinstance(provider, str) else None, token_type)
        if rate is None:
            batch.unpriced += 1
            continue
        stream = f"{stream_base}|{metric.name}|{_identity(attributes)}"
        batch.add(_event(kind, stream, point.start_time_unix_nano, point.time_unix_nano or now,
                         value, int(round(value * rate)), _attribution(resource, attributes), SOURCE_TOKEN_METRIC),
                  metric.name)


def point_count(request: Any) -> int:
    """Data points in a metrics request (for the ingest counters)."""
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


__all__ = ["MetricsBatch", "extract_metrics", "point_count"]
