"""OTLP export requests built by hand, for the cases an SDK exporter will not produce on demand
(resends, resets, out-of-order points, other instrumentations' metrics, malformed bodies)."""

from __future__ import annotations

import gzip
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
T0 = time.time_ns() + 3600 * 10**9  # series start after any store made in a test (an hour ahead)


def kv(attributes: Mapping[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in attributes.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


def cost_request(points: Sequence[tuple[Mapping[str, Any], int, int, float]], *,
                 temporality: int = CUMULATIVE, resource: Mapping[str, Any] | None = None,
                 scope: str = "otel_llmcost") -> ExportMetricsServiceRequest:
    """`llmcost.cost` points: (attributes, start ns, time ns, USD)."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(kv(resource or {"service.name": "app", "service.instance.id": "i-1"}))
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    metric = sm.metrics.add(name="llmcost.cost", unit="USD")
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = temporality
    for attributes, start, at, value in points:
        point = metric.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=at, as_double=value)
        point.attributes.extend(kv(attributes))
    return request


def token_request(points: Sequence[tuple[Mapping[str, Any], int, int, float]], *,
                  temporality: int = CUMULATIVE, resource: Mapping[str, Any] | None = None,
                  scope: str = "opentelemetry.instrumentation.openai", with_cost: float | None = None
                  ) -> ExportMetricsServiceRequest:
    """`gen_ai.client.token.usage` histogram points: (attributes, start, time, sum of tokens)."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(kv(resource or {"service.name": "other-app", "service.instance.id": "j-1"}))
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    metric = sm.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    metric.histogram.aggregation_temporality = temporality
    for attributes, start, at, total in points:
        point = metric.histogram.data_points.add(start_time_unix_nano=start, time_unix_nano=at, count=1, sum=total)
        point.attributes.extend(kv(attributes))
    if with_cost is not None:
        cost = sm.metrics.add(name="llmcost.cost", unit="USD")
        cost.sum.is_monotonic = True
        cost.sum.aggregation_temporality = temporality
        cost.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + 1, as_double=with_cost)
    return request


def span_request(spans: Sequence[Mapping[str, Any]], *, scope: str = "openllmetry",
                 resource: Mapping[str, Any] | None = None) -> ExportTraceServiceRequest:
    """Spans from dicts with `attributes` and optional trace_id/span_id/parent_span_id/scope."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(kv(resource or {"service.name": "traced-app"}))
    by_scope: dict[str, Any] = {}
    for spec in spans:
        name = spec.get("scope", scope)
        if name not in by_scope:
            by_scope[name] = rs.scope_spans.add()
            by_scope[name].scope.name = name
        span = by_scope[name].spans.add(name="chat", trace_id=spec.get("trace_id") or os.urandom(16),
                                         span_id=spec.get("span_id") or os.urandom(8),
                                         start_time_unix_nano=T0, end_time_unix_nano=spec.get("end", T0 + 10**6))
        if spec.get("parent_span_id"):
            span.parent_span_id = spec["parent_span_id"]
        span.attributes.extend(kv(spec["attributes"]))
    return request


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", *, gzipped: bool = False,
         headers: Mapping[str, str] | None = None) -> tuple[int, bytes, str]:
    """POST a body; (status, body, content type) whatever the status."""
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if gzipped:
        body = gzip.compress(body)
        all_headers["Content-Encoding"] = "gzip"
    request = urllib.request.Request(url, data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    status, body = get(url, token)
    return status, json.loads(body)
