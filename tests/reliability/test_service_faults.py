"""The processor service's receiver under hostile input: hypothesis-built OTLP (protobuf and JSON, gzip or
not), a time-boxed random-bytes run, forged hints tokens, and slow-loris clients.

The contract: every request is answered 2xx or 4xx with a reason (never 5xx, never a crash or a hang),
the service stays healthy, the ledger never takes a NaN, infinite or negative amount, and a client that
trickles its request in is cut off by a timeout instead of holding a thread for ever.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToJson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from .conftest import soak_enabled
from .helpers import TOKEN, Processor

EXAMPLES = 1500 if soak_enabled() else 60
FUZZ_SECONDS = 60.0 if soak_enabled() else 4.0
# Derandomized by default so CI sees the same examples every run; the soak variant explores anew.
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not soak_enabled(),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
OK_STATUSES = {200, 400, 411, 413, 415}


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processor]:
    running = Processor(tmp_path_factory.mktemp("processor"))
    yield running
    running.close()


# -- OTLP built by hypothesis ---------------------------------------------------------------------------
KEYS = ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.cost",
        "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name", "gen_ai.system",
        "gen_ai.operation.name", "gen_ai.token.type", "llmcost.user.id", "user", "llmcost.price.known",
        "service.name", "service.instance.id"]
# Values up to what a broken exporter plausibly sends, plus NaN, infinities and 1e308. Finite values big
# enough to overflow the ledger's integers (a cost of 1e12 USD, 2**62 tokens) have their own test below,
# and timestamps from 2**63 on (valid fixed64 in OTLP), have their own test below, a known gap: kept out
# of the random run so that it stays a reliable signal.
int64 = st.integers(min_value=-(2**40), max_value=2**40)
uint64 = st.integers(min_value=0, max_value=2**40) | st.sampled_from([2**62, 2**63 - 1])
weird_floats = st.floats(min_value=-1e6, max_value=1e6) | st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324])


def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    leaves = st.one_of(
        st.text(max_size=20).map(lambda v: AnyValue(string_value=v)),
        st.sampled_from(["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "openai", "anthropic",
                         "input", "output", "-5", "NaN", "1e400"]).map(lambda v: AnyValue(string_value=v)),
        int64.map(lambda v: AnyValue(int_value=v)),
        weird_floats.map(lambda v: AnyValue(double_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
    )
    if depth == 0:
        return leaves
    inner = any_values(depth - 1)

    def array(values: list[AnyValue]) -> AnyValue:
        value = AnyValue()
        value.array_value.values.extend(values)
        return value

    def kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
        value = AnyValue()
        value.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
        return value

    return st.one_of(leaves, st.lists(inner, max_size=3).map(array),
                     st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=3).map(kvlist))


attributes = st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), any_values()), max_size=8)


@st.composite
def metrics_requests(draw: Any) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attributes))
        sm = rm.scope_metrics.add()
        sm.scope.name = draw(st.sampled_from(["otel_llmcost", "opentelemetry.instrumentation.openai", ""]))
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(["llmcost.cost", "gen_ai.client.token.usage", "llmcost.cost.saved",
                                         "llmcost.price.unknown"]) | st.text(max_size=10))
            metric = sm.metrics.add(name=name, unit=draw(st.sampled_from(["USD", "{token}", "", "s"])))
            kind = draw(st.sampled_from(["sum", "gauge", "histogram"]))
            for _ in range(draw(st.integers(0, 3))):
                if kind == "histogram":
                    metric.histogram.aggregation_temporality = draw(st.integers(0, 2))
                    point = metric.histogram.data_points.add(
                        count=draw(uint64), sum=draw(weird_floats), start_time_unix_nano=draw(uint64),
                        time_unix_nano=draw(uint64))
                    point.bucket_counts.extend(draw(st.lists(uint64, max_size=4)))
                    point.explicit_bounds.extend(draw(st.lists(weird_floats, max_size=3)))
                else:
                    data = metric.sum if kind == "sum" else metric.gauge
                    if kind == "sum":
                        metric.sum.aggregation_temporality = draw(st.integers(0, 3))
                        metric.sum.is_monotonic = draw(st.booleans())
                    point = data.data_points.add(start_time_unix_nano=draw(uint64), time_unix_nano=draw(uint64))
                    if draw(st.booleans()):
                        point.as_double = draw(weird_floats)
                    else:
                        point.as_int = draw(int64)
                point.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attributes))
    return request


@st.composite
def trace_requests(draw: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attributes))
        ss = rs.scope_spans.add()
        ss.scope.name = draw(st.sampled_from(["otel_llmcost", "com.anthropic.sdk.python", "x"]))
        for _ in range(draw(st.integers(0, 3))):
            span = ss.spans.add(
                trace_id=draw(st.binary(min_size=0, max_size=17)), span_id=draw(st.binary(min_size=0, max_size=9)),
                parent_span_id=draw(st.binary(max_size=9)), name=draw(st.text(max_size=12)),
                kind=draw(st.integers(0, 6)), start_time_unix_nano=draw(uint64), end_time_unix_nano=draw(uint64))
            span.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attributes))
    return request


def _post(processor: Processor, path: str, message: Any, encoding: str, gzipped: bool) -> int:
    if encoding == "json":
        body = _otlp_json(message)
        headers = {"Content-Type": "application/json"}
    else:
        body = message.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return processor.request("POST", path, body, headers)


@pytest.mark.reliability(
    "OTLP metrics of any shape (hypothesis: NaN/inf/negative values, absurd timestamps, every temporality, "
    "nested attribute values), protobuf and JSON, gzip or not",
    "answered 200 or 4xx, never 5xx; the service stays healthy; no NaN, infinite or negative spend in the ledger",
)
@PROPERTY
@given(message=metrics_requests(), encoding=st.sampled_from(["protobuf", "json"]), gzipped=st.booleans())
def test_otlp_metrics_fuzz(processor: Processor, message: ExportMetricsServiceRequest, encoding: str,
                           gzipped: bool) -> None:
    """Any OTLP metrics request: a 2xx/4xx answer and a ledger that stays finite and non-negative."""
    status = _post(processor, "/v1/metrics", message, encoding, gzipped)
    assert status in OK_STATUSES
    processor.ledger_sane()


@pytest.mark.reliability(
    "OTLP traces of any shape (hypothesis: ids of wrong length, usage attributes of every type and sign), "
    "protobuf and JSON, gzip or not",
    "answered 200 or 4xx, never 5xx; the service stays healthy; the ledger stays finite and non-negative",
)
@PROPERTY
@given(message=trace_requests(), encoding=st.sampled_from(["protobuf", "json"]), gzipped=st.booleans())
def test_otlp_traces_fuzz(processor: Processor, message: ExportTraceServiceRequest, encoding: str,
                          gzipped: bool) -> None:
    """Any OTLP traces request: a 2xx/4xx answer and a ledger that stays finite and non-negative."""
    status = _post(processor, "/v1/traces", message, encoding, gzipped)
    assert status in OK_STATUSES
    processor.ledger_sane()


def _absurd(case: str) -> tuple[str, Any]:
    now = time.time_ns()
    if case.startswith("span"):
        message: Any = ExportTraceServiceRequest()
        span = message.resource_spans.add().scope_spans.add().spans.add(
            trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", start_time_unix_nano=now - 10,
            end_time_unix_nano=now)
        attrs = {"span cost 1e308 USD": [("gen_ai.usage.cost", AnyValue(double_value=1e308))],
                 "span with 2**62 input tokens": [("gen_ai.usage.input_tokens", AnyValue(int_value=2**62)),
                                                   ("gen_ai.request.model", AnyValue(string_value="gpt-4o")),
                                                   ("gen_ai.provider.name", AnyValue(string_value="openai"))]}[case]
        span.attributes.extend(KeyValue(key=k, value=v) for k, v in attrs)
        return "/v1/traces", message
    message = ExportMetricsServiceRequest()
    sm = message.resource_metrics.add().scope_metrics.add()
    sm.scope.name = "otel_llmcost"
    if case.startswith("token"):
        sm.scope.name = "opentelemetry.instrumentation.openai"  # another tool's tokens: priced by the service
        metric = sm.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
        metric.histogram.aggregation_temporality = 1
        point = metric.histogram.data_points.add(count=1, sum=float(2**62), start_time_unix_nano=now - 10,
                                                 time_unix_nano=now)
        for key, text in (("gen_ai.token.type", "input"), ("gen_ai.request.model", "gpt-4o"),
                          ("gen_ai.provider.name", "openai")):
            point.attributes.add(key=key, value=AnyValue(string_value=text))
        return "/v1/metrics", message
    metric = sm.metrics.add(name="llmcost.cost", unit="USD")
    metric.sum.aggregation_temporality = 1
    metric.sum.is_monotonic = True
    value = 1e308 if "1e308" in case else 1e12 if "1e12" in case else 0.01
    at = 2**63 if "2**63" in case else now
    metric.sum.data_points.add(start_time_unix_nano=now - 10, time_unix_nano=at, as_double=value)
    return "/v1/metrics", message


@pytest.mark.reliability(
    "finite but absurd values: a cost of 1e308 or 1e12 USD, 2**62 tokens, a timestamp of 2**63 ns, on spans "
    "and metric points",
    "refused with 4xx or rejected in partial success (not 503, which the Collector would resend for ever); "
    "the ledger unchanged",
)
@pytest.mark.parametrize("case", [
    "point cost 1e308 USD", "span cost 1e308 USD",
    "point cost 1e12 USD",
    "token histogram sum 2**62",
    "span with 2**62 input tokens",
    "point cost at time_unix_nano 2**63",
])
def test_absurd_finite_amounts_are_refused_not_retried(processor: Processor, case: str, record_number: Any) -> None:
    """Amounts that overflow nano-dollars or the ledger's integers are refused for good, never answered 503."""
    before = {(s.budget, s.scope_key): s.spend for s in processor.engine.state()}
    path, message = _absurd(case)
    status = _post(processor, path, message, "protobuf", False)
    record_number("status", status)
    assert 400 <= status < 500 or status == 200
    assert {(s.budget, s.scope_key): s.spend for s in processor.engine.state()} == before


json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceMetrics", "resourceSpans", "scopeMetrics", "scopeSpans", "metrics", "spans",
                         "sum", "dataPoints", "asDouble", "asInt", "attributes", "key", "value", "stringValue",
                         "intValue", "traceId", "spanId", "timeUnixNano", "name"]) | st.text(max_size=6),
        inner, max_size=4),
    max_leaves=25)


@pytest.mark.reliability(
    "arbitrary JSON documents posted as OTLP/JSON (hypothesis, OTLP key names mixed with junk)",
    "answered 200 or 4xx with a reason, never 5xx",
)
@PROPERTY
@given(document=json_bodies, path=st.sampled_from(["/v1/metrics", "/v1/traces"]))
def test_otlp_json_documents_fuzz(processor: Processor, document: Any, path: str) -> None:
    """Any JSON body: a 2xx/4xx answer."""
    status = processor.request("POST", path, json.dumps(document).encode(), {"Content-Type": "application/json"})
    assert status in OK_STATUSES


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 10)):
        op = rng.random()
        at = rng.randint(0, len(data)) if data else 0
        if op < 0.5 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randint(0, 7)
        elif op < 0.75:
            data[at:at] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 8)))
        else:
            del data[at:at + rng.randint(1, 16)]
    return bytes(data)


def _seed_messages() -> list[tuple[str, Any]]:
    """Valid requests of the kinds the service reads: cost points, token histograms, priced spans."""
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value=AnyValue(string_value="app"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "otel_llmcost"
    cost = sm.metrics.add(name="llmcost.cost", unit="USD")
    cost.sum.aggregation_temporality = 2
    cost.sum.is_monotonic = True
    for i in range(3):
        point = cost.sum.data_points.add(start_time_unix_nano=10**18, time_unix_nano=10**18 + i, as_double=0.01 * i)
        point.attributes.add(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o-mini"))
        point.attributes.add(key="llmcost.user.id", value=AnyValue(string_value=f"u{i}"))
    tokens = sm.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    tokens.histogram.aggregation_temporality = 1
    for kind in ("input", "output"):
        point = tokens.histogram.data_points.add(count=2, sum=120, start_time_unix_nano=10**18,
                                                 time_unix_nano=10**18 + 5)
        point.bucket_counts.extend([0, 1, 1])
        point.explicit_bounds.extend([1.0, 64.0])
        point.attributes.add(key="gen_ai.token.type", value=AnyValue(string_value=kind))
        point.attributes.add(key="gen_ai.request.model", value=AnyValue(string_value="claude-haiku-4-5"))
        point.attributes.add(key="gen_ai.provider.name", value=AnyValue(string_value="anthropic"))
    traces = ExportTraceServiceRequest()
    ss = traces.resource_spans.add().scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    for i in range(3):
        span = ss.spans.add(trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8, name="chat gpt-4o-mini",
                            kind=3, start_time_unix_nano=10**18, end_time_unix_nano=10**18 + 10)
        for key, value in (("gen_ai.request.model", AnyValue(string_value="gpt-4o-mini")),
                           ("gen_ai.provider.name", AnyValue(string_value="openai")),
                           ("gen_ai.usage.input_tokens", AnyValue(int_value=100 * (i + 1))),
                           ("gen_ai.usage.output_tokens", AnyValue(int_value=10))):
            span.attributes.add(key=key, value=value)
    return [("/v1/metrics", metrics), ("/v1/traces", traces)]


def _otlp_json(message: Any) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping, except that trace and span ids are hex, not base64."""
    document = json.loads(MessageToJson(message))
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def _seeds() -> list[tuple[str, str, bytes, str | None]]:
    seeds: list[tuple[str, str, bytes, str | None]] = []
    for path, message in _seed_messages():
        proto = message.SerializeToString()
        seeds.append((path, "application/x-protobuf", proto, None))
        seeds.append((path, "application/json", _otlp_json(message), None))
        seeds.append((path, "application/x-protobuf", gzip.compress(proto), "gzip"))
    return seeds


@pytest.mark.reliability(
    "random-byte mutations of valid OTLP bodies (protobuf, JSON, gzip) for a fixed time (soak: 60 s)",
    "answered 200 or 4xx, never 5xx, never a hang; healthy afterwards",
)
def test_random_bytes_fuzz_of_the_receiver(processor: Processor, record_number: Any) -> None:
    """Bit flips, insertions and cuts of good bodies for FUZZ_SECONDS: only 2xx/4xx answers."""
    seeds = _seeds()
    for path, content_type, body, encoding in seeds:  # the seeds themselves are good requests
        headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
        assert processor.request("POST", path, body, headers) == 200
    rng = random.Random(20261127)
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + FUZZ_SECONDS
    while time.monotonic() < deadline:
        path, content_type, seed, encoding = rng.choice(seeds)
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        status = processor.request("POST", path, _mutate(rng, seed), headers)
        statuses[status] = statuses.get(status, 0) + 1
    record_number("requests", sum(statuses.values()))
    record_number("answers", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    assert set(statuses) <= OK_STATUSES, statuses
    assert processor.healthy()
    processor.ledger_sane()


@pytest.mark.reliability(
    "forged /v1/hints credentials (none, wrong token, token prefix, other scheme, token in the query)",
    "401 every time, 200 only with the right bearer token",
    covered_by=["tests/service/test_http.py::test_hints_need_the_bearer_token_and_report_the_tightest_budget"],
)
@PROPERTY
@given(header=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                        st.sampled_from([f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                                         f"Token {TOKEN}", "Bearer", "Bearer ", TOKEN])))
def test_hints_need_the_exact_token(processor: Processor, header: str | None) -> None:
    """Anything but `Authorization: Bearer <token>` is refused with 401."""
    headers = {} if header is None else {"Authorization": header}
    status = processor.request("GET", f"/v1/hints?token={TOKEN}", headers=headers)
    legit = header is not None and header.strip().lower().startswith("bearer ") and \
        header.strip()[7:].strip() == TOKEN
    assert status == (200 if legit else 401)


def _trickle(port: int, payload: bytes, interval: float, give_up: float) -> tuple[str, float]:
    """Send `payload` one byte every `interval` s; how the server ended it, and after how long."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=give_up) as conn:
        conn.settimeout(interval)
        for byte in payload:
            if time.monotonic() - started > give_up:
                return "still open", time.monotonic() - started
            try:
                conn.sendall(bytes([byte]))
                data = conn.recv(4096)  # nothing is due before the request is complete
                return ("answered" if data else "closed by the server"), time.monotonic() - started
            except TimeoutError:
                continue
            except OSError:
                return "closed by the server", time.monotonic() - started
        conn.settimeout(max(0.1, give_up - (time.monotonic() - started)))
        try:
            data = conn.recv(4096)
            return ("answered" if data else "closed by the server"), time.monotonic() - started
        except TimeoutError:
            return "still open", time.monotonic() - started
        except OSError:
            return "closed by the server", time.monotonic() - started


SLOW = {
    "headers byte by byte": b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                            b"Content-Length: 0\r\n" + b"X-Pad: " + b"a" * 400 + b"\r\n\r\n",
    "body byte by byte": b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n" + b"\x00" * 400,
}


@pytest.mark.reliability(
    "slow-loris: a client trickling its request headers (or its body) in, one byte every 0.2 s",
    "the receiver cuts the connection off by a timeout (within 10 s) and keeps serving others meanwhile",
)
@pytest.mark.parametrize("kind", list(SLOW))
def test_slow_loris_is_cut_off(processor: Processor, kind: str, record_number: Any) -> None:
    """A request trickled in byte by byte is ended by the server, not held open for ever."""
    outcome, took = _trickle(processor.port, SLOW[kind], interval=0.2, give_up=10.0)
    record_number("outcome", f"{outcome} after {took:.1f} s")
    assert processor.healthy()
    assert outcome == "closed by the server"
