"""The processor's HTTP surface: OTLP encodings, refusals with reasons, /metrics, /v1/hints, /healthz."""

from __future__ import annotations

import gzip
import json
import os
import socket
from decimal import Decimal

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_llmcost.pricing import PriceCatalog, Usage

from .conftest import TOKEN
from .otlp_builders import T0, cost_request, get, get_json, post, span_request

S = 10**9
GPT = {"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
       "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}


def test_json_metrics_and_gzip_protobuf_count_the_same(start_processor):
    """OTLP JSON (camelCase, int64 as strings) and gzip protobuf are both accepted."""
    p = start_processor()
    body = json.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-app"}}]},
        "scopeMetrics": [{"scope": {"name": "otel_llmcost"}, "metrics": [{
            "name": "llmcost.cost", "unit": "USD",
            "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
                {"startTimeUnixNano": str(T0), "timeUnixNano": str(T0 + S), "asDouble": 0.75}]}}]}]}]})
    status, response, content_type = post(f"{p.url}/v1/metrics", body.encode(), "application/json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(response) == {}
    status, _, _ = post(f"{p.url}/v1/metrics", cost_request([({}, T0, T0 + S, 0.25)]).SerializeToString(),
                        gzipped=True)
    assert status == 200
    assert p.spend("monthly") == Decimal("1")


def test_json_spans_use_hex_ids(start_processor):
    """OTLP JSON span ids are hex: a resend with the same hex ids is recognised as the same span."""
    p = start_processor(span_accounting="all")
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat",
            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + S),
            "attributes": [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
                           for k, v in GPT.items()]}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"scope": {"name": "x"}, "spans": [span]}]}]}).encode()
    for _ in range(2):
        assert post(f"{p.url}/v1/traces", body, "application/json")[0] == 200
    expected = PriceCatalog().cost(Usage(1200, 300), "gpt-4o", "openai").total
    assert p.spend("monthly") == expected
    bad = body.replace(b"eee19b7ec3c1b174", b"not-hex-at-all!!")
    status, response, _ = post(f"{p.url}/v1/traces", bad, "application/json")
    assert status == 400
    assert "not a hex string" in json_format.Parse(response, status_pb2.Status()).message


def test_malformed_payloads_get_400_with_a_reason_and_the_service_stays_up(start_processor):
    """Garbage protobuf, broken JSON, bad gzip: 400 and a reason each; the next good request works."""
    p = start_processor()
    cases = [
        (b"\xff\xff\xff\xff garbage", "application/x-protobuf", False, "not a valid ExportMetricsServiceRequest"),
        (b"{not json", "application/json", False, "not valid JSON"),
        (b"[1, 2]", "application/json", False, "expected a JSON object"),
        (b"\x1f\x8b\x08\x00 broken", "application/x-protobuf", None, "not valid gzip"),
    ]
    for body, content_type, gzipped, reason in cases:
        headers = {"Content-Encoding": "gzip"} if gzipped is None else {}
        status, response, _ = post(f"{p.url}/v1/metrics", body, content_type, gzipped=bool(gzipped),
                                   headers=headers)
        assert status == 400, reason
        message = (json_format.Parse(response, status_pb2.Status()) if content_type == "application/json"
                   else status_pb2.Status.FromString(response)).message
        assert reason in message
    status, response, _ = post(f"{p.url}/v1/metrics", b"x", "text/plain")
    assert status == 415 and b"application/x-protobuf" in response
    assert post(f"{p.url}/v1/metrics", cost_request([({}, T0, T0 + S, 0.5)]).SerializeToString())[0] == 200
    assert p.spend("monthly") == Decimal("0.5")


def test_oversized_body_and_gzip_bomb_get_413(start_processor):
    """A body over max_body, or gzip inflating past max_decompressed, is refused with 413."""
    p = start_processor(max_body="64KiB", max_decompressed="1MiB")
    status, response, _ = post(f"{p.url}/v1/metrics", os.urandom(100_000))
    assert status == 413 and b"over the limit" in response
    bomb = gzip.compress(b"\0" * (50 * 2**20))
    assert len(bomb) < 64 * 1024
    status, response, _ = post(f"{p.url}/v1/metrics", bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and b"inflates past the limit" in response
    assert get(f"{p.url}/healthz")[0] == 200


def test_chunked_body_without_length_is_refused(start_processor):
    """A request without Content-Length gets 411 rather than a hung connection."""
    p = start_processor()
    host, port = p.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 411")


def test_span_accounting_modes(start_processor):
    """off: spans priced but not counted; foreign: ours and their children skipped; resends count once."""
    call = PriceCatalog().cost(Usage(1200, 300), "gpt-4o", "openai").total
    ours, child, foreign = os.urandom(8), os.urandom(8), os.urandom(8)
    trace = os.urandom(16)
    spans = [
        {"scope": "otel_llmcost", "trace_id": trace, "span_id": ours, "attributes": GPT},
        {"scope": "com.anthropic.sdk.python", "trace_id": trace, "span_id": child, "parent_span_id": ours,
         "attributes": GPT},
        {"scope": "openllmetry", "span_id": foreign, "attributes": {**GPT, "llmcost.user.id": "carol"}},
        {"scope": "openllmetry", "attributes": {"http.method": "GET"}},  # not a GenAI span
        {"scope": "openllmetry", "attributes": {**GPT, "gen_ai.usage.cost": 0.5}},  # priced by its maker
    ]
    body = span_request(spans).SerializeToString()

    off = start_processor()
    assert post(f"{off.url}/v1/traces", body)[0] == 200
    assert off.spend("monthly") == 0
    assert off.service.counters.get("llmcost_processor_spans_total", result="priced") == 4
    assert off.service.counters.get("llmcost_processor_spans_total", result="received") == 5

    foreign_mode = start_processor(span_accounting="foreign")
    for _ in range(3):
        assert post(f"{foreign_mode.url}/v1/traces", body, gzipped=True)[0] == 200
    assert foreign_mode.spend("monthly") == call + Decimal("0.5")
    assert foreign_mode.spend("per-user", "user=carol") == call
    assert foreign_mode.service.counters.get("llmcost_processor_spans_total", result="duplicate") == 4


def test_invalid_token_counts_are_rejected_spans(start_processor):
    """A span with a negative token count is reported in partial success, not priced."""
    p = start_processor(span_accounting="all")
    body = span_request([{"attributes": {**GPT, "gen_ai.usage.output_tokens": -5}}]).SerializeToString()
    status, response, _ = post(f"{p.url}/v1/traces", body)
    assert status == 200
    result = ExportTraceServiceResponse.FromString(response).partial_success
    assert result.rejected_spans == 1 and "not a token count" in result.error_message
    assert p.spend("monthly") == 0


def test_metrics_endpoint_exposes_budget_gauges_and_ingest_counters(start_processor):
    """/metrics has the budget gauges under the names the Collector would give them, and our counters."""
    p = start_processor(budgets="""
        budgets:
          - {name: monthly, amount: 100}
          - {name: per-user, amount: 1, window: day, scope: {by: user}}
        alerts: {log: false}
        forecast: {min_elapsed: 0}
        """)
    post(f"{p.url}/v1/metrics", cost_request([({"llmcost.user.id": "dan"}, T0, T0 + S, 0.9)]).SerializeToString())
    status, body = get(f"{p.url}/metrics")
    text = body.decode()
    assert status == 200
    assert 'llmcost_budget_spend_USD{llmcost_budget_name="per-user",llmcost_budget_scope="user=dan"} 0.9' in text
    assert 'llmcost_budget_limit_USD{llmcost_budget_name="monthly",llmcost_budget_scope="global"} 100' in text
    assert ('llmcost_budget_level{llmcost_budget_name="per-user",llmcost_budget_scope="user=dan",'
            'llmcost_budget_level="throttle"} 2') in text
    assert 'llmcost_budget_utilization_ratio{llmcost_budget_name="per-user",llmcost_budget_scope="user=dan"} 0.9' in text
    assert 'llmcost_budget_projected_USD{llmcost_budget_name="monthly",llmcost_budget_scope="global"}' in text
    assert 'llmcost_processor_points_total{result="counted"} 1' in text
    assert 'llmcost_processor_requests_total{path="/v1/metrics",status="200"} 1' in text
    assert 'llmcost_processor_cost_USD_total{source="cost_metric"} 0.9' in text


def test_hints_need_the_bearer_token_and_report_the_tightest_budget(start_processor):
    """/v1/hints: 401 without the token; per-call hints and the all-scopes listing with it."""
    p = start_processor()
    post(f"{p.url}/v1/metrics", cost_request([({"llmcost.user.id": "eve"}, T0, T0 + S, 0.9)]).SerializeToString())
    assert get(f"{p.url}/v1/hints?user=eve")[0] == 401
    assert get(f"{p.url}/v1/hints?user=eve", token="wrong")[0] == 401
    status, payload = get_json(f"{p.url}/v1/hints?user=eve", token=TOKEN)
    assert status == 200
    hints = payload["hints"]
    assert (hints["level"], hints["budget"], hints["scope_key"]) == ("throttle", "per-user", "user=eve")
    assert hints["substitutes"] == {"gpt-5.4": "gpt-5.4-mini"} and hints["cache_only"] is False
    assert get_json(f"{p.url}/v1/hints?user=frank", token=TOKEN)[1]["hints"]["level"] == "ok"
    status, listing = get_json(f"{p.url}/v1/hints", token=TOKEN)
    eve = [s for s in listing["scopes"] if s["scope_key"] == "user=eve"]
    assert eve and eve[0]["match"] == {"user": "eve"} and eve[0]["level"] == "throttle"
    assert get_json(f"{p.url}/v1/hints?colour=red", token=TOKEN)[0] == 400


def test_impossible_amounts_and_far_future_times_are_rejected_not_retried(start_processor):
    """$1e12 points, 2**62-token spans, a point stamped far ahead: rejected in partial success, ledger unchanged."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

    p = start_processor(span_accounting="all", max_future="10m")
    request = cost_request([({"llmcost.feature": "a"}, T0 - 7200 * S, T0 - 3600 * S + S, 1e12),
                            ({"llmcost.feature": "b"}, T0 - 7200 * S, 2**63, 0.5),
                            ({"llmcost.feature": "c"}, T0 - 7200 * S, T0 - 3600 * S + S, 1e308)])
    status, body, _ = post(f"{p.url}/v1/metrics", request.SerializeToString())
    result = ExportMetricsServiceResponse.FromString(body).partial_success
    assert status == 200 and result.rejected_data_points == 3
    assert "over $1,000,000" in result.error_message and "in the future" in result.error_message
    spans = span_request([{"attributes": {**GPT, "gen_ai.usage.input_tokens": 2**62}},
                          {"attributes": {**GPT, "gen_ai.usage.cost": 1e308}}])
    status, body, _ = post(f"{p.url}/v1/traces", spans.SerializeToString())
    assert status == 200 and ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 2
    assert p.spend("monthly") == 0


def test_a_trickling_client_is_cut_off_by_the_request_timeout(start_processor):
    """Slow loris: headers sent a byte at a time are cut off at the request timeout; others are served."""
    import time

    p = start_processor(request_timeout="1s")
    host, port = p.url.removeprefix("http://").split(":")
    payload = b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    closed = False
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        for byte in payload:
            try:
                conn.sendall(bytes([byte]))
                conn.settimeout(0.05)
                if conn.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            time.sleep(0.05)
        assert closed  # well before the 200+ bytes (>10 s) were all sent
        assert get(f"{p.url}/healthz")[0] == 200
