"""OpenAI instrumentation: the real `openai` SDK against the loopback server."""

from __future__ import annotations

import asyncio
import gc
import threading
from decimal import Decimal

import openai
import pytest

import otel_llmcost
from otel_llmcost.testing.llm_server import Reply
from tests.conftest import llmcost_spans, metric_points

M = Decimal(1_000_000)
MSGS = [{"role": "user", "content": "What is the return policy?"}]


@pytest.fixture
def client(llm_server):
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test-secret", max_retries=0)


@pytest.fixture
def aclient(llm_server):
    return openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="sk-test-secret", max_retries=0)


def only_span(exporter):
    spans = llmcost_spans(exporter)
    assert len(spans) == 1, spans
    return spans[0]


def test_chat_completion_priced(instrumented, client, llm_server, span_exporter, metric_reader):
    """A chat completion becomes one CLIENT span with GenAI usage and its exact USD cost, and metrics."""
    llm_server.script(Reply(provider="openai", usage={
        "prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
        "prompt_tokens_details": {"cached_tokens": 1024}}))
    response = client.chat.completions.create(model="gpt-4o", messages=MSGS, temperature=0)
    assert isinstance(response, openai.types.chat.ChatCompletion)
    span = only_span(span_exporter)
    expected = (976 * Decimal("2.5") + 1024 * Decimal("1.25") + 100 * 10) / M
    attrs = span.attributes
    assert span.name == "chat gpt-4o"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.request.temperature"] == 0
    assert attrs["gen_ai.usage.input_tokens"] == 2000
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert attrs["gen_ai.usage.output_tokens"] == 100
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float(expected), rel=1e-12)
    assert attrs["llmcost.price.known"] is True
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    cost = metric_points(metric_reader, "llmcost.cost")
    assert sum(p.value for p in cost) == pytest.approx(float(expected))
    tokens = metric_points(metric_reader, "gen_ai.client.token.usage")
    assert {p.attributes["gen_ai.token.type"]: p.sum for p in tokens} == {"input": 2000, "output": 100}
    assert tokens[0].explicit_bounds == tuple(float(4**i) for i in range(14))
    duration = metric_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration[0].explicit_bounds[:3] == (0.01, 0.02, 0.04) and duration[0].count == 1


def test_reasoning_tokens_recorded(instrumented, client, llm_server, span_exporter):
    """Reasoning tokens are on the span and billed as part of output."""
    llm_server.script(Reply(provider="openai", usage={
        "prompt_tokens": 100, "completion_tokens": 500, "total_tokens": 600,
        "completion_tokens_details": {"reasoning_tokens": 400}}))
    client.chat.completions.create(model="o4-mini", messages=MSGS)
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 400
    assert attrs["gen_ai.usage.cost"] == pytest.approx(float((100 * Decimal("1.1") + 500 * Decimal("4.4")) / M))


def test_no_prompt_text_or_key_in_telemetry(instrumented, client, span_exporter):
    """Without the opt-in, no prompt or response text reaches spans; the API key never does."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    text = repr(only_span(span_exporter).attributes)
    assert "return policy" not in text and "sk-test-secret" not in text


def test_content_captured_only_when_opted_in(tracer_provider, meter_provider, client, span_exporter):
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (or capture_content) records messages."""
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, capture_content=True)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    finally:
        otel_llmcost.uninstrument()
    attrs = only_span(span_exporter).attributes
    assert "return policy" in attrs["gen_ai.input.messages"]
    assert "gen_ai.output.messages" in attrs


@pytest.mark.parametrize(("status", "error"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError),
    (429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_errors_pass_through_unchanged(instrumented, client, llm_server, span_exporter, status, error):
    """The SDK's own exception reaches the app, the same instance, and the span records error.type."""
    llm_server.script(Reply(provider="openai", status=status))
    with pytest.raises(error) as info:
        client.chat.completions.create(model="gpt-4o", messages=MSGS)
    span = only_span(span_exporter)
    assert span.attributes["error.type"] == error.__qualname__
    assert span.status.status_code.name == "ERROR"
    assert "gen_ai.usage.cost" not in span.attributes
    assert span.attributes["llmcost.query.hash"]  # a failed call keeps its fingerprint (set at the span's end)
    # identity: the instance raised inside the SDK is the one the app caught
    assert info.value.status_code == status


def test_exception_identity_is_preserved(instrumented, llm_server, monkeypatch, span_exporter):
    """The exact exception object raised below the SDK method is the one the app receives."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
    marker = RuntimeError("boom from transport")

    def explode(*args, **kwargs):
        raise marker

    monkeypatch.setattr(client, "post", explode)  # resources bind client.post when first used
    with pytest.raises(RuntimeError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert info.value is marker
    assert only_span(span_exporter).attributes["error.type"] == "RuntimeError"


def test_timeout_recorded(instrumented, llm_server, span_exporter):
    """A client timeout raises the SDK's APITimeoutError unchanged; the span says so."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0, timeout=0.2)
    llm_server.script(Reply(provider="openai", delay=1.0))
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert only_span(span_exporter).attributes["error.type"] == "APITimeoutError"


def test_stream_priced_when_exhausted(instrumented, client, llm_server, span_exporter, metric_reader):
    """A stream the app reads to the end is priced from the usage chunk we asked for; the app sees none."""
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True))
    assert chunks and all(c.choices for c in chunks)  # no usage-only chunk leaked to the app
    assert all(c.usage is None for c in chunks)
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert "llmcost.usage.estimated" not in attrs
    assert "llmcost.stream.incomplete" not in attrs
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert metric_points(metric_reader, "gen_ai.client.operation.time_to_first_chunk")[0].count == 1
    request = [r for r in llm_server.requests if r.path.endswith("/chat/completions")][-1]
    assert request.json["stream_options"] == {"include_usage": True}


def test_stream_with_usage_asked_by_app_is_untouched(instrumented, client, llm_server, span_exporter):
    """When the app asks for usage itself, it gets the usage chunk as usual."""
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert only_span(span_exporter).attributes["gen_ai.usage.input_tokens"] == chunks[-1].usage.prompt_tokens


def test_stream_estimate_mode_leaves_request_alone(instrumented, client, llm_server, span_exporter, monkeypatch):
    """OTEL_LLMCOST_OPENAI_STREAM_USAGE=estimate sends the request unchanged and marks the estimate."""
    monkeypatch.setenv("OTEL_LLMCOST_OPENAI_STREAM_USAGE", "estimate")
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True))
    request = [r for r in llm_server.requests if r.path.endswith("/chat/completions")][-1]
    assert "stream_options" not in request.json
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.usage.estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == (len("What is the return policy?") + 3) // 4


def test_stream_closed_early_is_marked_incomplete(instrumented, client, span_exporter):
    """A stream closed before its end ends the span at once, marked incomplete."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    next(iter(stream))
    stream.close()
    attrs = only_span(span_exporter).attributes
    assert attrs["llmcost.stream.incomplete"] is True


def test_stream_context_manager_exit_ends_span(instrumented, client, span_exporter):
    """Leaving the stream's `with` block ends the span."""
    with client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True) as stream:
        next(iter(stream))
    assert only_span(span_exporter).attributes["llmcost.stream.incomplete"] is True


def test_stream_dropped_unread_ends_span(instrumented, client, span_exporter):
    """A stream the app drops without reading still ends its span when collected."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    del stream
    gc.collect()
    assert only_span(span_exporter).attributes["llmcost.stream.incomplete"] is True


def test_stream_cut_mid_way(instrumented, client, llm_server, span_exporter):
    """A connection cut mid-stream raises in the app as without us; the span is an error, incomplete."""
    llm_server.script(Reply(provider="openai", cut_after_chunks=2))
    with pytest.raises(Exception) as info:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True):
            pass
    span = only_span(span_exporter)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == type(info.value).__qualname__


def test_stream_helper_counts_once(instrumented, client, span_exporter):
    """`chat.completions.stream()` (which calls create) makes one priced span and hides the usage chunk."""
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MSGS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.usage is None
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.usage.cost"] > 0


def test_parse_priced(instrumented, client, span_exporter):
    """`chat.completions.parse` is priced like create."""
    client.chat.completions.parse(model="gpt-4o-mini", messages=MSGS)
    assert only_span(span_exporter).attributes["gen_ai.usage.cost"] > 0


def test_responses_create_and_stream(instrumented, client, llm_server, span_exporter):
    """The Responses API is priced, streamed or not, including cached and reasoning tokens."""
    llm_server.script(Reply(provider="openai", usage={
        "input_tokens": 3000, "output_tokens": 200, "total_tokens": 3200,
        "input_tokens_details": {"cached_tokens": 2048}, "output_tokens_details": {"reasoning_tokens": 50}}))
    client.responses.create(model="gpt-4o", input="Summarise our refund policy")
    events = list(client.responses.create(model="gpt-4o", input="Summarise", stream=True))
    assert events[-1].type == "response.completed"
    with client.responses.stream(model="gpt-4o", input="Summarise") as stream:
        for _ in stream:
            pass
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 3
    first = spans[0].attributes
    assert first["gen_ai.usage.cache_read.input_tokens"] == 2048
    assert first["gen_ai.usage.reasoning.output_tokens"] == 50
    assert first["gen_ai.usage.cost"] == pytest.approx(float((952 * Decimal("2.5") + 2048 * Decimal("1.25") + 200 * 10) / M))
    assert all(s.attributes["gen_ai.usage.cost"] > 0 for s in spans)


def test_embeddings_priced(instrumented, client, span_exporter):
    """Embeddings calls are priced from prompt tokens, operation `embeddings`."""
    client.embeddings.create(model="text-embedding-3-small", input=["hello world", "return policy"])
    attrs = only_span(span_exporter).attributes
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.cost"] == pytest.approx(attrs["gen_ai.usage.input_tokens"] * 0.02 / 1e6)


def test_unknown_model_flagged_not_zero(instrumented, client, span_exporter, metric_reader, caplog):
    """An unknown model gets llmcost.price.known=false, no cost, a counter, and one warning per model."""
    for _ in range(3):
        client.chat.completions.create(model="my-house-model", messages=MSGS)
    spans = llmcost_spans(span_exporter)
    assert all(s.attributes["llmcost.price.known"] is False for s in spans)
    assert all("gen_ai.usage.cost" not in s.attributes for s in spans)
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 3
    assert not metric_points(metric_reader, "llmcost.cost")
    assert sum("my-house-model" in r.message for r in caplog.records) == 1


def test_malformed_usage_leaves_app_unaffected(instrumented, client, llm_server, span_exporter, metric_reader):
    """A usage payload we cannot read returns the response untouched and counts the call as unpriced."""
    llm_server.script(Reply(provider="openai", usage={"prompt_tokens": -7, "completion_tokens": "lots"}))
    response = client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert response.usage.prompt_tokens == -7
    span = only_span(span_exporter)
    assert span.attributes["llmcost.price.known"] is False
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 1


def test_same_object_returned(llm_server, tracer_provider, meter_provider):
    """The app gets the SDK's own response object type with identical content, instrumented or not."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
    bare = client.chat.completions.create(model="gpt-4o", messages=MSGS, seed=1)
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        wrapped = client.chat.completions.create(model="gpt-4o", messages=MSGS, seed=1)
    finally:
        otel_llmcost.uninstrument()
    assert type(wrapped) is type(bare)
    assert wrapped.model_dump(exclude={"id", "created"}) == bare.model_dump(exclude={"id", "created"})


async def test_async_create_and_stream(instrumented, aclient, span_exporter):
    """Async create and async streams are priced like sync ones."""
    await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 2 and all(s.attributes["gen_ai.usage.cost"] > 0 for s in spans)


async def test_async_stream_closed_early(instrumented, aclient, span_exporter):
    """An async stream closed early ends its span, marked incomplete."""
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    await stream.__anext__()
    await stream.close()
    assert only_span(span_exporter).attributes["llmcost.stream.incomplete"] is True


async def test_async_error_passes_through(instrumented, aclient, llm_server, span_exporter):
    """An async call's error reaches the app unchanged."""
    llm_server.script(Reply(provider="openai", status=429))
    with pytest.raises(openai.RateLimitError):
        await aclient.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert only_span(span_exporter).attributes["error.type"] == "RateLimitError"


def test_concurrent_threads_attributed_to_their_users(instrumented, client, span_exporter):
    """Many threads calling at once: each span carries its own thread's user."""
    def work(i: int) -> None:
        with otel_llmcost.attributes(user_id=f"user-{i}", tier="pro", feature="chat"):
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": f"question {i}"}])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 24
    assert sorted(s.attributes["llmcost.user.id"] for s in spans) == sorted(f"user-{i}" for i in range(24))


async def test_concurrent_tasks_attributed_to_their_users(instrumented, aclient, span_exporter, metric_reader):
    """Many asyncio tasks at once: each span carries its task's user; metrics keep tier, not user ids."""
    async def work(i: int) -> None:
        with otel_llmcost.attributes(user_id=f"user-{i}", tier="free" if i % 2 else "pro"):
            await aclient.chat.completions.create(model="gpt-4o-mini",
                                                  messages=[{"role": "user", "content": f"q {i}"}])

    await asyncio.gather(*(work(i) for i in range(40)))
    spans = llmcost_spans(span_exporter)
    assert sorted(s.attributes["llmcost.user.id"] for s in spans) == sorted(f"user-{i}" for i in range(40))
    tiers = {s.attributes["llmcost.user.id"]: s.attributes["llmcost.user.tier"] for s in spans}
    assert tiers["user-1"] == "free" and tiers["user-2"] == "pro"
    cost_points = metric_points(metric_reader, "llmcost.cost")
    assert {p.attributes["llmcost.user.tier"] for p in cost_points} == {"free", "pro"}
    assert all("llmcost.user.id" not in p.attributes for p in cost_points)


def test_user_ids_on_metrics_when_enabled(tracer_provider, meter_provider, metric_reader, client):
    """User ids reach metric attributes only when enabled (cardinality)."""
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, metrics_include_user=True)
    try:
        with otel_llmcost.attributes(user_id="alice"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    finally:
        otel_llmcost.uninstrument()
    assert metric_points(metric_reader, "llmcost.cost")[0].attributes["llmcost.user.id"] == "alice"


def test_uninstrument_restores_originals(llm_server, tracer_provider, meter_provider, span_exporter):
    """After uninstrument() the SDK methods are the originals and no spans are made."""
    from openai.resources.chat.completions.completions import Completions

    original = Completions.create
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert Completions.create is not original
    otel_llmcost.uninstrument()
    assert Completions.create is original
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert not llmcost_spans(span_exporter)


def test_raw_response_priced_sync_and_async(instrumented, client, aclient, span_exporter):
    """`with_raw_response` calls are priced from the body without touching the app's response object."""
    import warnings

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSGS)
    assert raw.parse().usage.prompt_tokens > 0

    async def run():
        araw = await aclient.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSGS)
        return araw.parse()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an un-awaited coroutine of ours would warn
        parsed = asyncio.run(run())
    assert parsed.usage.prompt_tokens > 0
    spans = llmcost_spans(span_exporter)
    assert len(spans) == 2 and all(s.attributes["gen_ai.usage.cost"] > 0 for s in spans)
