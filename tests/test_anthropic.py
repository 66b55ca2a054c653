"""Anthropic instrumentation: the real `anthropic` SDK against the loopback server."""

from __future__ import annotations

import gc
import json
import warnings
from decimal import Decimal

import anthropic
import pytest

import otel_llmcost
from otel_llmcost.instrumentation.anthropic.patch import MessagesEndpoint
from otel_llmcost.store import LocalStoreSpanExporter, connect
from otel_llmcost.testing.llm_server import Reply
from tests.conftest import llmcost_spans, metric_points

M = Decimal(1_000_000)
MSGS = [{"role": "user", "content": "What is the return policy?"}]
HAIKU = "claude-haiku-4-5"  # $1 in, $5 out, $0.10 cache read, $1.25 5m write, $2 1h write
SONNET = "claude-sonnet-4-6"  # $3 in, $15 out, $0.30 cache read, $3.75 5m write, $6 1h write
SDK_SCOPE = "com.anthropic.sdk.python"
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))


def usage(input_tokens, output_tokens, read=0, write_5m=0, write_1h=0):
    """Anthropic-native usage: `input_tokens` leave out cache reads and writes."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h}}


def cost(tokens_and_rates):
    """Exact USD for (tokens, USD per million tokens) pairs."""
    return sum((Decimal(tokens) * Decimal(rate) for tokens, rate in tokens_and_rates), Decimal(0)) / M


@pytest.fixture
def sdk_tracing(request):
    """The SDK's own tracing pointed at the test's tracer provider (its 2.x default is on), or turned off
    by the client option; `both_sdk_tracings` runs a test both ways."""
    return getattr(request, "param", "sdk-traced")


both_sdk_tracings = pytest.mark.parametrize("sdk_tracing", ["sdk-traced", "sdk-untraced"], indirect=True)


@pytest.fixture
def client(llm_server, tracer_provider, sdk_tracing):
    option = {"tracer_provider": tracer_provider} if sdk_tracing == "sdk-traced" else False
    with anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="sk-ant-test-secret",
                             max_retries=0, open_telemetry=option) as client:
        yield client


@pytest.fixture
async def aclient(llm_server, tracer_provider, sdk_tracing):
    option = {"tracer_provider": tracer_provider} if sdk_tracing == "sdk-traced" else False
    async with anthropic.AsyncAnthropic(base_url=llm_server.anthropic_base_url, api_key="sk-ant-test-secret",
                                        max_retries=0, open_telemetry=option) as client:
        yield client


def only_span(exporter):
    spans = llmcost_spans(exporter)
    assert len(spans) == 1, spans
    return spans[0]


def sdk_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == SDK_SCOPE]


def check_one_priced_call(exporter, sdk_tracing, expected_cost=None):
    """Our span is the only one with a cost; the SDK's span (when on) is its child, with the same tokens."""
    ours = only_span(exporter)
    assert ours.kind.name == "CLIENT"
    if expected_cost is not None:
        assert ours.attributes["gen_ai.usage.cost"] == pytest.approx(float(expected_cost), rel=1e-9)
    theirs = [s for s in sdk_spans(exporter) if s.name == "anthropic.messages.create"]
    if sdk_tracing == "sdk-untraced":
        assert theirs == []
        return ours
    assert len(theirs) == 1
    sdk = theirs[0]
    assert sdk.parent is not None and sdk.parent.span_id == ours.context.span_id
    assert sdk.context.trace_id == ours.context.trace_id
    assert "gen_ai.usage.cost" not in sdk.attributes
    if "gen_ai.usage.input_tokens" in sdk.attributes:  # the SDK counts input the way we do
        assert sdk.attributes["gen_ai.usage.input_tokens"] == ours.attributes["gen_ai.usage.input_tokens"]
    return ours


def check_metrics_once(reader, input_tokens, output_tokens, expected_cost, model_calls=1):
    tokens = metric_points(reader, "gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert by_type["input"].sum == input_tokens and by_type["output"].sum == output_tokens
    assert by_type["input"].count == model_calls and by_type["output"].count == model_calls
    assert by_type["input"].explicit_bounds == TOKEN_BUCKETS
    assert sum(p.value for p in metric_points(reader, "llmcost.cost")) == pytest.approx(float(expected_cost), rel=1e-9)


# -- messages.create --------------------------------------------------------------------------------


@both_sdk_tracings
def test_create_priced_exactly(instrumented, client, llm_server, span_exporter, metric_reader, sdk_tracing):
    """A plain call is one CLIENT span with GenAI usage and its exact cost; metrics are recorded once."""
    llm_server.script(Reply(provider="anthropic", usage=usage(1200, 300)))
    message = client.messages.create(model=HAIKU, max_tokens=512, messages=MSGS)
    assert isinstance(message, anthropic.types.Message)
    expected = cost([(1200, 1), (300, 5)])
    span = check_one_priced_call(span_exporter, sdk_tracing, expected)
    attrs = span.attributes
    assert span.name == f"chat {HAIKU}"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == HAIKU
    assert attrs["gen_ai.response.model"] == HAIKU
    assert attrs["gen_ai.request.max_tokens"] == 512
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.output_tokens"] == 300
    assert attrs["gen_ai.response.id"] == message.id
    assert attrs["gen_ai.response.finish_reasons"] == (message.stop_reason,)
    assert attrs["llmcost.price.known"] is True
    assert attrs["server.address"] == "127.0.0.1"
    assert "gen_ai.usage.cache_read.input_tokens" not in attrs
    check_metrics_once(metric_reader, 1200, 300, expected)
    duration = metric_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration[0].count == 1 and duration[0].explicit_bounds[:3] == (0.01, 0.02, 0.04)


@both_sdk_tracings
def test_cache_read_priced_at_cache_rate(instrumented, client, llm_server, span_exporter, metric_reader, sdk_tracing):
    """Cache reads count as input (Anthropic leaves them out of input_tokens) and cost the cache-read rate."""
    llm_server.script(Reply(provider="anthropic", usage=usage(200, 100, read=3000)))
    client.messages.create(model=HAIKU, max_tokens=256, messages=MSGS)
    expected = cost([(200, 1), (3000, "0.1"), (100, 5)])
    attrs = check_one_priced_call(span_exporter, sdk_tracing, expected).attributes
    assert attrs["gen_ai.usage.input_tokens"] == 3200
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 3000
    check_metrics_once(metric_reader, 3200, 100, expected)
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.usage.cache_read.input_tokens")) == 3000


@pytest.mark.parametrize(("write_5m", "write_1h", "rates"), [
    (2000, 0, [(100, 3), (2000, "3.75"), (50, 15)]),
    (0, 2000, [(100, 3), (2000, 6), (50, 15)]),
    (500, 1500, [(100, 3), (500, "3.75"), (1500, 6), (50, 15)]),
], ids=["5m-write", "1h-write", "both-writes"])
@both_sdk_tracings
def test_cache_writes_priced_by_ttl(instrumented, client, llm_server, span_exporter, sdk_tracing,
                                    write_5m, write_1h, rates):
    """5-minute and 1-hour cache writes are each priced at their own rate."""
    llm_server.script(Reply(provider="anthropic", usage=usage(100, 50, write_5m=write_5m, write_1h=write_1h)))
    client.messages.create(model=SONNET, max_tokens=256, messages=MSGS)
    attrs = check_one_priced_call(span_exporter, sdk_tracing, cost(rates)).attributes
    assert attrs["gen_ai.usage.input_tokens"] == 100 + write_5m + write_1h
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == write_5m + write_1h


def test_cache_simulated_by_server_priced(instrumented, client, span_exporter):
    """A real cache_control round trip: the first call writes the prefix, the second reads it, each priced."""
    system = [{"type": "text", "text": "Policy handbook. " * 400, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    first = client.messages.create(model=SONNET, max_tokens=64, system=system, messages=MSGS)
    second = client.messages.create(model=SONNET, max_tokens=64, system=system, messages=MSGS)
    written = first.usage.cache_creation.ephemeral_1h_input_tokens
    assert written > 1024 and second.usage.cache_read_input_tokens == written
    spans = llmcost_spans(span_exporter)
    assert spans[0].attributes["gen_ai.usage.cost"] == pytest.approx(float(cost(
        [(first.usage.input_tokens, 3), (written, 6), (first.usage.output_tokens, 15)])), rel=1e-9)
    assert spans[1].attributes["gen_ai.usage.cost"] == pytest.approx(float(cost(
        [(second.usage.input_tokens, 3), (written, "0.3"), (second.usage.output_tokens, 15)])), rel=1e-9)


@pytest.mark.parametrize(("uncached", "read", "rates"), [
    (150_000, 60_000, [(150_000, 6), (60_000, "0.6"), (1000, "22.5")]),  # 210k input: the >200k tier
    (130_000, 60_000, [(130_000, 3), (60_000, "0.3"), (1000, 15)]),  # 190k input: the base tier
], ids=["above-200k", "below-200k"])
def test_long_context_tier(instrumented, client, llm_server, span_exporter, uncached, read, rates):
    """claude-sonnet-4-5 prices every token at the >200k tier when the input (cache included) passes 200k."""
    llm_server.script(Reply(provider="anthropic", usage=usage(uncached, 1000, read=read)))
    with pytest.warns(DeprecationWarning):  # the SDK warns about this model, with us or without
        client.messages.create(model="claude-sonnet-4-5", max_tokens=2000, messages=MSGS)
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] == pytest.approx(float(cost(rates)), rel=1e-9)


def test_thinking_tokens_are_reasoning(instrumented, client, llm_server, span_exporter):
    """Thinking tokens are the reasoning share of output, billed as output."""
    llm_server.script(Reply(provider="anthropic",
                            usage={**usage(100, 500), "output_tokens_details": {"thinking_tokens": 400}}))
    client.messages.create(model=HAIKU, max_tokens=1024, messages=MSGS)
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 400
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float(cost([(100, 1), (500, 5)])), rel=1e-9)


def test_request_attributes(instrumented, client, span_exporter, llm_server):
    """max_tokens, stream and the sampling parameters (sent through extra_body in 2.x) are on the span."""
    client.messages.create(model=HAIKU, max_tokens=77, messages=MSGS,
                           extra_body={"temperature": 0.25, "top_p": 0.9, "top_k": 40})
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.request.max_tokens"] == 77
    assert attrs["gen_ai.request.temperature"] == 0.25
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.top_k"] == 40
    assert llm_server.requests[-1].json["temperature"] == 0.25  # sent as the app asked


def test_no_prompt_text_or_key_in_telemetry(instrumented, client, span_exporter):
    """Without the opt-in, no prompt or response text reaches our span; the API key never does."""
    client.messages.create(model=HAIKU, max_tokens=64, system="You are terse.", messages=MSGS)
    text = repr(only_span(span_exporter).attributes)
    assert "return policy" not in text and "terse" not in text and "sk-ant-test-secret" not in text


def test_content_captured_only_when_opted_in(tracer_provider, meter_provider, client, span_exporter):
    """capture_content records the system prompt, the messages and the reply."""
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, capture_content=True)
    try:
        message = client.messages.create(model=HAIKU, max_tokens=64, system="You are terse.", messages=MSGS)
        with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
            streamed = stream.get_final_text()
    finally:
        otel_llmcost.uninstrument()
    plain, helper = llmcost_spans(span_exporter)
    assert "return policy" in plain.attributes["gen_ai.input.messages"]
    assert "terse" in plain.attributes["gen_ai.system_instructions"]
    (output,) = json.loads(plain.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["content"][0]["text"] == message.content[0].text
    (output,) = json.loads(helper.attributes["gen_ai.output.messages"])
    assert output["content"] == [{"type": "text", "text": streamed}]


def test_parse_priced(instrumented, client, llm_server, span_exporter):
    """`messages.parse` (which posts without `create`) is priced like create."""
    llm_server.script(Reply(provider="anthropic", usage=usage(400, 40)))
    parsed = client.messages.parse(model=HAIKU, max_tokens=64, messages=MSGS)
    assert isinstance(parsed, anthropic.types.ParsedMessage)
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] == pytest.approx(
        float(cost([(400, 1), (40, 5)])), rel=1e-9)


def test_raw_response_priced_and_unchanged(instrumented, client, llm_server, span_exporter):
    """`with_raw_response` gives the app the SDK's raw response; the call is priced from its body."""
    llm_server.script(Reply(provider="anthropic", usage=usage(300, 30)))
    raw = client.messages.with_raw_response.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert raw.parse().usage.input_tokens == 300
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] == pytest.approx(
        float(cost([(300, 1), (30, 5)])), rel=1e-9)


def test_streaming_response_left_to_the_app(instrumented, client, llm_server, span_exporter, metric_reader):
    """A `with_streaming_response` body is the app's to read: we do not read it, and flag the call unpriced."""
    with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=64, messages=MSGS) as response:
        span = only_span(span_exporter)
        assert not response.http_response.is_closed  # still unread when our span ended
        assert response.parse().usage.input_tokens > 0
    assert span.attributes["llmcost.price.known"] is False
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 1


@both_sdk_tracings
def test_beta_create_priced(instrumented, client, llm_server, span_exporter, sdk_tracing):
    """`beta.messages.create` is priced like the stable one."""
    llm_server.script(Reply(provider="anthropic", usage=usage(500, 50, read=1000)))
    message = client.beta.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert isinstance(message, anthropic.types.beta.BetaMessage)
    check_one_priced_call(span_exporter, sdk_tracing, cost([(500, 1), (1000, "0.1"), (50, 5)]))


def test_provider_name_follows_the_client(instrumented, llm_server, span_exporter):
    """A client that names another GenAI provider (Bedrock, Vertex) is recorded and priced under that name."""

    class BedrockLike(anthropic.Anthropic):
        _gen_ai_provider_name = "aws.bedrock"

    with BedrockLike(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                     open_telemetry=False) as bedrock:
        bedrock.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                        open_telemetry=False).messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    first, second = llmcost_spans(span_exporter)
    assert first.attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert second.attributes["gen_ai.provider.name"] == "anthropic"


def test_unknown_model_flagged_not_zero(instrumented, client, span_exporter, metric_reader):
    """A model without a price is flagged and counted, never priced as free."""
    client.messages.create(model="claude-house-finetune", max_tokens=64, messages=MSGS)
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.price.known"] is False and "gen_ai.usage.cost" not in attrs
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 1


@both_sdk_tracings
def test_store_keeps_one_row_per_call(instrumented, client, span_exporter, tmp_path, sdk_tracing):
    """Whoever reads the spans (here the embedded store) sees one priced call, not ours plus the SDK's."""
    client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    exporter = LocalStoreSpanExporter(tmp_path / "calls.db")
    exporter.export(span_exporter.get_finished_spans())
    exporter.shutdown()
    rows = connect(tmp_path / "calls.db").execute("SELECT scope, cost_usd FROM calls").fetchall()
    assert len(rows) == 1 and rows[0][0] == "otel_llmcost" and rows[0][1] > 0


# -- errors -----------------------------------------------------------------------------------------


def capture_status_errors(client, monkeypatch):
    """Record every status exception the SDK makes, to check the app receives that very object."""
    made = []
    original = client._make_status_error_from_response

    def recording(response):
        error = original(response)
        made.append(error)
        return error

    monkeypatch.setattr(client, "_make_status_error_from_response", recording)
    return made


@both_sdk_tracings
@pytest.mark.parametrize(("status", "error"), [
    (400, anthropic.BadRequestError), (401, anthropic.AuthenticationError),
    (429, anthropic.RateLimitError), (500, anthropic.InternalServerError)])
def test_errors_pass_through_unchanged(instrumented, client, llm_server, span_exporter, metric_reader,
                                       monkeypatch, sdk_tracing, status, error):
    """The SDK's own exception instance reaches the app; our span records error.type and no cost."""
    made = capture_status_errors(client, monkeypatch)
    llm_server.script(Reply(provider="anthropic", status=status))
    with pytest.raises(error) as info:
        client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert made and info.value is made[-1]
    span = only_span(span_exporter)
    assert span.attributes["error.type"] == error.__qualname__
    assert span.status.status_code.name == "ERROR"
    assert "gen_ai.usage.cost" not in span.attributes
    assert not metric_points(metric_reader, "llmcost.cost")
    duration = metric_points(metric_reader, "gen_ai.client.operation.duration")
    assert [p.attributes["error.type"] for p in duration] == [error.__qualname__]
    if sdk_tracing == "sdk-traced":
        (sdk,) = sdk_spans(span_exporter)
        assert sdk.parent.span_id == span.context.span_id and sdk.status.status_code.name == "ERROR"


async def test_async_errors_pass_through_unchanged(instrumented, aclient, llm_server, span_exporter, monkeypatch):
    """The async client's exception instance reaches the app unchanged; the span says so."""
    made = capture_status_errors(aclient, monkeypatch)
    llm_server.script(Reply(provider="anthropic", status=429))
    with pytest.raises(anthropic.RateLimitError) as info:
        await aclient.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert info.value is made[-1]
    assert only_span(span_exporter).attributes["error.type"] == "RateLimitError"


def test_stream_helper_error_passes_through(instrumented, client, llm_server, span_exporter, monkeypatch):
    """An error status on `messages.stream` raises the SDK's exception from `__enter__`, and the span ends."""
    made = capture_status_errors(client, monkeypatch)
    llm_server.script(Reply(provider="anthropic", status=500))
    with pytest.raises(anthropic.InternalServerError) as info, \
            client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS):
        pass
    assert info.value is made[-1]
    assert only_span(span_exporter).attributes["error.type"] == "InternalServerError"


def test_timeout_recorded(instrumented, llm_server, span_exporter):
    """A client timeout raises the SDK's APITimeoutError unchanged; the span says so."""
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0, timeout=0.2,
                                 open_telemetry=False)
    llm_server.script(Reply(provider="anthropic", delay=1.0))
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert only_span(span_exporter).attributes["error.type"] == "APITimeoutError"


# -- streams ----------------------------------------------------------------------------------------


@both_sdk_tracings
def test_stream_priced_when_exhausted(instrumented, client, llm_server, span_exporter, metric_reader, sdk_tracing):
    """`create(stream=True)` gives the app the SDK's events; usage comes from message_start and message_delta."""
    llm_server.script(Reply(provider="anthropic", usage=usage(800, 120, read=2000, write_1h=1000)))
    stream = client.messages.create(model=HAIKU, max_tokens=256, messages=MSGS, stream=True)
    assert isinstance(stream, anthropic.Stream)
    events = list(stream)
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    expected = cost([(800, 1), (2000, "0.1"), (1000, 2), (120, 5)])
    attrs = check_one_priced_call(span_exporter, sdk_tracing, expected).attributes
    assert attrs["gen_ai.usage.input_tokens"] == 3800 and attrs["gen_ai.usage.output_tokens"] == 120
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert "llmcost.stream.incomplete" not in attrs and "llmcost.usage.estimated" not in attrs
    check_metrics_once(metric_reader, 3800, 120, expected)


@both_sdk_tracings
async def test_async_stream_priced_when_exhausted(instrumented, aclient, llm_server, span_exporter, metric_reader,
                                                  sdk_tracing):
    """The async stream is priced like the sync one, its SDK span under ours."""
    llm_server.script(Reply(provider="anthropic", usage=usage(800, 120, read=2000)))
    stream = await aclient.messages.create(model=HAIKU, max_tokens=256, messages=MSGS, stream=True)
    assert isinstance(stream, anthropic.AsyncStream)
    events = [event async for event in stream]
    assert events[-1].type == "message_stop"
    expected = cost([(800, 1), (2000, "0.1"), (120, 5)])
    check_one_priced_call(span_exporter, sdk_tracing, expected)
    check_metrics_once(metric_reader, 2800, 120, expected)


def test_stream_closed_early_is_incomplete(instrumented, client, llm_server, span_exporter):
    """A stream closed before message_stop ends the span at once, marked incomplete, output estimated from text."""
    llm_server.script(Reply(provider="anthropic", text="alpha beta gamma delta", usage=usage(900, 6)))
    stream = client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True)
    for event in stream:
        if event.type == "content_block_delta":  # the first word, "alpha"
            break
    stream.close()
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.stream.incomplete"] is True and attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 900
    assert attrs["gen_ai.usage.output_tokens"] == 2  # 5 characters, ~4 a token
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float(cost([(900, 1), (2, 5)])), rel=1e-9)


async def test_async_stream_closed_early_is_incomplete(instrumented, aclient, llm_server, span_exporter):
    """An async stream closed early ends its span once, marked incomplete."""
    llm_server.script(Reply(provider="anthropic", usage=usage(900, 6)))
    stream = await aclient.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True)
    async for event in stream:
        if event.type == "message_start":
            break
    await stream.close()
    await stream.close()
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.stream.incomplete"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 900 and attrs["gen_ai.usage.output_tokens"] == 1


def test_stream_context_manager_exit_ends_span(instrumented, client, span_exporter):
    """Leaving the stream's `with` block ends the span."""
    with client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True) as stream:
        next(iter(stream))
    assert only_span(span_exporter).attributes["llmcost.stream.incomplete"] is True


def test_stream_dropped_unread_ends_span(instrumented, client, span_exporter):
    """A stream the app drops without reading still ends its span when collected, with no usage to price."""
    stream = client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True)
    del stream
    gc.collect()
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.stream.incomplete"] is True and attrs["llmcost.price.known"] is False


@both_sdk_tracings
def test_stream_cut_by_server(instrumented, client, llm_server, span_exporter, metric_reader, sdk_tracing):
    """A connection cut mid-stream raises in the app as without us; the span is ERROR with the tokens seen."""
    llm_server.script(Reply(provider="anthropic", text="alpha beta gamma delta", usage=usage(700, 6, read=300),
                            cut_after_chunks=5))  # message_start, block start, ping, "alpha", " beta"
    seen = []
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever the SDK raises must reach the app
        for event in client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]
    span = only_span(span_exporter)
    attrs = span.attributes
    assert span.status.status_code.name == "ERROR"
    assert attrs["error.type"] == type(info.value).__qualname__
    assert attrs["llmcost.stream.incomplete"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 1000 and attrs["gen_ai.usage.cache_read.input_tokens"] == 300
    assert attrs["gen_ai.usage.output_tokens"] == 3  # "alpha beta": 10 characters, no message_delta yet
    assert attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.response.id"].startswith("msg_")
    expected = cost([(700, 1), (300, "0.1"), (3, 5)])
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float(expected), rel=1e-9)
    check_metrics_once(metric_reader, 1000, 3, expected)
    if sdk_tracing == "sdk-traced":
        (sdk,) = sdk_spans(span_exporter)
        assert sdk.parent.span_id == span.context.span_id and sdk.status.status_code.name == "ERROR"


async def test_async_stream_cut_by_server(instrumented, aclient, llm_server, span_exporter):
    """An async stream cut by the server raises in the app; the span is ERROR with the tokens seen."""
    llm_server.script(Reply(provider="anthropic", usage=usage(700, 6), cut_after_chunks=2))
    stream = await aclient.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True)
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever the SDK raises must reach the app
        async for _ in stream:
            pass
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == type(info.value).__qualname__
    assert span.attributes["gen_ai.usage.input_tokens"] == 700


# -- the messages.stream helper -----------------------------------------------------------------------


@both_sdk_tracings
def test_stream_helper_final_message(instrumented, client, llm_server, span_exporter, metric_reader, sdk_tracing):
    """`messages.stream` hands the app the SDK's own manager and MessageStream; one priced span."""
    llm_server.script(Reply(provider="anthropic", usage=usage(1500, 90, read=500)))
    manager = client.messages.stream(model=HAIKU, max_tokens=256, messages=MSGS)
    assert type(manager) is anthropic.lib.streaming.MessageStreamManager
    with manager as stream:
        assert type(stream) is anthropic.lib.streaming.MessageStream
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text and final.usage.output_tokens == 90
    assert stream.request_id is not None  # the response is reachable through the stream as usual
    expected = cost([(1500, 1), (500, "0.1"), (90, 5)])
    attrs = check_one_priced_call(span_exporter, sdk_tracing, expected).attributes
    assert attrs["gen_ai.request.stream"] is True
    assert "llmcost.stream.incomplete" not in attrs
    check_metrics_once(metric_reader, 2000, 90, expected)


def test_stream_helper_until_done(instrumented, client, llm_server, span_exporter):
    """`until_done()` reads the stream through our proxy: the span is priced and complete."""
    llm_server.script(Reply(provider="anthropic", usage=usage(100, 10)))
    with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
        stream.until_done()
        assert stream.current_message_snapshot.usage.output_tokens == 10
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] == pytest.approx(
        float(cost([(100, 1), (10, 5)])), rel=1e-9)


@both_sdk_tracings
def test_stream_helper_early_exit(instrumented, client, llm_server, span_exporter, sdk_tracing):
    """Leaving the helper's `with` block mid-stream ends the span once, marked incomplete."""
    llm_server.script(Reply(provider="anthropic", text="alpha beta gamma delta", usage=usage(600, 6)))
    with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
        for text in stream.text_stream:
            assert text == "alpha"
            break
    gc.collect()
    attrs = check_one_priced_call(span_exporter, sdk_tracing).attributes
    assert attrs["llmcost.stream.incomplete"] is True
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float(cost([(600, 1), (2, 5)])), rel=1e-9)


def test_stream_helper_entered_and_dropped(instrumented, client, span_exporter):
    """A helper stream entered by hand and dropped unread still ends its span, once, when collected."""
    stream = client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS).__enter__()
    next(iter(stream))
    del stream
    gc.collect()
    assert only_span(span_exporter).attributes["llmcost.stream.incomplete"] is True


def test_stream_helper_not_entered_makes_no_span(instrumented, client, llm_server, span_exporter):
    """A helper manager that is never entered sends nothing and records nothing, as without us."""
    client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS)
    gc.collect()
    assert llmcost_spans(span_exporter) == [] and llm_server.requests == []


@both_sdk_tracings
async def test_async_stream_helper(instrumented, aclient, llm_server, span_exporter, metric_reader, sdk_tracing):
    """The async helper gives the SDK's AsyncMessageStream; `get_final_message()` is priced once."""
    llm_server.script(Reply(provider="anthropic", usage=usage(1500, 90, write_5m=1024)))
    manager = aclient.messages.stream(model=HAIKU, max_tokens=256, messages=MSGS)
    assert type(manager) is anthropic.lib.streaming.AsyncMessageStreamManager
    async with manager as stream:
        assert type(stream) is anthropic.lib.streaming.AsyncMessageStream
        chunks = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(chunks) == final.content[0].text
    expected = cost([(1500, 1), (1024, "1.25"), (90, 5)])
    check_one_priced_call(span_exporter, sdk_tracing, expected)
    check_metrics_once(metric_reader, 2524, 90, expected)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_stream_helper_sends_changed_arguments(instrumented, client, aclient, llm_server, span_exporter,
                                                     monkeypatch, asynchronous):
    """Arguments changed in the call path (a guard rerouting to another model) reach the helper's request."""
    prepare = MessagesEndpoint.prepare
    monkeypatch.setattr(MessagesEndpoint, "prepare", lambda self, kwargs: prepare(self, {**kwargs, "model": SONNET}))
    if asynchronous:
        async with aclient.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
            final = await stream.get_final_message()
    else:
        with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
            final = stream.get_final_message()
    assert final.model == SONNET and llm_server.requests[-1].json["model"] == SONNET
    assert only_span(span_exporter).attributes["gen_ai.response.model"] == SONNET


async def test_async_stream_helper_early_exit(instrumented, aclient, llm_server, span_exporter):
    """Leaving the async helper early ends the span once, marked incomplete."""
    llm_server.script(Reply(provider="anthropic", usage=usage(600, 6)))
    async with aclient.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
        async for event in stream:
            if event.type == "message_start":
                break
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.stream.incomplete"] is True and attrs["gen_ai.usage.input_tokens"] == 600


@both_sdk_tracings
def test_beta_stream_helper_priced(instrumented, client, llm_server, span_exporter, sdk_tracing):
    """`beta.messages.stream` is routed through the same wrapper as the stable helper."""
    llm_server.script(Reply(provider="anthropic", usage=usage(100, 10)))
    with client.beta.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
        stream.get_final_message()
    check_one_priced_call(span_exporter, sdk_tracing, cost([(100, 1), (10, 5)]))


# -- batches ----------------------------------------------------------------------------------------


def batch_requests():
    requests = [{"custom_id": f"req-{i}", "params": {"model": model, "max_tokens": 64, "messages": [
        {"role": "user", "content": f"Question {i}: " + "x" * 40 * i}]}} for i, model in enumerate([HAIKU, HAIKU, SONNET])]
    return requests + [{"custom_id": "req-bad", "params": {"model": HAIKU, "max_tokens": 64, "messages": []}}]


def batch_cost(results):
    """Half the standard price of every succeeded result, by model."""
    rates = {HAIKU: (1, 5), SONNET: (3, 15)}
    total = {HAIKU: Decimal(0), SONNET: Decimal(0)}
    for line in results:
        if line.result.type == "succeeded":
            message = line.result.message
            rate_in, rate_out = rates[message.model]
            total[message.model] += cost([(message.usage.input_tokens, rate_in), (message.usage.output_tokens, rate_out)])
    return {model: value / 2 for model, value in total.items()}


def test_batch_results_priced_at_half(instrumented, client, span_exporter, metric_reader):
    """Reading batch results prices each succeeded result at 50%, one call per model; errored ones are skipped."""
    batch = client.messages.batches.create(requests=batch_requests())
    results = list(client.messages.batches.results(batch.id))
    assert [r.result.type for r in results] == ["succeeded", "succeeded", "succeeded", "errored"]
    expected = batch_cost(results)
    spans = {s.attributes["gen_ai.request.model"]: s for s in llmcost_spans(span_exporter)}
    assert set(spans) == {HAIKU, SONNET}
    for model, span in spans.items():
        assert span.attributes["gen_ai.operation.name"] == "batch"
        assert span.attributes["gen_ai.provider.name"] == "anthropic"
        assert span.attributes["llmcost.batch"] is True
        assert span.attributes["llmcost.batch.id"] == batch.id
        assert span.attributes["gen_ai.usage.cost"] == pytest.approx(float(expected[model]), rel=1e-9)
    haiku_input = sum(r.result.message.usage.input_tokens for r in results[:2])
    assert spans[HAIKU].attributes["gen_ai.usage.input_tokens"] == haiku_input
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.cost")) == pytest.approx(
        float(sum(expected.values())), rel=1e-9)


def test_batch_results_read_twice_counts_once(instrumented, client, span_exporter, metric_reader):
    """Reading the same batch's results again (or finishing an interrupted read) never counts a result twice."""
    batch = client.messages.batches.create(requests=batch_requests())
    partial = client.messages.batches.results(batch.id)
    first = next(iter(partial))
    partial.close()
    assert [s.attributes["gen_ai.request.model"] for s in llmcost_spans(span_exporter)] == [HAIKU]
    results = list(client.messages.batches.results(batch.id))
    list(client.messages.batches.results(batch.id))  # a third read: nothing new
    assert results[0].custom_id == first.custom_id
    expected = batch_cost(results)
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 3  # haiku (first read: one result), haiku + sonnet (second read: the rest)
    assert sum(s.attributes["gen_ai.usage.cost"] for s in spans) == pytest.approx(
        float(sum(expected.values())), rel=1e-9)
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.cost")) == pytest.approx(
        float(sum(expected.values())), rel=1e-9)


async def test_async_batch_results_priced(instrumented, aclient, span_exporter):
    """Async batch results are priced at 50% like the sync ones."""
    batch = await aclient.messages.batches.create(requests=batch_requests())
    results = [line async for line in await aclient.messages.batches.results(batch.id)]
    expected = batch_cost(results)
    spans = {s.attributes["gen_ai.request.model"]: s for s in llmcost_spans(span_exporter)}
    assert {m: s.attributes["gen_ai.usage.cost"] for m, s in spans.items()} == pytest.approx(
        {m: float(v) for m, v in expected.items()}, rel=1e-9)


# -- the SDK's own tracing ----------------------------------------------------------------------------


def test_sdk_tracing_off_by_environment(instrumented, llm_server, span_exporter, tracer_provider, monkeypatch):
    """ANTHROPIC_OPEN_TELEMETRY=false turns the SDK's span off; ours is unchanged."""
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0)
    client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    assert sdk_spans(span_exporter) == []
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] > 0


def test_sdk_span_without_us_has_usage_but_no_cost(llm_server, tracer_provider, span_exporter):
    """Uninstrumented, the SDK's span alone carries GenAI usage (no cost), as the store expects."""
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                 open_telemetry={"tracer_provider": tracer_provider})
    client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
    (sdk,) = span_exporter.get_finished_spans()
    assert sdk.instrumentation_scope.name == SDK_SCOPE and sdk.parent is None
    assert sdk.attributes["gen_ai.usage.input_tokens"] > 0 and "gen_ai.usage.cost" not in sdk.attributes


# -- transparency ------------------------------------------------------------------------------------


def test_same_results_with_and_without_us(llm_server, tracer_provider, meter_provider):
    """The app gets equal messages, event sequences and helper results whether instrumented or not."""
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                 open_telemetry=False)

    def run():
        message = client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS)
        events = [e.type for e in client.messages.create(model=HAIKU, max_tokens=64, messages=MSGS, stream=True)]
        with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
            final = stream.get_final_message()
        return (message.content, message.usage), events, (final.content, final.usage)

    bare = run()
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning of ours (e.g. an un-awaited coroutine)
            traced = run()
    finally:
        otel_llmcost.uninstrument()
    assert traced == bare


def test_uninstrument_restores_originals(llm_server, tracer_provider, meter_provider, span_exporter):
    """After uninstrument() the SDK methods are the originals and no span is made."""
    original = anthropic.resources.messages.messages.Messages.stream
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert anthropic.resources.messages.messages.Messages.stream is not original
    otel_llmcost.uninstrument()
    assert anthropic.resources.messages.messages.Messages.stream is original
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                 open_telemetry=False)
    with client.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS) as stream:
        stream.get_final_message()
    assert llmcost_spans(span_exporter) == []


async def test_async_helper_never_entered_warns_as_without_us(llm_server, tracer_provider, meter_provider):
    """An async helper never entered sends nothing and warns exactly as without us (no coroutine of ours)."""
    aclient = anthropic.AsyncAnthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                       open_telemetry=False)

    def warnings_of_an_unentered_helper():
        gc.collect()  # other tests' garbage warns on its own
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            aclient.messages.stream(model=HAIKU, max_tokens=64, messages=MSGS)
            gc.collect()
        return sorted(str(w.message) for w in caught if "never awaited" in str(w.message))

    bare = warnings_of_an_unentered_helper()
    assert bare  # the SDK's request coroutine, made by stream() and never awaited
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        traced = warnings_of_an_unentered_helper()
    finally:
        otel_llmcost.uninstrument()
    assert traced == bare
    assert llm_server.requests == []


def test_sdk_deprecation_warning_still_shown(tmp_path, llm_server):
    """The SDK's DeprecationWarning for a retiring model still reaches a script's stderr when instrumented."""
    import os
    import subprocess
    import sys

    script = tmp_path / "app.py"
    script.write_text(
        "import os, anthropic, otel_llmcost\n"
        "otel_llmcost.instrument()\n"
        "c = anthropic.Anthropic(base_url=os.environ['BASE'], api_key='k', max_retries=0)\n"
        "c.messages.create(model='claude-sonnet-4-5', max_tokens=5, messages=[{'role': 'user', 'content': 'hi'}])\n"
    )
    env = {**os.environ, "BASE": llm_server.anthropic_base_url, "ANTHROPIC_OPEN_TELEMETRY": "false"}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning: The model 'claude-sonnet-4-5' is deprecated" in result.stderr
