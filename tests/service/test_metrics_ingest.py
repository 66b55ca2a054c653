"""The processor counts spend from cost and token metrics exactly once, whatever the temporality."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_llmcost.pricing import PriceCatalog

from .otlp_builders import DELTA, T0, cost_request, post, token_request

S = 10**9  # one second in ns
pytestmark = pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)


def send(url: str, request: object, **kwargs: object) -> int:
    status, _, _ = post(f"{url}/v1/metrics", request.SerializeToString(), **kwargs)  # type: ignore[attr-defined]
    return status


def test_cumulative_resend_counts_once_and_increments_add_up(start_processor):
    """A resent cumulative point adds nothing; a later point adds only its difference."""
    p = start_processor()
    alice = {"llmcost.user.id": "alice"}
    first = cost_request([(alice, T0, T0 + 60 * S, 0.25)])
    assert send(p.url, first) == 200
    assert send(p.url, first) == 200  # the Collector's retry
    assert p.spend("monthly") == Decimal("0.25")
    assert send(p.url, cost_request([(alice, T0, T0 + 120 * S, 0.40)])) == 200
    assert p.spend("monthly") == Decimal("0.4")
    assert p.spend("per-user", "user=alice") == Decimal("0.4")
    # an older point arriving late (a retry overtaken by a newer export) changes nothing
    assert send(p.url, cost_request([(alice, T0, T0 + 90 * S, 0.30)])) == 200
    assert p.spend("monthly") == Decimal("0.4")


def test_app_restart_new_start_time_counts_from_zero(start_processor):
    """A restarted app (new start time, lower value) is a reset: its new value is counted in full."""
    p = start_processor()
    send(p.url, cost_request([({}, T0, T0 + 60 * S, 1.5)]))
    send(p.url, cost_request([({}, T0 + 100 * S, T0 + 160 * S, 0.2)]))
    assert p.spend("monthly") == Decimal("1.7")
    # a drop without a new start time is a reset too
    send(p.url, cost_request([({}, T0 + 100 * S, T0 + 220 * S, 0.05)]))
    assert p.spend("monthly") == Decimal("1.75")


def test_stream_older_than_the_store_sets_a_baseline(start_processor):
    """A cumulative series that began before the processor existed only sets the baseline."""
    p = start_processor()
    long_ago = 1_600_000_000 * S
    send(p.url, cost_request([({}, long_ago, T0, 900.0)]))
    assert p.spend("monthly") == Decimal(0)
    send(p.url, cost_request([({}, long_ago, T0 + 60 * S, 900.5)]))
    assert p.spend("monthly") == Decimal("0.5")


def test_delta_points_deduplicated_by_stream_and_time(start_processor):
    """Delta points count once per (stream, start, time), and each new interval counts."""
    p = start_processor()
    one = cost_request([({}, T0, T0 + 60 * S, 0.125)], temporality=DELTA)
    two = cost_request([({}, T0 + 60 * S, T0 + 120 * S, 0.5)], temporality=DELTA)
    for request in (one, one, two, one, two):
        assert send(p.url, request, gzipped=True) == 200
    assert p.spend("monthly") == Decimal("0.625")
    assert p.service.counters.get("llmcost_processor_dedup_hits_total") == 3


def test_replicas_sum_into_one_budget(start_processor):
    """Each app replica is its own stream; a budget sums them all."""
    p = start_processor()
    for instance, value in (("i-1", 0.3), ("i-2", 0.7), ("i-3", 1.1)):
        resource = {"service.name": "chatbot", "service.instance.id": instance}
        send(p.url, cost_request([({}, T0, T0 + 60 * S, value)], resource=resource))
        send(p.url, cost_request([({}, T0, T0 + 60 * S, value)], resource=resource))
    assert p.spend("monthly") == Decimal("2.1")
    assert p.spend("by-service", "service.name=chatbot") == Decimal("2.1")


def test_token_metrics_of_other_instrumentations_are_priced_by_model(start_processor):
    """gen_ai.client.token.usage sums are priced at the model's input and output rates."""
    p = start_processor()
    model = {"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
    request = token_request([({**model, "gen_ai.token.type": "input"}, T0, T0 + 60 * S, 12_000.0),
                             ({**model, "gen_ai.token.type": "output"}, T0, T0 + 60 * S, 3_000.0)])
    assert send(p.url, request) == 200
    assert send(p.url, request) == 200
    prices = PriceCatalog().prices("gpt-4o", "openai")
    expected = (12_000 * Decimal(prices.input_mtok) + 3_000 * Decimal(prices.output_mtok)) / 1_000_000
    assert expected > 0
    assert p.spend("monthly") == expected
    assert p.spend("by-service", "service.name=other-app") == expected


def test_token_metrics_of_a_resource_with_our_cost_metric_are_not_priced_again(start_processor):
    """When a resource also sends llmcost.cost, its token histograms are covered by it."""
    p = start_processor()
    attrs = {"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai", "gen_ai.token.type": "input"}
    request = token_request([(attrs, T0, T0 + 60 * S, 50_000.0)], with_cost=0.01)
    assert send(p.url, request) == 200
    assert p.spend("monthly") == Decimal("0.01")
    assert p.service.counters.get("llmcost_processor_points_total", result="covered") == 1


def test_unknown_model_is_unpriced_not_free(start_processor):
    """Tokens of a model without a price are counted as unpriced and add no spend."""
    p = start_processor()
    attrs = {"gen_ai.request.model": "my-private-llm-7", "gen_ai.token.type": "input"}
    assert send(p.url, token_request([(attrs, T0, T0 + 60 * S, 1000.0)])) == 200
    assert p.spend("monthly") == Decimal(0)
    assert p.service.counters.get("llmcost_processor_points_total", result="unpriced") == 1


def test_bad_points_rejected_with_partial_success(start_processor):
    """Negative counter values are rejected in an OTLP partial success; good points still count."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    p = start_processor()
    request = cost_request([({"llmcost.feature": "a"}, T0, T0 + S, 0.5), ({"llmcost.feature": "b"}, T0, T0 + S, -1.0)])
    status, body, _ = post(f"{p.url}/v1/metrics", request.SerializeToString())
    assert status == 200
    response = ExportMetricsServiceResponse.FromString(body)
    assert response.partial_success.rejected_data_points == 1
    assert "-1.0" in response.partial_success.error_message
    assert p.spend("monthly") == Decimal("0.5")


def test_temporality_unspecified_is_rejected(start_processor):
    """A sum without temporality cannot be accounted and is reported as rejected."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    p = start_processor()
    request = cost_request([({}, T0, T0 + S, 0.5)], temporality=0)
    status, body, _ = post(f"{p.url}/v1/metrics", request.SerializeToString())
    assert status == 200
    assert ExportMetricsServiceResponse.FromString(body).partial_success.rejected_data_points == 1
    assert p.spend("monthly") == Decimal(0)


def test_levels_fire_one_alert_despite_resends(start_processor):
    """Crossing a level from ingested metrics alerts once, even when the payload is resent."""
    p = start_processor()
    request = cost_request([({"llmcost.user.id": "bob"}, T0, T0 + 60 * S, 0.9)])
    for _ in range(3):
        send(p.url, request)
        p.service.accountant.check_alerts()  # what the background thread does every second
    levels = [(a.budget, a.scope_key, a.level) for a in p.sink.alerts]
    assert levels == [("per-user", "user=bob", "warn"), ("per-user", "user=bob", "throttle")]


def test_exponential_histogram_token_usage_is_priced_too(start_processor):
    """SDKs set to base-2 exponential histograms send token usage that way; its sum is priced the same."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    p = start_processor()
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    metric = rm.scope_metrics.add().metrics.add(name="gen_ai.client.token.usage")
    metric.exponential_histogram.aggregation_temporality = DELTA
    point = metric.exponential_histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + S,
                                                          count=2, sum=10_000.0)
    for key, value in (("gen_ai.request.model", "gpt-4o"), ("gen_ai.provider.name", "openai"),
                       ("gen_ai.token.type", "output")):
        point.attributes.add(key=key).value.string_value = value
    assert send(p.url, request) == 200
    prices = PriceCatalog().prices("gpt-4o", "openai")
    assert p.spend("monthly") == 10_000 * Decimal(prices.output_mtok) / 1_000_000



def test_points_older_than_the_dedup_window_are_refused_not_risked(start_processor):
    """A delta point older than the dedup window could not be told from a resend: it is not counted."""
    import time

    p = start_processor()
    old = time.time_ns() - 2 * 3600 * S  # the default window is one hour
    request = cost_request([({}, old - 60 * S, old, 0.5), ({"llmcost.feature": "new"}, T0, T0 + S, 0.25)],
                           temporality=DELTA)
    assert send(p.url, request) == 200
    assert p.spend("monthly") == Decimal("0.25")
    assert p.service.counters.get("llmcost_processor_points_total", result="too_old") == 1
