"""Google GenAI instrumentation: the real `google-genai` SDK against the loopback server.

Expected costs are worked out by hand from genai-prices' published rates (USD per million tokens):
gemini-2.5-flash input 0.30, cache read 0.03, output 2.50; gemini-2.5-pro input 1.25 / cache read 0.125 /
output 10 up to 200k prompt tokens and 2.50 / 0.25 / 15 above; gemini-embedding-001 input 0.15.
"""

from __future__ import annotations

import asyncio
import gc
import json
from decimal import Decimal

import pytest
from google import genai
from google.genai import errors, types
from google.genai._api_client import BaseApiClient

import otel_llmcost
from otel_llmcost.instrumentation.google_genai import generate_targets
from otel_llmcost.instrumentation.google_genai.patch import model_name
from otel_llmcost.testing.llm_server import Reply
from tests.conftest import llmcost_spans, metric_points

M = Decimal(1_000_000)
FLASH_IN, FLASH_CACHE, FLASH_OUT = Decimal("0.3"), Decimal("0.03"), Decimal("2.5")
PROMPT = "a" * 4000  # the loopback server counts 4 characters a token: 1000 prompt tokens
WORDS = " ".join(f"w{i}" for i in range(18))  # streamed as 3 chunks of 6 words
FIRST_CHUNK = "w0 w1 w2 w3 w4 w5"  # 17 characters: estimated at 5 tokens


@pytest.fixture
def client(llm_server):
    return genai.Client(api_key="test", http_options=types.HttpOptions(base_url=llm_server.google_base_url))


@pytest.fixture
def captured(tracer_provider, meter_provider):
    """Every SDK instrumented with prompt and answer capture turned on."""
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                                        capture_content=True)
    yield telemetry
    otel_llmcost.uninstrument()


def only_span(exporter):
    spans = llmcost_spans(exporter)
    assert len(spans) == 1, spans
    return spans[0]


def cost(span) -> float:
    return span.attributes["gen_ai.usage.cost"]


def exact(expected: Decimal):
    return pytest.approx(float(expected), rel=1e-9)


def gemini(**usage):
    return Reply(provider="google", usage=usage)


# -- one response ----------------------------------------------------------------------------------
def test_generate_content_priced(instrumented, client, llm_server, span_exporter):
    """A generate_content call is one CLIENT span with request config, response details, usage and exact cost."""
    llm_server.script(Reply(provider="google", text="Fine.", usage={"promptTokenCount": 1200,
                                                                     "candidatesTokenCount": 300}))
    config = types.GenerateContentConfig(temperature=0.2, top_p=0.9, top_k=40, max_output_tokens=512, seed=7)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="Hi", config=config)
    assert isinstance(response, types.GenerateContentResponse) and response.text == "Fine."
    span = only_span(span_exporter)
    attrs = span.attributes
    assert span.name == "generate_content gemini-2.5-flash"
    assert span.kind.name == "CLIENT"
    assert attrs["gen_ai.provider.name"] == "gcp.gemini"
    assert attrs["gen_ai.operation.name"] == "generate_content"
    assert attrs["gen_ai.request.model"] == "gemini-2.5-flash"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.top_k"] == 40
    assert attrs["gen_ai.request.max_tokens"] == 512
    assert attrs["gen_ai.request.seed"] == 7
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == llm_server.port
    assert attrs["gen_ai.response.model"] == "gemini-2.5-flash"
    assert attrs["gen_ai.response.id"] == response.response_id
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.output_tokens"] == 300
    assert "gen_ai.usage.cache_read.input_tokens" not in attrs
    assert cost(span) == exact((1200 * FLASH_IN + 300 * FLASH_OUT) / M)
    assert attrs["llmcost.price.known"] is True
    assert "llmcost.usage.estimated" not in attrs and "llmcost.stream.incomplete" not in attrs


def test_config_as_dict_and_models_prefix(instrumented, client, llm_server, span_exporter):
    """A dict config gives the same request attributes; `models/x` is recorded and priced as model x."""
    llm_server.script(gemini(promptTokenCount=10, candidatesTokenCount=20))
    client.models.generate_content(model="models/gemini-2.5-flash", contents="Hi",
                                   config={"temperature": 0.5, "max_output_tokens": 64})
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.request.model"] == "gemini-2.5-flash"
    assert attrs["gen_ai.request.temperature"] == 0.5 and attrs["gen_ai.request.max_tokens"] == 64
    assert cost(only_span(span_exporter)) == exact((10 * FLASH_IN + 20 * FLASH_OUT) / M)


def test_cached_content_priced_at_cache_rate(instrumented, client, llm_server, span_exporter):
    """Tokens read from a Gemini context cache are part of the prompt and priced at the cache-read rate."""
    cache = client.caches.create(model="gemini-2.5-flash", config=types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[types.Part(text="c" * 8000)])]))  # 2000 tokens
    llm_server.script(Reply(provider="google", text="Yes, it is."))  # 11 characters: 3 output tokens
    response = client.models.generate_content(model="gemini-2.5-flash", contents="q" * 400,
                                              config=types.GenerateContentConfig(cached_content=cache.name))
    assert response.usage_metadata.prompt_token_count == 2100
    span = only_span(span_exporter)  # creating the cache is not a model call
    attrs = span.attributes
    assert attrs["gen_ai.usage.input_tokens"] == 2100
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert cost(span) == exact((100 * FLASH_IN + 2000 * FLASH_CACHE + 3 * FLASH_OUT) / M)


def test_thinking_tokens_billed_as_output(instrumented, client, llm_server, span_exporter):
    """Thoughts are billed as output on top of the candidates' tokens, and their share is on the span."""
    llm_server.script(gemini(promptTokenCount=500, candidatesTokenCount=120, thoughtsTokenCount=880))
    client.models.generate_content(model="gemini-2.5-flash", contents="Think.")
    span = only_span(span_exporter)
    assert span.attributes["gen_ai.usage.output_tokens"] == 1000
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 880
    assert cost(span) == exact((500 * FLASH_IN + 1000 * FLASH_OUT) / M)


@pytest.mark.parametrize(("prompt", "expected"), [
    (150_000, (100_000 * Decimal("1.25") + 50_000 * Decimal("0.125") + 2_000 * 10) / M),
    (250_000, (200_000 * Decimal("2.5") + 50_000 * Decimal("0.25") + 2_000 * 15) / M),
])
def test_tiered_price_by_prompt_size(instrumented, client, llm_server, span_exporter, prompt, expected):
    """gemini-2.5-pro costs more for every token of a request whose prompt is above 200k tokens."""
    llm_server.script(gemini(promptTokenCount=prompt, cachedContentTokenCount=50_000, candidatesTokenCount=2000))
    client.models.generate_content(model="gemini-2.5-pro", contents="Long.")
    assert cost(only_span(span_exporter)) == exact(expected)


def test_raw_http_response_priced(instrumented, client, llm_server, span_exporter):
    """With should_return_http_response the app gets the raw body, and the call is priced from that body."""
    llm_server.script(gemini(promptTokenCount=1200, candidatesTokenCount=300))
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="Hi", config=types.GenerateContentConfig(should_return_http_response=True))
    assert response.usage_metadata is None and response.sdk_http_response.body
    span = only_span(span_exporter)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert cost(span) == exact((1200 * FLASH_IN + 300 * FLASH_OUT) / M)


def test_vertex_client_named_vertex_ai(instrumented, llm_server, span_exporter):
    """A client in Vertex AI mode is recorded as provider gcp.vertex_ai (here on the error path)."""
    vertex = genai.Client(vertexai=True, api_key="test",
                          http_options=types.HttpOptions(base_url=llm_server.google_base_url))
    with pytest.raises(errors.ClientError):  # the loopback server answers the Gemini API paths only
        vertex.models.generate_content(model="publishers/google/models/gemini-2.5-flash", contents="Hi")
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert attrs["gen_ai.request.model"] == "gemini-2.5-flash"


def test_chat_turns_each_priced_once(instrumented, client, llm_server, span_exporter):
    """Each turn of `client.chats` is one model request and one priced span."""
    llm_server.script(Reply(provider="google", usage={"promptTokenCount": 10, "candidatesTokenCount": 5}, times=2))
    chat = client.chats.create(model="gemini-2.5-flash")
    chat.send_message("One")
    chat.send_message("Two")
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 2
    assert sum(cost(s) for s in spans) == exact(2 * (10 * FLASH_IN + 5 * FLASH_OUT) / M)


def test_function_tools_request_priced(instrumented, client, llm_server, span_exporter):
    """A call with Python functions as tools (automatic function calling on) prices its model request once."""
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    llm_server.script(gemini(promptTokenCount=300, candidatesTokenCount=20))
    client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Oslo?",
                                   config=types.GenerateContentConfig(tools=[get_weather]))
    assert "afc" in llm_server.requests[-1].headers.get("x-goog-api-client", "")
    assert cost(only_span(span_exporter)) == exact((300 * FLASH_IN + 20 * FLASH_OUT) / M)


# -- errors ----------------------------------------------------------------------------------------
@pytest.fixture
def raised(monkeypatch):
    """The exceptions the SDK's HTTP layer raised, to check that the app gets the very same objects."""
    seen: list[BaseException] = []
    request, async_request = BaseApiClient.request, BaseApiClient.async_request

    def spy(self, *args, **kwargs):
        try:
            return request(self, *args, **kwargs)
        except BaseException as exc:
            seen.append(exc)
            raise

    async def async_spy(self, *args, **kwargs):
        try:
            return await async_request(self, *args, **kwargs)
        except BaseException as exc:
            seen.append(exc)
            raise

    monkeypatch.setattr(BaseApiClient, "request", spy)
    monkeypatch.setattr(BaseApiClient, "async_request", async_spy)
    return seen


@pytest.mark.parametrize(("status", "error_class"), [
    (400, errors.ClientError), (401, errors.ClientError), (429, errors.ClientError), (500, errors.ServerError),
])
def test_errors_pass_through(instrumented, client, llm_server, span_exporter, metric_reader, raised,
                             status, error_class):
    """An API error reaches the app as the same exception object; the span has error.type and no cost."""
    llm_server.script(Reply(provider="google", status=status))
    with pytest.raises(error_class) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert caught.value.code == status
    assert raised == [caught.value]
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == error_class.__qualname__
    assert "gen_ai.usage.cost" not in span.attributes
    assert metric_points(metric_reader, "llmcost.cost") == []
    duration = metric_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration[0].attributes["error.type"] == error_class.__qualname__


async def test_async_error_pass_through(instrumented, client, llm_server, span_exporter, raised):
    """An async API error reaches the app as the same exception object, with error.type on the span."""
    llm_server.script(Reply(provider="google", status=429))
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert raised == [caught.value]
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR" and span.attributes["error.type"] == "ClientError"


def test_stream_rejected_before_first_chunk(instrumented, client, llm_server, span_exporter):
    """A stream the API rejects raises on first iteration; its span is an ERROR with no usage."""
    llm_server.script(Reply(provider="google", status=400))
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi")
    with pytest.raises(errors.ClientError):
        next(stream)
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR" and span.attributes["error.type"] == "ClientError"
    assert "gen_ai.usage.input_tokens" not in span.attributes


# -- streams ---------------------------------------------------------------------------------------
def stream_reply(**extra):
    return Reply(provider="google", text=WORDS, usage={"promptTokenCount": 1000, "candidatesTokenCount": 40},
                 **extra)


def test_stream_priced_when_exhausted(instrumented, client, llm_server, span_exporter):
    """A sync stream is priced from the last chunk's usage once exhausted; the chunks reach the app unchanged."""
    llm_server.script(stream_reply())
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    assert llmcost_spans(span_exporter) == []
    chunks = list(stream)
    assert len(chunks) == 3 and "".join(c.text for c in chunks) == WORDS
    span = only_span(span_exporter)
    attrs = span.attributes
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 1000 and attrs["gen_ai.usage.output_tokens"] == 40
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.response.id"] == chunks[-1].response_id
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert "llmcost.stream.incomplete" not in attrs
    assert cost(span) == exact((1000 * FLASH_IN + 40 * FLASH_OUT) / M)


def test_stream_closed_early(instrumented, client, llm_server, span_exporter):
    """Closing a sync stream early ends its span at once: prompt exact, received text estimated, incomplete."""
    llm_server.script(stream_reply())
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    assert next(stream).text == FIRST_CHUNK
    stream.close()
    span = only_span(span_exporter)
    attrs = span.attributes
    assert attrs["llmcost.stream.incomplete"] is True
    assert attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 1000 and attrs["gen_ai.usage.output_tokens"] == 5
    assert cost(span) == exact((1000 * FLASH_IN + 5 * FLASH_OUT) / M)
    assert span.status.status_code.name == "UNSET"


def test_stream_abandoned_is_ended_by_gc(instrumented, client, llm_server, span_exporter):
    """A stream dropped half-read is priced as incomplete when it is garbage-collected."""
    llm_server.script(stream_reply())
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    next(stream)
    del stream
    gc.collect()
    span = only_span(span_exporter)
    assert span.attributes["llmcost.stream.incomplete"] is True
    assert cost(span) == exact((1000 * FLASH_IN + 5 * FLASH_OUT) / M)


def test_stream_cut_midway(instrumented, client, llm_server, span_exporter):
    """A connection cut mid-stream raises in the app; the span is an ERROR that keeps the tokens seen."""
    llm_server.script(stream_reply(cut_after_chunks=1))
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    received = []
    with pytest.raises(Exception) as caught:  # noqa: B017 - the HTTP client's own class (httpx2)
        for chunk in stream:
            received.append(chunk.text)
    assert received == [FIRST_CHUNK]
    assert not isinstance(caught.value, errors.APIError)
    span = only_span(span_exporter)
    attrs = span.attributes
    assert span.status.status_code.name == "ERROR"
    assert attrs["error.type"] == type(caught.value).__qualname__ == "RemoteProtocolError"
    assert attrs["llmcost.stream.incomplete"] is True and attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 1000 and attrs["gen_ai.usage.output_tokens"] == 5
    assert cost(span) == exact((1000 * FLASH_IN + 5 * FLASH_OUT) / M)


# -- async -----------------------------------------------------------------------------------------
async def test_async_generate_content_priced(instrumented, client, llm_server, span_exporter):
    """`client.aio.models.generate_content` is priced like the sync call."""
    llm_server.script(gemini(promptTokenCount=1200, candidatesTokenCount=300, cachedContentTokenCount=1000))
    response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert isinstance(response, types.GenerateContentResponse)
    span = only_span(span_exporter)
    assert span.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert cost(span) == exact((200 * FLASH_IN + 1000 * FLASH_CACHE + 300 * FLASH_OUT) / M)


async def test_async_stream_priced_when_exhausted(instrumented, client, llm_server, span_exporter):
    """An async stream (an awaited `async def` returning an async iterator) is priced once exhausted."""
    llm_server.script(stream_reply())
    stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    texts = [chunk.text async for chunk in stream]
    assert "".join(texts) == WORDS
    span = only_span(span_exporter)
    assert "llmcost.stream.incomplete" not in span.attributes
    assert cost(span) == exact((1000 * FLASH_IN + 40 * FLASH_OUT) / M)


async def test_async_stream_aclose(instrumented, client, llm_server, span_exporter):
    """An async stream closed early with aclose() is priced as incomplete within a few loop turns."""
    llm_server.script(stream_reply())
    stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    assert (await stream.__anext__()).text == FIRST_CHUNK
    await stream.aclose()
    for _ in range(10):  # the SDK's inner generators are closed by asyncio's async-generator finalizer
        if llmcost_spans(span_exporter):
            break
        await asyncio.sleep(0)
    span = only_span(span_exporter)
    assert span.attributes["llmcost.stream.incomplete"] is True
    assert cost(span) == exact((1000 * FLASH_IN + 5 * FLASH_OUT) / M)


async def test_async_stream_cut_midway(instrumented, client, llm_server, span_exporter):
    """A cut async stream raises in the app and leaves an ERROR span priced from the tokens seen."""
    llm_server.script(stream_reply(cut_after_chunks=1))
    stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
    with pytest.raises(Exception) as caught:  # noqa: B017 - the HTTP client's own class (httpx2)
        async for _ in stream:
            pass
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == type(caught.value).__qualname__
    assert cost(span) == exact((1000 * FLASH_IN + 5 * FLASH_OUT) / M)


# -- embeddings ------------------------------------------------------------------------------------
def test_embed_content_priced_from_usage(instrumented, client, llm_server, span_exporter):
    """embed_content is an `embeddings` span priced from the response's usage_metadata."""
    llm_server.script(gemini(promptTokenCount=1234))
    response = client.models.embed_content(model="gemini-embedding-001", contents=["hello world", "abc"])
    assert len(response.embeddings) == 2
    span = only_span(span_exporter)
    attrs = span.attributes
    assert span.name == "embeddings gemini-embedding-001"
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] == 1234 and attrs["gen_ai.usage.output_tokens"] == 0
    assert "llmcost.usage.estimated" not in attrs
    assert cost(span) == exact(1234 * Decimal("0.15") / M)


async def test_async_embed_content_estimated_without_usage(instrumented, client, llm_server, span_exporter):
    """An embed response without a token count is estimated from the text (~4 characters a token) and marked."""
    llm_server.script(gemini(promptTokenCount=None))
    await client.aio.models.embed_content(model="gemini-embedding-001", contents=["hello world", "abc"])
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 4  # 14 characters
    assert attrs["gen_ai.usage.cost"] == exact(4 * Decimal("0.15") / M)


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_token_usage_and_cost(instrumented, client, llm_server, metric_reader):
    """Token usage goes to the semconv histogram with its advisory buckets; cost adds up in llmcost.cost."""
    llm_server.script(gemini(promptTokenCount=1000, candidatesTokenCount=300))
    llm_server.script(gemini(promptTokenCount=800, candidatesTokenCount=100, thoughtsTokenCount=100))
    client.models.generate_content(model="gemini-2.5-flash", contents="One")
    client.models.generate_content(model="gemini-2.5-flash", contents="Two")
    tokens = metric_points(metric_reader, "gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert by_type["input"].sum == 1800 and by_type["input"].count == 2
    assert by_type["output"].sum == 500 and by_type["output"].count == 2
    assert by_type["input"].explicit_bounds == tuple(float(4**i) for i in range(14))
    # bounds 1, 4, 16, 64, 256, 1024, ...: 1000 and 800 fall in (256, 1024]; 300 there too, 200 in (64, 256]
    assert by_type["input"].bucket_counts[5] == 2
    assert by_type["output"].bucket_counts[4] == 1 and by_type["output"].bucket_counts[5] == 1
    assert by_type["input"].attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert by_type["input"].attributes["gen_ai.response.model"] == "gemini-2.5-flash"
    total = (1800 * FLASH_IN + 500 * FLASH_OUT) / M
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.cost")) == exact(total)
    reasoning = metric_points(metric_reader, "llmcost.usage.reasoning.output_tokens")
    assert sum(p.value for p in reasoning) == 100


# -- content ---------------------------------------------------------------------------------------
def test_no_content_by_default(instrumented, client, llm_server, span_exporter):
    """Without the opt-in no prompt, instruction or answer text reaches the span, nor the API key."""
    client.models.generate_content(model="gemini-2.5-flash", contents="secret question",
                                   config={"system_instruction": "secret rules"})
    attrs = only_span(span_exporter).attributes
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"} & set(attrs)
    assert not any("secret" in str(v) or v == "test" for v in attrs.values())


def test_content_captured_when_enabled(captured, client, llm_server, span_exporter):
    """With capture on, prompt, system instruction and answer are recorded as GenAI message JSON."""
    llm_server.script(Reply(provider="google", text="Thirty days."))
    client.models.generate_content(model="gemini-2.5-flash", contents="Return policy?",
                                   config={"system_instruction": "Be brief."})
    attrs = only_span(span_exporter).attributes
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Return policy?"}]}]
    assert json.loads(attrs["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Thirty days."}], "finish_reason": "stop"}]


def test_streamed_answer_captured_whole(captured, client, llm_server, span_exporter):
    """With capture on, a streamed answer is recorded once, its chunks joined."""
    llm_server.script(stream_reply())
    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Go"))
    output = json.loads(only_span(span_exporter).attributes["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": WORDS}], "finish_reason": "stop"}]


# -- wiring ----------------------------------------------------------------------------------------
def test_uninstrument_restores_the_sdk(instrumented, client, llm_server, span_exporter):
    """After uninstrument() calls make no spans."""
    otel_llmcost.uninstrument()
    client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert llmcost_spans(span_exporter) == []


def test_per_request_methods_wrapped_when_present():
    """The per-request methods are wrapped when the SDK has them, the public ones otherwise."""
    from google.genai import models

    assert generate_targets(models.Models) == ("_generate_content", "_generate_content_stream")
    assert generate_targets(models.AsyncModels) == ("_generate_content", "_generate_content_stream")

    class OlderModels:
        def generate_content(self): ...

        def generate_content_stream(self): ...

    assert generate_targets(OlderModels) == ("generate_content", "generate_content_stream")


@pytest.mark.parametrize(("given", "expected"), [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("tunedModels/my-model-123", "tunedModels/my-model-123"),
])
def test_model_name(given, expected):
    """Model paths the SDK accepts are reduced to the model id that prices are listed under."""
    assert model_name(given) == expected
