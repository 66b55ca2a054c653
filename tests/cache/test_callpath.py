"""The response cache in the call path, through the real SDK clients against the loopback server."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from google import genai
from google.genai import types as gtypes
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion
from openai.types.responses import Response

import otel_llmcost
from otel_llmcost.cache import ExactCache, SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import ThresholdPolicy
from otel_llmcost.guard import install_guard
from otel_llmcost.pricing import Usage
from otel_llmcost.pricing import usage as usage_mod
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply
from tests.cache.conftest import RedisServer
from tests.conftest import llmcost_spans, metric_points

QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"
MSGS = [{"role": "user", "content": QUESTION}]
GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
ZERO = {"temperature": 0}


# -- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture
def oai(llm_server: LoopbackLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def aoai(llm_server: LoopbackLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(llm_server: LoopbackLLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                             open_telemetry=False) as client:
        yield client


@pytest.fixture
async def aclaude(llm_server: LoopbackLLMServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                        open_telemetry=False) as client:
        yield client


@pytest.fixture
async def gemini(llm_server: LoopbackLLMServer) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key="k", http_options=gtypes.HttpOptions(base_url=llm_server.google_base_url))
    yield client
    await client.aio.aclose()
    client.close()


@pytest.fixture
def exact(instrumented: Telemetry) -> ResponseCache:
    """An exact cache in memory in the call path."""
    cache = ResponseCache(ExactCache())
    install_guard(cache=cache)
    return cache


def semantic_cache(high: float = 0.8, medium: float | None = None) -> SemanticCache:
    return SemanticCache(HashingEmbedder(), ThresholdPolicy(high, medium))


@pytest.fixture
def both(instrumented: Telemetry) -> ResponseCache:
    """Exact and semantic (hashing embedder, threshold 0.8) caches in memory in the call path."""
    cache = ResponseCache(ExactCache(), semantic_cache())
    install_guard(cache=cache)
    return cache


def sent(server: LoopbackLLMServer, provider: str) -> int:
    """Requests the provider received (a cache hit sends none)."""
    return sum(1 for r in server.requests if r.provider == provider)


def statuses(exporter: Any) -> list[Any]:
    """`llmcost.cache.status` of our spans, in order."""
    return [s.attributes.get("llmcost.cache.status") for s in llmcost_spans(exporter)]


def lookups(reader: Any) -> Counter[tuple[str, str]]:
    """`llmcost.cache.lookups` by (status, provider)."""
    counts: Counter[tuple[str, str]] = Counter()
    for point in metric_points(reader, "llmcost.cache.lookups"):
        counts[(point.attributes["llmcost.cache.status"], point.attributes["gen_ai.provider.name"])] += point.value
    return counts


def expected_saving(telemetry: Telemetry, usage: Usage, model: str, provider: str) -> Decimal:
    """The cached call's price, worked out from the catalog's per-million prices (Decimal math)."""
    prices = telemetry.catalog.prices(model, provider)
    return (usage.input_tokens * prices.input_mtok + usage.output_tokens * prices.output_mtok) / Decimal(1_000_000)


def gconfig(**extra: Any) -> gtypes.GenerateContentConfig:
    return gtypes.GenerateContentConfig(temperature=0, **extra)


# -- OpenAI -------------------------------------------------------------------------------------------
def test_openai_exact_hit_is_the_same_chat_completion_and_saves_its_cost(
        exact, oai, llm_server, span_exporter, metric_reader, instrumented):
    """A repeated deterministic call gets an equal `ChatCompletion` without a request; the hit costs $0
    and saves the first call's price, on the span and in the metric, to the Decimal."""
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    second = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert type(second) is ChatCompletion and second == first
    assert sent(llm_server, "openai") == 1
    miss, hit = llmcost_spans(span_exporter)
    assert miss.attributes["llmcost.cache.status"] == "miss"
    assert hit.attributes["llmcost.cache.status"] == "exact_hit"
    saving = expected_saving(instrumented, usage_mod.from_openai(first.usage), first.model, "openai")
    assert saving > 0
    assert hit.attributes["llmcost.cost.saved"] == float(saving)
    assert hit.attributes["gen_ai.usage.cost"] == 0.0 and hit.attributes["gen_ai.usage.input_tokens"] == 0
    assert hit.attributes["gen_ai.response.model"] == first.model
    assert miss.attributes["gen_ai.usage.cost"] == float(saving)
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.cost.saved")) == pytest.approx(float(saving))
    assert lookups(metric_reader) == {("miss", "openai"): 1, ("exact_hit", "openai"): 1}


async def test_openai_async_exact_hit(exact, aoai, llm_server, span_exporter):
    """The async client is served from the cache the same way."""
    first = await aoai.chat.completions.create(model=GPT, messages=MSGS, seed=7)
    second = await aoai.chat.completions.create(model=GPT, messages=MSGS, seed=7)
    assert type(second) is ChatCompletion and second == first
    assert sent(llm_server, "openai") == 1
    assert statuses(span_exporter) == ["miss", "exact_hit"]


def test_openai_plain_answer_replayed_as_a_stream(exact, oai, llm_server, span_exporter):
    """A cached plain answer serves a stream call: `ChatCompletionChunk`s with the same text, a finish
    chunk, no usage chunk unless asked for; `with` and `close()` work as on the SDK's stream."""
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    stream = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True)
    with stream:
        chunks = list(stream)
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    assert all(c.choices for c in chunks)  # the app did not ask for usage: no usage-only chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].id == first.id
    asked = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True,
                                        stream_options={"include_usage": True})
    last = list(asked)[-1]
    assert last.choices == [] and last.usage == first.usage
    asked.close()
    assert sent(llm_server, "openai") == 1
    assert statuses(span_exporter) == ["miss", "exact_hit", "exact_hit"]


def test_openai_stream_stored_then_served_plain_and_to_the_stream_helper(exact, oai, llm_server):
    """A stream read to its end is stored as the completion it amounts to: a plain call then gets that
    `ChatCompletion` (usage included), and the `chat.completions.stream()` helper runs on a replay."""
    text = "".join(c.choices[0].delta.content or "" for c in
                   oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True) if c.choices)
    plain = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert type(plain) is ChatCompletion and plain.choices[0].message.content == text
    assert plain.usage is not None and plain.usage.completion_tokens > 0
    with oai.chat.completions.stream(model=GPT, messages=MSGS, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == text and final.choices[0].message.content == text
    assert sent(llm_server, "openai") == 1


async def test_openai_async_stream_replay(exact, aoai, llm_server, span_exporter):
    """An async stream call served from the cache iterates with `async for`, closes with `close()`, and
    works as an async context manager."""
    first = await aoai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    stream = await aoai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True)
    async with stream:
        chunks = [c async for c in stream]
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == first.choices[0].message.content
    again = await aoai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True)
    await again.__anext__()
    await again.close()
    with pytest.raises(StopAsyncIteration):
        await again.__anext__()
    assert sent(llm_server, "openai") == 1
    assert statuses(span_exporter) == ["miss", "exact_hit", "exact_hit"]


class Answer(pydantic.BaseModel):
    answer: str


def test_openai_parse_served_as_parsed_completion(exact, oai, llm_server):
    """`parse` is answered with a `ParsedChatCompletion` parsed again with the request's model class."""
    llm_server.script(Reply(provider="openai", text='{"answer": "use the reset link"}'))
    first = oai.chat.completions.parse(model=GPT, messages=MSGS, temperature=0, response_format=Answer)
    second = oai.chat.completions.parse(model=GPT, messages=MSGS, temperature=0, response_format=Answer)
    assert type(second) is type(first) and isinstance(second, ParsedChatCompletion)
    assert second.choices[0].message.parsed == Answer(answer="use the reset link") == first.choices[0].message.parsed
    assert sent(llm_server, "openai") == 1


def test_responses_api_hit_stream_replay_and_helper(exact, oai, llm_server, span_exporter):
    """The Responses API: a repeated call gets an equal `Response`; a stream call gets the API's events
    ending in `response.completed`, and the `responses.stream()` helper's final response is the same."""
    first = oai.responses.create(model=GPT, input=QUESTION, temperature=0)
    second = oai.responses.create(model=GPT, input=QUESTION, temperature=0)
    assert type(second) is Response and second == first
    events = list(oai.responses.create(model=GPT, input=QUESTION, temperature=0, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == first.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with oai.responses.stream(model=GPT, input=QUESTION, temperature=0) as stream:
        final = stream.get_final_response()
    assert final.output_text == first.output_text and final.usage == first.usage
    assert sent(llm_server, "openai") == 1
    assert statuses(span_exporter) == ["miss", "exact_hit", "exact_hit", "exact_hit"]


# -- Anthropic ----------------------------------------------------------------------------------------
def test_anthropic_exact_hit_and_raw_stream_replay(exact, claude, llm_server, span_exporter, instrumented):
    """Anthropic: a repeated call gets an equal `Message`; a `stream=True` call gets the raw events from
    `message_start` to `message_stop` whose text is the message's; the saving is the message's price."""
    first = claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    second = claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    assert type(second) is Message and second == first
    with claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO, stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert all(type(e) in typing_args(RawMessageStreamEvent) for e in events)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == first.content[0].text
    assert events[-2].usage.output_tokens == first.usage.output_tokens
    assert sent(llm_server, "anthropic") == 1
    spans = llmcost_spans(span_exporter)
    assert [s.attributes["llmcost.cache.status"] for s in spans] == ["miss", "exact_hit", "exact_hit"]
    saving = expected_saving(instrumented, usage_mod.from_anthropic(first.usage), first.model, "anthropic")
    assert spans[1].attributes["llmcost.cost.saved"] == float(saving) == spans[0].attributes["gen_ai.usage.cost"]


def typing_args(union: Any) -> set[type]:
    import typing

    return set(typing.get_args(typing.get_args(union)[0]))


def test_anthropic_stream_helper_on_a_replay(exact, claude, llm_server):
    """`messages.stream()` on a cached answer: the SDK's `MessageStream` gives the text, the final
    message (usage included) and the text stream, with no request sent."""
    first = claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    with claude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == first.content[0].text
    assert final.content[0].text == text and final.usage == first.usage and final.stop_reason == "end_turn"
    assert sent(llm_server, "anthropic") == 1


async def test_anthropic_async_stream_stored_then_served_plain_and_streamed(exact, aclaude, llm_server):
    """An async stream read to `message_stop` is stored: a plain async call then gets the `Message`, and
    the async stream helper replays it."""
    async with aclaude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO) as stream:
        streamed = await stream.get_final_message()
    plain = await aclaude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    streamed_text = "".join(block.text for block in streamed.content if block.type == "text")
    assert type(plain) is Message and "".join(b.text for b in plain.content if b.type == "text") == streamed_text
    assert plain.usage.output_tokens == streamed.usage.output_tokens
    async with aclaude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == streamed_text
    raw = await aclaude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO, stream=True)
    assert [e.type async for e in raw][-1] == "message_stop"
    await raw.close()
    assert sent(llm_server, "anthropic") == 1


def test_anthropic_beta_and_parse_get_their_own_types(exact, claude, llm_server):
    """`client.beta.messages` hits are `BetaMessage`s and its stream helper runs on a replay; `parse` hits
    are parsed again with the request's output format."""
    from anthropic.types.beta import BetaMessage

    first = claude.beta.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    second = claude.beta.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    assert type(second) is BetaMessage and second == first
    with claude.beta.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO) as stream:
        assert stream.get_final_text() == "".join(b.text for b in first.content if b.type == "text")
    llm_server.script(Reply(provider="anthropic", text='{"answer": "use the reset link"}'))
    parsed = [claude.messages.parse(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO, output_format=Answer)
              for _ in range(2)]
    assert parsed[1].parsed_output == Answer(answer="use the reset link") == parsed[0].parsed_output
    assert sent(llm_server, "anthropic") == 2


# -- Google ---------------------------------------------------------------------------------------------
def test_google_exact_hit_and_stream_replay(exact, gemini, llm_server, span_exporter, instrumented):
    """Gemini: a repeated call gets a `GenerateContentResponse` with the same text and usage; a stream
    call gets `GenerateContentResponse` chunks whose texts join to it, the last with finish reason and usage."""
    first = gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    second = gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    assert type(second) is gtypes.GenerateContentResponse
    assert second.text == first.text and second.usage_metadata == first.usage_metadata
    assert second.model_dump(exclude={"sdk_http_response"}) == first.model_dump(exclude={"sdk_http_response"})
    chunks = list(gemini.models.generate_content_stream(model=GEMINI, contents=QUESTION, config=gconfig()))
    assert len(chunks) > 1 and all(type(c) is gtypes.GenerateContentResponse for c in chunks)
    assert "".join(c.text or "" for c in chunks) == first.text
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert chunks[-1].usage_metadata == first.usage_metadata
    assert sent(llm_server, "google") == 1
    spans = llmcost_spans(span_exporter)
    assert [s.attributes["llmcost.cache.status"] for s in spans] == ["miss", "exact_hit", "exact_hit"]
    saving = expected_saving(instrumented, usage_mod.from_google(first.usage_metadata), GEMINI, "gcp.gemini")
    assert spans[2].attributes["llmcost.cost.saved"] == float(saving)


async def test_google_async_stream_stored_then_served(exact, gemini, llm_server, span_exporter):
    """An async Gemini stream read to its end is stored; async plain and streamed calls are served from it,
    and the same contents given as a `Content` list share the entry with the plain string."""
    streamed = [c async for c in await gemini.aio.models.generate_content_stream(
        model=GEMINI, contents=QUESTION, config=gconfig())]
    text = "".join(c.text or "" for c in streamed)
    contents = [gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])]
    plain = await gemini.aio.models.generate_content(model=GEMINI, contents=contents, config=gconfig())
    assert plain.text == text and plain.usage_metadata == streamed[-1].usage_metadata
    replay = await gemini.aio.models.generate_content_stream(model=GEMINI, contents=QUESTION, config=gconfig())
    assert "".join([c.text or "" async for c in replay]) == text
    assert sent(llm_server, "google") == 1
    assert statuses(span_exporter) == ["miss", "exact_hit", "exact_hit"]


def test_google_chat_turns_are_cached_per_request(exact, gemini, llm_server):
    """`client.chats` goes through the same per-request path: replaying a whole chat sends nothing."""
    for _ in range(2):
        chat = gemini.chats.create(model=GEMINI, config=gconfig())
        chat.send_message(QUESTION)
        chat.send_message("And if I forgot my username?")
    assert sent(llm_server, "google") == 2


# -- semantic ---------------------------------------------------------------------------------------------
def test_semantic_hit_on_a_paraphrase(both, oai, llm_server, span_exporter, metric_reader):
    """A paraphrase of a cached question is a semantic hit with tier and similarity on the span; an
    unrelated question is a miss."""
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    para = oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}], temperature=0)
    assert para == first
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Where is my parcel?"}],
                                temperature=0)
    assert sent(llm_server, "openai") == 2
    spans = llmcost_spans(span_exporter)
    assert [s.attributes["llmcost.cache.status"] for s in spans] == ["miss", "semantic_hit", "miss"]
    assert spans[1].attributes["llmcost.cache.tier"] == "high"
    assert 0.8 <= spans[1].attributes["llmcost.cache.similarity"] < 1.0
    assert spans[1].attributes["llmcost.cost.saved"] > 0
    assert lookups(metric_reader) == {("miss", "openai"): 2, ("semantic_hit", "openai"): 1}


def test_semantic_hit_replayed_as_anthropic_stream(both, claude, llm_server, span_exporter):
    """A paraphrase served semantically to a stream call is replayed as the SDK's events."""
    first = claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    with claude.messages.stream(model=CLAUDE, max_tokens=200, extra_body=ZERO,
                                messages=[{"role": "user", "content": PARAPHRASE}]) as stream:
        assert stream.get_final_text() == first.content[0].text
    assert sent(llm_server, "anthropic") == 1
    assert statuses(span_exporter) == ["miss", "semantic_hit"]


def test_medium_tier_only_when_enabled(instrumented, oai, llm_server, span_exporter):
    """A paraphrase the policy rates `medium` is a miss unless medium hits are on; then it is served and
    marked `llmcost.cache.tier=medium`."""
    install_guard(cache=ResponseCache(None, semantic_cache(high=0.99, medium=0.7)))
    oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}], temperature=0)
    install_guard(cache=ResponseCache(None, semantic_cache(high=0.99, medium=0.7), medium_hits=True))
    oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}], temperature=0)
    assert sent(llm_server, "openai") == 3
    spans = llmcost_spans(span_exporter)
    assert [s.attributes["llmcost.cache.status"] for s in spans] == ["miss", "miss", "miss", "semantic_hit"]
    assert spans[3].attributes["llmcost.cache.tier"] == "medium"
    assert "llmcost.cache.tier" not in spans[1].attributes


@pytest.fixture(scope="module")
def minilm() -> Iterator[Any]:
    """The real all-MiniLM-L6-v2 embedder (CI installs the embeddings extra: no skip)."""
    from otel_llmcost.cache.embedders import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    embedder.embed(["warm up"])
    yield embedder


def test_semantic_hit_with_minilm_and_the_guarded_policy(instrumented, minilm, oai, llm_server, span_exporter):
    """With MiniLM and the guarded policy, a reworded question is served; a look-alike asking for
    something else (another number) is not."""
    from otel_llmcost.cache.policy import GuardedPolicy

    install_guard(cache=ResponseCache(None, SemanticCache(minilm, GuardedPolicy())))
    ask = [{"role": "user", "content": "What is your return policy?"}]
    oai.chat.completions.create(model=GPT, messages=ask, temperature=0)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Tell me your return policy please"}],
                                temperature=0)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Can I return an item after 30 days?"}],
                                temperature=0)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Can I return an item after 90 days?"}],
                                temperature=0)
    assert statuses(span_exporter) == ["miss", "semantic_hit", "miss", "miss"]
    assert sent(llm_server, "openai") == 3


# -- isolation ---------------------------------------------------------------------------------------------
def test_tenants_never_share_answers(both, oai, llm_server, span_exporter):
    """User B gets nothing of user A's, neither the same question nor a paraphrase; A gets both of A's."""
    with otel_llmcost.attributes(tenant_id="acme", user_id="a"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    with otel_llmcost.attributes(tenant_id="acme", user_id="b"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    with otel_llmcost.attributes(tenant_id="globex", user_id="a"):
        oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}], temperature=0)
    oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)  # no attribution: its own space
    with otel_llmcost.attributes(tenant_id="acme", user_id="a"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
        oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}], temperature=0)
    assert statuses(span_exporter) == ["miss", "miss", "miss", "miss", "exact_hit", "semantic_hit"]
    assert sent(llm_server, "openai") == 4


def test_tenant_scope_is_configurable(instrumented, oai, llm_server, span_exporter):
    """With `tenant_attributes=("llmcost.tenant.id",)` users of one tenant share answers, tenants do not."""
    install_guard(cache=ResponseCache(ExactCache(), tenant_attributes=("llmcost.tenant.id",)))
    for tenant, user in (("acme", "a"), ("acme", "b"), ("globex", "a")):
        with otel_llmcost.attributes(tenant_id=tenant, user_id=user):
            oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert statuses(span_exporter) == ["miss", "exact_hit", "miss"]


@pytest.mark.parametrize("change", ["system", "model", "tools", "temperature", "max_tokens"])
def test_anything_that_changes_the_answer_never_matches(instrumented, oai, llm_server, span_exporter, change):
    """A different system prompt, model, tool list, temperature or limit misses: the same question matches
    neither exactly nor semantically (similarity 1.0) across the difference; within it, paraphrases hit."""
    install_guard(cache=ResponseCache(ExactCache(), semantic_cache(), cache_all=True))
    base: dict[str, Any] = {"model": GPT, "temperature": 0}
    other = dict(base)
    system = [{"role": "system", "content": "You are a support agent."}]
    if change == "system":
        base["system"], other["system"] = system, [{"role": "system", "content": "You are a pirate."}]
    elif change == "model":
        other["model"] = "gpt-4o"
    elif change == "tools":
        other["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    elif change == "temperature":
        other["temperature"] = 0.7
    else:
        other["max_tokens"] = 5

    def ask(kwargs: dict[str, Any], question: str) -> None:
        args = {k: v for k, v in kwargs.items() if k != "system"}
        oai.chat.completions.create(messages=[*kwargs.get("system", []), {"role": "user", "content": question}],
                                    **args)

    ask(base, QUESTION)
    ask(other, QUESTION)
    ask(base, PARAPHRASE)
    ask(other, PARAPHRASE)
    assert statuses(span_exporter) == ["miss", "miss", "semantic_hit", "semantic_hit"]
    assert sent(llm_server, "openai") == 2


# -- what is never stored -----------------------------------------------------------------------------------
def test_errors_are_not_cached(exact, oai, claude, gemini, llm_server):
    """A call that failed (HTTP 500) stores nothing: the next one goes to the provider, and its answer is."""
    llm_server.script(Reply(status=500, times=3))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    with pytest.raises(genai.errors.ServerError):
        gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    for _ in range(2):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
        claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
        gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    assert [sent(llm_server, p) for p in ("openai", "anthropic", "google")] == [2, 2, 2]


@pytest.mark.parametrize("provider, finish", [("openai", "content_filter"), ("anthropic", "refusal"),
                                              ("google", "SAFETY"), ("openai", "tool_calls")])
def test_refusals_and_tool_calls_are_not_cached(exact, oai, claude, gemini, llm_server, provider, finish):
    """A refusal (OpenAI `content_filter`, Anthropic `refusal`, Gemini `SAFETY`) or a tool call is never
    stored: the same call asked again goes to the provider."""
    llm_server.script(Reply(provider=provider, finish=finish))
    for _ in range(2):
        if provider == "openai":
            oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
        elif provider == "anthropic":
            claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
        else:
            gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    assert sent(llm_server, provider) == 2


def test_tool_calls_are_cached_with_cache_all(instrumented, oai, llm_server, span_exporter):
    """With `cache_all`, an answer that calls tools is stored and served."""
    install_guard(cache=ResponseCache(ExactCache(), cache_all=True))
    llm_server.script(Reply(provider="openai", finish="tool_calls"))
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    second = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert second.choices[0].finish_reason == "tool_calls" == first.choices[0].finish_reason
    assert statuses(span_exporter) == ["miss", "exact_hit"]


def test_incomplete_streams_are_not_cached(exact, oai, claude, llm_server):
    """A stream closed before its end, or cut off by the server, is not stored."""
    stream = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True)
    next(stream)
    stream.close()
    llm_server.script(Reply(provider="anthropic", cut_after_chunks=4))
    with pytest.raises(Exception), claude.messages.stream(  # noqa: B017 - whatever the SDK raises on a cut
            model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO) as broken:
        broken.until_done()
    oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    assert sent(llm_server, "openai") == 2 and sent(llm_server, "anthropic") == 2


def test_sampled_calls_are_not_cached_by_default(instrumented, oai, llm_server, span_exporter, metric_reader):
    """A call at the default temperature is neither looked up nor stored (no status, no lookup counted);
    `cache_all=True` caches it."""
    install_guard(cache=ResponseCache(ExactCache()))
    for _ in range(2):
        oai.chat.completions.create(model=GPT, messages=MSGS)
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0.7)
    assert sent(llm_server, "openai") == 4
    assert statuses(span_exporter) == [None] * 4 and lookups(metric_reader) == {}
    install_guard(cache=ResponseCache(ExactCache(), cache_all=True))
    for _ in range(2):
        oai.chat.completions.create(model=GPT, messages=MSGS)
    assert sent(llm_server, "openai") == 5


def test_raw_response_calls_are_left_alone(exact, oai, llm_server):
    """`with_raw_response` calls want the HTTP response itself: never answered from, nor stored in, the cache."""
    oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    raw = oai.chat.completions.with_raw_response.create(model=GPT, messages=MSGS, temperature=0)
    assert raw.parse().choices[0].message.content
    assert sent(llm_server, "openai") == 2


# -- per-request control -------------------------------------------------------------------------------------
def test_bypass_and_refresh(exact, oai, llm_server, span_exporter, metric_reader):
    """`cache_control("bypass")` neither reads nor writes (status `bypass`); `"refresh"` skips the read and
    replaces the stored answer, which later calls get."""
    with otel_llmcost.cache_control("bypass"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    with otel_llmcost.cache_control("bypass"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    llm_server.script(Reply(provider="openai", text="A fresher answer."))
    with otel_llmcost.cache_control("refresh"):
        fresh = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    later = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert fresh.choices[0].message.content == "A fresher answer." != first.choices[0].message.content
    assert later == fresh
    assert sent(llm_server, "openai") == 4
    assert statuses(span_exporter) == ["bypass", "miss", "bypass", "miss", "exact_hit"]
    assert lookups(metric_reader) == {("bypass", "openai"): 2, ("miss", "openai"): 2, ("exact_hit", "openai"): 1}


def test_cache_control_rejects_unknown_modes():
    """A mode other than default, bypass or refresh is a ValueError."""
    with pytest.raises(ValueError, match="bypass"), otel_llmcost.cache_control("skip"):
        pass


# -- storage backends and failures ---------------------------------------------------------------------------
def test_redis_backed_cache_and_redis_killed_mid_test(instrumented, own_redis: RedisServer, oai, claude, llm_server,
                                                      span_exporter, caplog):
    """Exact and semantic caches on a real Redis serve hits; with Redis killed, calls still succeed at the
    provider (status `miss`), the outage is logged once, and nothing is raised into the app."""
    prefix = f"test-{uuid.uuid4().hex}"
    exact_store = ExactCache(f"{own_redis.url}?prefix={prefix}-x")
    semantic_store = SemanticCache(HashingEmbedder(), ThresholdPolicy(0.8), f"{own_redis.url}?prefix={prefix}-s")
    # retry_interval=0: every operation asks Redis again (leaving it alone in an outage: test_outage.py)
    install_guard(cache=ResponseCache(exact_store, semantic_store, retry_interval=0))
    first = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0) == first
    assert oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": PARAPHRASE}],
                                       temperature=0) == first
    assert sent(llm_server, "openai") == 1
    own_redis.kill()
    with caplog.at_level(logging.DEBUG, logger="otel_llmcost.cache.callpath"):
        for _ in range(3):
            answer = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
            assert answer.choices[0].message.content == first.choices[0].message.content
            stream = oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream) == answer.choices[0].message.content
            claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, extra_body=ZERO)
    assert sent(llm_server, "openai") == 7 and sent(llm_server, "anthropic") == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "response cache failed" in r.message]
    assert len(warnings) == 1
    assert statuses(span_exporter)[3:] == ["miss"] * 9
    own_redis.start()  # back on the same port, empty: the cache works again and says so
    with caplog.at_level(logging.INFO, logger="otel_llmcost.cache.callpath"):
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
        oai.chat.completions.create(model=GPT, messages=MSGS, temperature=0)
    assert statuses(span_exporter)[-2:] == ["miss", "exact_hit"]
    assert any("answers again" in r.message for r in caplog.records)
    exact_store.close()
    semantic_store.close()


def test_sqlite_backed_cache_survives_a_new_process_cache(instrumented, tmp_path, oai, gemini, llm_server):
    """Entries in SQLite serve a fresh `ResponseCache` over the same file (a restarted app)."""
    uri = f"sqlite:///{tmp_path}/responses.db"
    install_guard(cache=ResponseCache(ExactCache(uri)))
    first = gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    install_guard(cache=ResponseCache(ExactCache(uri)))
    again = gemini.models.generate_content(model=GEMINI, contents=QUESTION, config=gconfig())
    assert again.text == first.text and sent(llm_server, "google") == 1


def test_a_cache_needs_a_store():
    """A `ResponseCache` with neither an exact nor a semantic cache is a ValueError."""
    with pytest.raises(ValueError):
        ResponseCache(None, None)


# -- codecs: a replayed stream puts back together into the stored answer -----------------------------------
CHAT_BODY: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": GPT,
    "system_fingerprint": "fp_1", "service_tier": "default",
    "choices": [
        {"index": 0, "finish_reason": "stop", "logprobs": None,
         "message": {"role": "assistant", "content": "Use the  reset link,\nthen sign in again. ", "refusal": None}},
        {"index": 1, "finish_reason": "tool_calls", "logprobs": None,
         "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": '{"user": "a b c d e f g h i j k l"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "reset", "arguments": "{}"}}]}},
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
}

MESSAGE_BODY: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE, "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 45, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4},
    "content": [
        {"type": "thinking", "thinking": "The user wants a reset. Look them up first.", "signature": "sig=="},
        {"type": "text", "text": "Per the guide, use the reset link.", "citations": [
            {"type": "char_location", "cited_text": "use the reset link", "document_index": 0,
             "start_char_index": 0, "end_char_index": 18}]},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"user": "a", "fields": ["email", "phone"]}},
    ],
}

GEMINI_BODY: dict[str, Any] = {
    "model_version": GEMINI, "response_id": "resp-1",
    "usage_metadata": {"prompt_token_count": 9, "candidates_token_count": 14, "thoughts_token_count": 5,
                       "total_token_count": 28},
    "candidates": [{"index": 0, "finish_reason": "STOP", "content": {"role": "model", "parts": [
        {"text": "Thinking about resets and sign-in flows here.", "thought": True},
        {"text": "Use the reset link on the sign-in page, then choose a new password."},
        {"function_call": {"name": "lookup", "args": {"user": "a"}}},
    ]}}],
}


def test_chat_replay_assembles_back_and_feeds_the_sdk_stream_helper():
    """Chat chunks replayed from a completion (two choices, text and tool calls, usage asked for) put
    back together into the same completion, and the SDK's `ChatCompletionStream` reads them."""
    from openai.lib.streaming.chat import ChatCompletionStream

    from otel_llmcost.cache.codecs import ReplayStream
    from otel_llmcost.cache.codecs.openai import ChatCodec

    codec = ChatCodec()
    chunks = codec.replay(CHAT_BODY, {"stream_options": {"include_usage": True}})
    assert codec.assemble(chunks) == CHAT_BODY
    assert codec.refuse(CHAT_BODY, cache_all=False) == "tool call" and codec.refuse(CHAT_BODY, cache_all=True) is None
    stream = ChatCompletionStream(raw_stream=ReplayStream(chunks), response_format=openai.omit,  # type: ignore[arg-type]
                                  input_tools=openai.omit)
    final = stream.get_final_completion()
    assert final.choices[0].message.content == CHAT_BODY["choices"][0]["message"]["content"]
    calls = final.choices[1].message.tool_calls or []
    assert [c.function.arguments for c in calls] == ['{"user": "a b c d e f g h i j k l"}', "{}"]


def test_anthropic_replay_assembles_back_and_feeds_message_stream():
    """Raw events replayed from a message with thinking, a cited text and a tool call put back together into
    that message, and the SDK's `MessageStream` accumulates the same message from them."""
    from anthropic.lib.streaming import MessageStream

    from otel_llmcost.cache.codecs import ReplayStream
    from otel_llmcost.cache.codecs.anthropic import MessagesCodec

    codec = MessagesCodec()
    events = codec.replay(MESSAGE_BODY, {})
    assert Message.model_validate(codec.assemble(events)) == Message.model_validate(MESSAGE_BODY)
    final = MessageStream(ReplayStream(events), output_format=anthropic.NOT_GIVEN).get_final_message()  # type: ignore[arg-type]
    expected = Message.model_validate(MESSAGE_BODY)
    assert [b.model_dump(exclude={"parsed_output"}) for b in final.content] == [b.model_dump() for b in expected.content]
    assert final.usage == expected.usage and final.stop_reason == "tool_use"


def test_gemini_replay_assembles_back():
    """Gemini chunks replayed from a response with a thought, a text and a function call merge back into it."""
    from otel_llmcost.cache.codecs.google import GenerateContentCodec

    codec = GenerateContentCodec(stream=True)
    chunks = codec.replay(GEMINI_BODY, {})
    assert len(chunks) > 3 and chunks[-1].usage_metadata.total_token_count == 28
    assert codec.assemble(chunks) == GEMINI_BODY
    assert codec.refuse(GEMINI_BODY, cache_all=False) == "tool call"


def test_responses_replay_feeds_the_sdk_response_stream(llm_server, oai):
    """Responses events replayed from a response with a message and a function call are accepted by the
    SDK's `ResponseStream`, whose final response is the stored one."""
    from openai.lib.streaming.responses import ResponseStream

    from otel_llmcost.cache.codecs import ReplayStream
    from otel_llmcost.cache.codecs.openai import ResponsesCodec

    codec = ResponsesCodec()
    body = codec.encode(oai.responses.create(model=GPT, input=QUESTION))
    assert body is not None
    body["output"].append({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup",
                           "arguments": '{"user": "a"}', "status": "completed"})
    events = codec.replay(body, {})
    assert codec.assemble(events) == body
    stream = ResponseStream(raw_stream=ReplayStream(events), text_format=openai.omit, input_tools=openai.omit,  # type: ignore[arg-type]
                            starting_after=None)
    final = stream.get_final_response()
    assert final.output_text == Response.model_validate(body).output_text
    assert [e.type for e in events].count("response.function_call_arguments.delta") == 1
