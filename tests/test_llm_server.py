"""The loopback LLM server against the real OpenAI, Anthropic and google-genai SDK clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from otel_llmcost.testing import LoopbackLLMServer, Reply

QUESTION = "What is the return policy?"
MSGS = [{"role": "user", "content": QUESTION}]
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.5-flash"
# About 1,900 tokens of shared prefix (over the 1,024-token caching minimum) and about 190 (under it).
LONG_SYSTEM = " ".join(f"Policy {i}: items of category {i} may be returned within {14 + i % 30} days "
                       f"with a receipt; shipping is free above {20 + i} dollars." for i in range(70))
SHORT_SYSTEM = LONG_SYSTEM[:760]


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


@pytest.fixture(autouse=True)
def _no_server_errors(llm_server):
    yield
    assert not llm_server.errors, llm_server.errors


# Sync clients are shared by the module: building one (an SSL context each) costs more than most tests.
@pytest.fixture(scope="module")
def oai(_llm_server_session):
    return openai.OpenAI(base_url=_llm_server_session.openai_base_url, api_key="sk-test-secret", max_retries=0)


@pytest.fixture
def aoai(llm_server):
    return openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="sk-test-secret", max_retries=0)


@pytest.fixture(scope="module")
def claude(_llm_server_session):
    return anthropic.Anthropic(base_url=_llm_server_session.anthropic_base_url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def aclaude(llm_server):
    return anthropic.AsyncAnthropic(base_url=llm_server.anthropic_base_url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture(scope="module")
def gemini(_llm_server_session):
    """Sync and, through .aio, async: google-genai keeps one async HTTP client per event loop."""
    return genai.Client(api_key="goog-test",
                        http_options=types.HttpOptions(base_url=_llm_server_session.google_base_url))


# ------------------------------------------------------------------------------------------------
# Server basics


def test_addresses_and_lifecycle():
    """Base URLs follow the server URL; url needs a started server; stop is idempotent."""
    server = LoopbackLLMServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    with server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        assert server.openai_base_url == server.url + "/v1"
        assert server.anthropic_base_url == server.google_base_url == server.url
    server.stop()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback():
    """host='::1' serves on the IPv6 loopback and the URL brackets the address."""
    with LoopbackLLMServer(host="::1") as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        assert server.url.startswith("http://[::1]:")
        assert client.chat.completions.create(model="gpt-4o", messages=MSGS).usage.total_tokens > 0


def test_keep_alive_and_headers_on_raw_http(llm_server):
    """Two requests share one HTTP/1.1 connection; JSON has Content-Length and provider request-id headers."""
    host, port = llm_server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for path, header in (("/v1/chat/completions", "x-request-id"), ("/v1/messages", "request-id")):
            body = {"model": "m", "messages": MSGS, "max_tokens": 50}
            connection.request("POST", path, json.dumps(body), {"content-type": "application/json",
                                                                "authorization": "Bearer sk-secret"})
            response = connection.getresponse()
            payload = response.read()
            assert response.status == 200
            assert int(response.getheader("content-length")) == len(payload)
            assert response.getheader(header, "").startswith("req_")
            assert b"sk-secret" not in payload
        assert connection.sock is not None  # still open: keep-alive
    finally:
        connection.close()
    assert [r.headers["authorization"] for r in llm_server.requests] == ["Bearer sk-secret"] * 2


def test_unknown_path_is_a_provider_404(oai, llm_server):
    """An unknown endpoint answers 404 in the provider's error shape, so the SDK raises NotFoundError."""
    with pytest.raises(openai.NotFoundError):
        oai.get("/no/such/thing", cast_to=object)


def test_scripts_match_provider_and_count_times(oai, claude, llm_server):
    """A script applies only to its provider's requests, `times` times, in queue order."""
    llm_server.script(Reply(provider="anthropic", status=500, times=2))
    llm_server.script(Reply(provider="anthropic", text="third"))
    assert oai.chat.completions.create(model="gpt-4o", messages=MSGS).choices[0].message.content
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            claude.messages.create(model=CLAUDE, max_tokens=50, messages=MSGS)
    assert claude.messages.create(model=CLAUDE, max_tokens=50, messages=MSGS).content[0].text == "third"
    assert claude.messages.create(model=CLAUDE, max_tokens=50, messages=MSGS).content[0].text != "third"


def test_reset_clears_requests_scripts_and_caches(oai, llm_server):
    """reset() forgets recorded requests, pending scripts and the prompt-cache memory."""
    messages = [{"role": "system", "content": LONG_SYSTEM}, *MSGS]
    oai.chat.completions.create(model="gpt-4o", messages=messages)
    llm_server.script(Reply(status=500))
    llm_server.reset()
    assert llm_server.requests == []
    response = oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert response.usage.prompt_tokens_details.cached_tokens == 0


def test_authorization_recorded_never_echoed(oai, llm_server):
    """The API key is visible in recorded requests (for tests) but in no response."""
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
    assert "sk-test-secret" not in raw.http_response.text
    assert "sk-test-secret" not in str(dict(raw.headers))
    assert llm_server.requests[-1].headers["authorization"] == "Bearer sk-test-secret"


# ------------------------------------------------------------------------------------------------
# OpenAI


def test_openai_chat_default_usage(oai, llm_server):
    """Unscripted chat: prompt ≈ chars/4, output from a deterministic reply, request model echoed."""
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert isinstance(first, openai.types.chat.ChatCompletion)
    text = first.choices[0].message.content
    assert text == second.choices[0].message.content and QUESTION.rstrip("?") in text
    assert first.model == "gpt-4o-mini" and first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens == tokens(QUESTION)
    assert first.usage.completion_tokens == math.ceil(len(text) / 4)
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage.completion_tokens_details.reasoning_tokens == 0
    assert llm_server.requests[-1].json["messages"] == MSGS


async def test_openai_chat_async(aoai):
    """The async client parses the same response."""
    response = await aoai.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert response.usage.prompt_tokens == tokens(QUESTION) and response.choices[0].message.content


def test_openai_max_tokens_caps_output(oai):
    """max_completion_tokens / max_tokens cap the output and give finish_reason 'length'."""
    capped = oai.chat.completions.create(model="gpt-4o", messages=MSGS, max_completion_tokens=3)
    assert capped.usage.completion_tokens == 3 and capped.choices[0].finish_reason == "length"
    legacy = oai.chat.completions.create(model="gpt-4o", messages=MSGS, max_tokens=5)
    assert legacy.usage.completion_tokens == 5


def test_openai_stream_without_usage_chunk(oai):
    """A stream has no usage chunk unless stream_options.include_usage, as the real API."""
    full = oai.chat.completions.create(model="gpt-4o", messages=MSGS).choices[0].message.content
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True))
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"


def test_openai_stream_include_usage(oai):
    """With include_usage the last chunk has empty choices and the usage."""
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == tokens(QUESTION)
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_async(aoai):
    """Async streams parse, with the usage chunk when asked."""
    stream = await aoai.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True,
                                                stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].usage.completion_tokens > 0 and chunks[0].choices


def test_openai_stream_helper(oai):
    """chat.completions.stream() accumulates a final completion."""
    with oai.chat.completions.stream(model="gpt-4o", messages=MSGS,
                                     stream_options={"include_usage": True}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content and final.usage.total_tokens > 0


def test_openai_script_overrides(oai, llm_server):
    """Scripted usage keys replace the computed ones (total recomputed), with model and text overrides."""
    llm_server.script(Reply(provider="openai", model="gpt-4o-2024-08-06", text="Hello.", usage={
        "prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens": 500, "completion_tokens_details": {"reasoning_tokens": 400}}))
    response = oai.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert response.model == "gpt-4o-2024-08-06" and response.choices[0].message.content == "Hello."
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2000, 500, 2500)
    assert usage.prompt_tokens_details.cached_tokens == 1024
    assert usage.prompt_tokens_details.audio_tokens == 0  # untouched computed key kept
    assert usage.completion_tokens_details.reasoning_tokens == 400


@pytest.mark.parametrize(("status", "error"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError),
    (429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_openai_errors(oai, llm_server, status, error):
    """Scripted statuses give OpenAI's error JSON, so the SDK raises its own exception class."""
    llm_server.script(Reply(provider="openai", status=status))
    with pytest.raises(error) as info:
        oai.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert info.value.status_code == status
    assert set(info.value.body) >= {"message", "type", "param", "code"}
    assert info.value.request_id.startswith("req_")


async def test_openai_error_async_and_custom_body(aoai, llm_server):
    """The async client raises too, with a scripted error body passed through."""
    llm_server.script(Reply(provider="openai", status=429, error_body={
        "error": {"message": "quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}))
    with pytest.raises(openai.RateLimitError) as info:
        await aoai.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert info.value.code == "insufficient_quota"


def test_openai_retries_use_short_retry_after(llm_server):
    """With SDK retries on, two scripted 429s are retried quickly (retry-after-ms) and the third call succeeds."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=2)
    llm_server.script(Reply(provider="openai", status=429, times=2))
    assert client.chat.completions.create(model="gpt-4o", messages=MSGS).usage.total_tokens > 0
    assert len(llm_server.requests) == 3


def test_openai_cut_stream_raises(oai, llm_server):
    """A stream cut mid-way surfaces as openai.APIConnectionError (cause: httpx2.RemoteProtocolError)."""
    llm_server.script(Reply(provider="openai", cut_after_chunks=2))
    received = []
    with pytest.raises(openai.APIConnectionError) as info:
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True):
            received.append(chunk)
    assert len(received) == 2
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert oai.chat.completions.create(model="gpt-4o", messages=MSGS).choices  # the pool recovers


async def test_openai_cut_stream_raises_async(aoai, llm_server):
    """The async client raises APIConnectionError on a cut stream too."""
    llm_server.script(Reply(provider="openai", cut_after_chunks=1))
    stream = await aoai.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass


def test_openai_delay_triggers_client_timeout(llm_server):
    """A scripted delay longer than the client timeout raises APITimeoutError."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0, timeout=0.2)
    llm_server.script(Reply(provider="openai", delay=1.0))
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=MSGS)


def test_openai_prompt_caching(oai):
    """A repeated prefix of >= 1024 tokens is reported cached in 128-token steps; shorter ones never."""
    long_messages = [{"role": "system", "content": LONG_SYSTEM}, *MSGS]
    first = oai.chat.completions.create(model="gpt-4o", messages=long_messages)
    other_question = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Hours?"}]
    second = oai.chat.completions.create(model="gpt-4o", messages=other_question)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert 1024 <= cached <= tokens(LONG_SYSTEM) and (cached - 1024) % 128 == 0
    assert tokens(LONG_SYSTEM) - cached < 128 + 4
    other_model = oai.chat.completions.create(model="gpt-4o-mini", messages=long_messages)
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0  # caches are per model
    short = [{"role": "system", "content": SHORT_SYSTEM}, *MSGS]
    oai.chat.completions.create(model="gpt-4o", messages=short)
    assert oai.chat.completions.create(model="gpt-4o", messages=short).usage.prompt_tokens_details.cached_tokens == 0


def test_openai_responses_create_and_stream(oai):
    """Responses API: JSON and the real event sequence ending in response.completed with usage."""
    response = oai.responses.create(model="gpt-4o", input=QUESTION, instructions="Be brief.")
    assert response.output_text and response.model == "gpt-4o" and response.status == "completed"
    assert response.usage.input_tokens == tokens("Be brief." + QUESTION)
    assert response.usage.output_tokens == math.ceil(len(response.output_text) / 4)
    assert response.usage.input_tokens_details.cached_tokens == 0
    events = list(oai.responses.create(model="gpt-4o", input=QUESTION, instructions="Be brief.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage == response.usage
    with oai.responses.stream(model="gpt-4o", input=QUESTION, instructions="Be brief.") as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == response.output_text


async def test_openai_responses_async_with_scripted_usage(aoai, llm_server):
    """Scripted Responses usage (cached and reasoning tokens) reaches the async client's parsed object."""
    llm_server.script(Reply(provider="openai", usage={
        "input_tokens": 3000, "output_tokens": 200, "input_tokens_details": {"cached_tokens": 2048},
        "output_tokens_details": {"reasoning_tokens": 50}}))
    response = await aoai.responses.create(model="o4-mini", input="Summarise")
    assert response.usage.total_tokens == 3200
    assert response.usage.input_tokens_details.cached_tokens == 2048
    assert response.usage.output_tokens_details.reasoning_tokens == 50
    stream = await aoai.responses.create(model="o4-mini", input="Summarise", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"


def test_openai_responses_prompt_caching(oai):
    """The Responses API reports input_tokens_details.cached_tokens for a repeated long prefix."""
    oai.responses.create(model="gpt-4o", instructions=LONG_SYSTEM, input=QUESTION)
    again = oai.responses.create(model="gpt-4o", instructions=LONG_SYSTEM, input="Hours?")
    assert again.usage.input_tokens_details.cached_tokens >= 1024


def test_openai_responses_max_output_tokens_incomplete(oai):
    """max_output_tokens caps the output and marks the response incomplete."""
    response = oai.responses.create(model="gpt-4o", input=QUESTION, max_output_tokens=16)
    assert response.status == "incomplete" and response.usage.output_tokens == 16
    assert response.incomplete_details.reason == "max_output_tokens"


def test_openai_embeddings(oai, llm_server):
    """Embeddings: the SDK's default base64 request decodes to the same vectors as encoding_format=float."""
    default = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "return policy"])
    assert llm_server.requests[-1].json["encoding_format"] == "base64"
    floats = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "return policy"],
                                   encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data[0].embedding) == 8
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens("hello world") + tokens("return policy")
    sized = oai.embeddings.create(model="text-embedding-3-large", input="x", dimensions=32)
    assert len(sized.data[0].embedding) == 32
    assert abs(sum(v * v for v in sized.data[0].embedding) - 1) < 1e-5


async def test_openai_embeddings_async(aoai):
    """The async client parses embeddings."""
    response = await aoai.embeddings.create(model="text-embedding-3-small", input="hello")
    assert response.usage.prompt_tokens == 2 and len(response.data[0].embedding) == 8


def test_openai_batch_roundtrip(oai):
    """Files + batches: upload JSONL, create, retrieve completed, read output lines with usage."""
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(3)]
    upload = oai.files.create(file=("in.jsonl", "\n".join(map(json.dumps, lines)).encode(), "application/jsonl"),
                              purpose="batch")
    assert upload.status == "processed" and upload.purpose == "batch"
    batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating" and batch.request_counts.total == 3
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3 and done.output_file_id
    output = [json.loads(line) for line in oai.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["r0", "r1", "r2"]
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["usage"]["prompt_tokens"] == 1
               for o in output)
    assert done.usage.input_tokens == 3


# ------------------------------------------------------------------------------------------------
# Anthropic


def test_anthropic_create_usage(claude):
    """Unscripted message: input ≈ chars/4, output from the reply text, request-id header, end_turn."""
    raw = claude.messages.with_raw_response.create(model=CLAUDE, max_tokens=200, messages=MSGS)
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert raw.headers["request-id"].startswith("req_")
    assert message.model == CLAUDE and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == tokens(QUESTION)
    assert message.usage.output_tokens == math.ceil(len(message.content[0].text) / 4)
    assert message.usage.cache_read_input_tokens == message.usage.cache_creation_input_tokens == 0
    assert message.usage.service_tier == "standard"


async def test_anthropic_create_async(aclaude):
    """The async client parses the message."""
    message = await aclaude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS)
    assert message.usage.input_tokens == tokens(QUESTION) and message.content[0].text


def test_anthropic_max_tokens(claude):
    """max_tokens caps the output with stop_reason max_tokens."""
    message = claude.messages.create(model=CLAUDE, max_tokens=4, messages=MSGS)
    assert message.usage.output_tokens == 4 and message.stop_reason == "max_tokens"


def test_anthropic_raw_stream_events(claude):
    """stream=True yields the real event types; message_delta carries cumulative usage incl. input."""
    events = list(claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert events[0].message.usage.input_tokens == tokens(QUESTION)
    delta = events[-2]
    assert delta.usage.input_tokens == tokens(QUESTION) and delta.usage.output_tokens > 1
    assert delta.delta.stop_reason == "end_turn"


def test_anthropic_stream_helper_final_usage(claude):
    """messages.stream() gives text and a final message with the full usage."""
    plain = claude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS)
    with claude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == final.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_anthropic_stream_helper_async(aclaude):
    """The async stream helper's final message has the usage."""
    async with aclaude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS) as stream:
        async for _ in stream.text_stream:
            pass
        final = await stream.get_final_message()
    assert final.usage.output_tokens > 0 and final.usage.input_tokens == tokens(QUESTION)


@pytest.mark.parametrize(("status", "error"), [
    (400, anthropic.BadRequestError), (401, anthropic.AuthenticationError), (429, anthropic.RateLimitError),
    (500, anthropic.InternalServerError), (529, anthropic.OverloadedError)])
def test_anthropic_errors(claude, llm_server, status, error):
    """Scripted statuses give Anthropic's error JSON, so the SDK raises its own exception class."""
    llm_server.script(Reply(provider="anthropic", status=status))
    with pytest.raises(error) as info:
        claude.messages.create(model=CLAUDE, max_tokens=50, messages=MSGS)
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.request_id.startswith("req_")


async def test_anthropic_error_async(aclaude, llm_server):
    """The async client raises the SDK's class as well."""
    llm_server.script(Reply(provider="anthropic", status=429))
    with pytest.raises(anthropic.RateLimitError):
        await aclaude.messages.create(model=CLAUDE, max_tokens=50, messages=MSGS)


def test_anthropic_cut_stream_raises(claude, llm_server):
    """A cut stream raises httpx2.RemoteProtocolError from the anthropic SDK (it does not wrap it)."""
    llm_server.script(Reply(provider="anthropic", cut_after_chunks=3))
    with pytest.raises(httpx2.RemoteProtocolError), \
            claude.messages.stream(model=CLAUDE, max_tokens=200, messages=MSGS) as stream:
        for _ in stream.text_stream:
            pass


async def test_anthropic_cut_stream_raises_async(aclaude, llm_server):
    """The async client raises on a cut stream too."""
    llm_server.script(Reply(provider="anthropic", cut_after_chunks=2))
    stream = await aclaude.messages.create(model=CLAUDE, max_tokens=200, messages=MSGS, stream=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        async for _ in stream:
            pass


def _cached_system(text: str, **control: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", **control}}]


def test_anthropic_cache_write_then_read(claude):
    """A cache_control prefix >= 1024 tokens is written on first sight and read after; input excludes both."""
    system = _cached_system(LONG_SYSTEM)
    first = claude.messages.create(model=CLAUDE, max_tokens=200, system=system, messages=MSGS)
    prefix = tokens(LONG_SYSTEM)
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.usage.cache_read_input_tokens == 0
    total = tokens(LONG_SYSTEM + QUESTION)
    assert first.usage.input_tokens == total - prefix
    with claude.messages.stream(model=CLAUDE, max_tokens=200, system=system,
                                messages=[{"role": "user", "content": "Hours?"}]) as stream:
        second = stream.get_final_message()
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == tokens(LONG_SYSTEM + "Hours?") - prefix
    other_model = claude.messages.create(model="claude-opus-4-1", max_tokens=20, system=system, messages=MSGS)
    assert other_model.usage.cache_read_input_tokens == 0  # caches are per model


def test_anthropic_cache_one_hour_ttl(claude):
    """A breakpoint with ttl 1h bills the write as ephemeral_1h."""
    usage = claude.messages.create(model=CLAUDE, max_tokens=20, system=_cached_system(LONG_SYSTEM, ttl="1h"),
                                   messages=MSGS).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == tokens(LONG_SYSTEM)
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0


def test_anthropic_no_cache_below_minimum(claude):
    """Below 1024 tokens nothing is cached, however often it is sent."""
    for _ in range(2):
        usage = claude.messages.create(model=CLAUDE, max_tokens=20, system=_cached_system(SHORT_SYSTEM),
                                       messages=MSGS).usage
        assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
        assert usage.input_tokens == tokens(SHORT_SYSTEM + QUESTION)


def test_anthropic_cache_on_message_blocks(claude):
    """Breakpoints in message content (a growing conversation) read the earlier prefix and write the rest."""
    turn1 = [{"role": "user", "content": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]}]
    claude.messages.create(model=CLAUDE, max_tokens=20, messages=turn1)
    turn2 = [{"role": "user", "content": [{"type": "text", "text": LONG_SYSTEM}]},
             {"role": "assistant", "content": "Noted."},
             {"role": "user", "content": [{"type": "text", "text": "Hours? " * 20,
                                           "cache_control": {"type": "ephemeral"}}]}]
    usage = claude.messages.create(model=CLAUDE, max_tokens=20, messages=turn2).usage
    assert usage.cache_read_input_tokens == tokens(LONG_SYSTEM)
    assert usage.cache_creation_input_tokens == tokens(LONG_SYSTEM + "Noted." + "Hours? " * 20) - tokens(LONG_SYSTEM)


def test_anthropic_automatic_caching(claude):
    """Top-level cache_control puts the breakpoint on the last block: the next turn reads the whole prefix."""
    messages = [{"role": "user", "content": LONG_SYSTEM}]
    first = claude.messages.create(model=CLAUDE, max_tokens=20, messages=messages,
                                   cache_control={"type": "ephemeral"})
    assert first.usage.cache_creation_input_tokens == tokens(LONG_SYSTEM)
    longer = [*messages, {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Hours?"}]
    second = claude.messages.create(model=CLAUDE, max_tokens=20, messages=longer,
                                    cache_control={"type": "ephemeral"})
    assert second.usage.cache_read_input_tokens == tokens(LONG_SYSTEM)
    assert second.usage.cache_creation_input_tokens == tokens(LONG_SYSTEM + "Noted.Hours?") - tokens(LONG_SYSTEM)


def test_anthropic_count_tokens(claude):
    """count_tokens answers the same input count as an uncached message."""
    assert claude.messages.count_tokens(model=CLAUDE, messages=MSGS).input_tokens == tokens(QUESTION)


def test_anthropic_batches(claude):
    """Message batches: create (in progress), retrieve (ended), results as JSONL with batch-tier usage."""
    batch = claude.messages.batches.create(requests=[
        {"custom_id": f"r{i}", "params": {"model": CLAUDE, "max_tokens": 50, "messages": MSGS}} for i in range(2)])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 2
    ended = claude.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 2 and ended.results_url
    results = list(claude.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["r0", "r1"]
    assert all(r.result.type == "succeeded" and r.result.message.usage.service_tier == "batch" for r in results)


# ------------------------------------------------------------------------------------------------
# Google


def test_google_generate_content_usage(gemini, llm_server):
    """generateContent: usage_metadata from the text, model version echoed, finish STOP."""
    response = gemini.models.generate_content(model=GEMINI, contents=QUESTION)
    usage = response.usage_metadata
    assert usage.prompt_token_count == tokens(QUESTION)
    assert usage.candidates_token_count == math.ceil(len(response.text) / 4)
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert usage.cached_content_token_count is None
    assert response.model_version == GEMINI and response.candidates[0].finish_reason == types.FinishReason.STOP
    assert llm_server.requests[-1].headers["x-goog-api-key"] == "goog-test"
    assert llm_server.requests[-1].path.endswith(f"/models/{GEMINI}:generateContent")


async def test_google_generate_content_async(gemini):
    """The async client (gemini.aio) parses the same response."""
    response = await gemini.aio.models.generate_content(model=GEMINI, contents=QUESTION)
    assert response.usage_metadata.prompt_token_count == tokens(QUESTION) and response.text


def test_google_max_output_tokens(gemini):
    """maxOutputTokens caps the output with finish reason MAX_TOKENS."""
    response = gemini.models.generate_content(model=GEMINI, contents=QUESTION,
                                              config=types.GenerateContentConfig(max_output_tokens=5))
    assert response.usage_metadata.candidates_token_count == 5
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_google_stream_usage_on_last_chunk(gemini, llm_server):
    """generate_content_stream (alt=sse) yields chunks; the last carries the full usage_metadata."""
    chunks = list(gemini.models.generate_content_stream(model=GEMINI, contents=QUESTION))
    assert llm_server.requests[-1].query == {"alt": "sse"}
    assert len(chunks) > 1
    assert all(c.usage_metadata.candidates_token_count is None for c in chunks[:-1])
    last = chunks[-1].usage_metadata
    text = "".join(c.text for c in chunks)
    assert last.candidates_token_count == math.ceil(len(text) / 4)
    assert last.prompt_token_count == tokens(QUESTION)


async def test_google_stream_async(gemini):
    """The async stream ends with the full usage too."""
    chunks = [c async for c in await gemini.aio.models.generate_content_stream(model=GEMINI, contents=QUESTION)]
    assert chunks[-1].usage_metadata.total_token_count > chunks[0].usage_metadata.prompt_token_count


@pytest.mark.parametrize(("status", "error"), [
    (400, genai_errors.ClientError), (401, genai_errors.ClientError), (429, genai_errors.ClientError),
    (500, genai_errors.ServerError)])
def test_google_errors(gemini, llm_server, status, error):
    """Scripted statuses give Google's error JSON; the SDK raises ClientError / ServerError with the code."""
    llm_server.script(Reply(provider="google", status=status))
    with pytest.raises(error) as info:
        gemini.models.generate_content(model=GEMINI, contents=QUESTION)
    assert info.value.code == status and info.value.status


async def test_google_error_async(gemini, llm_server):
    """The async client raises ClientError as well."""
    llm_server.script(Reply(provider="google", status=429))
    with pytest.raises(genai_errors.ClientError):
        await gemini.aio.models.generate_content(model=GEMINI, contents=QUESTION)


def test_google_cut_stream_raises(gemini, llm_server):
    """A cut stream raises httpx2.RemoteProtocolError from google-genai (not wrapped)."""
    llm_server.script(Reply(provider="google", cut_after_chunks=1))
    received = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for chunk in gemini.models.generate_content_stream(model=GEMINI, contents=QUESTION):
            received.append(chunk)
    assert len(received) == 1


def test_google_cached_content(gemini):
    """cachedContentTokenCount appears only when the request names a cachedContent (included in the prompt count)."""
    cache = gemini.caches.create(model=GEMINI, config=types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[types.Part(text=LONG_SYSTEM)])], ttl="300s"))
    assert cache.name.startswith("cachedContents/") and cache.usage_metadata.total_token_count == tokens(LONG_SYSTEM)
    response = gemini.models.generate_content(model=GEMINI, contents=QUESTION,
                                              config=types.GenerateContentConfig(cached_content=cache.name))
    usage = response.usage_metadata
    assert usage.cached_content_token_count == tokens(LONG_SYSTEM)
    assert usage.prompt_token_count == tokens(QUESTION) + tokens(LONG_SYSTEM)
    plain = gemini.models.generate_content(model=GEMINI, contents=QUESTION)
    assert plain.usage_metadata.cached_content_token_count is None


def test_google_embed_content(gemini, llm_server):
    """embed_content (batchEmbedContents on the Developer API) returns vectors and a token count."""
    response = gemini.models.embed_content(model="gemini-embedding-001", contents=["hello", "return policy"])
    assert llm_server.requests[-1].path.endswith(":batchEmbedContents")
    assert [len(e.values) for e in response.embeddings] == [8, 8]
    assert response.usage_metadata.prompt_token_count == tokens("hello") + tokens("return policy")
    sized = gemini.models.embed_content(model="gemini-embedding-001", contents="x",
                                        config=types.EmbedContentConfig(output_dimensionality=16))
    assert len(sized.embeddings[0].values) == 16


async def test_google_embed_content_async(gemini):
    """The async client parses embeddings."""
    response = await gemini.aio.models.embed_content(model="gemini-embedding-001", contents="hello")
    assert len(response.embeddings[0].values) == 8


# ------------------------------------------------------------------------------------------------
# Concurrency


async def test_many_concurrent_async_calls(aoai, aclaude, gemini):
    """Dozens of concurrent async calls across the three SDKs all succeed (backlog, threads, keep-alive)."""
    calls = []
    for i in range(20):
        question = [{"role": "user", "content": f"q{i}"}]
        calls.append(aoai.chat.completions.create(model="gpt-4o", messages=question))
        calls.append(aclaude.messages.create(model=CLAUDE, max_tokens=50, messages=question))
        calls.append(gemini.aio.models.generate_content(model=GEMINI, contents=f"q{i}"))
    results = await asyncio.gather(*calls)
    assert len(results) == 60
