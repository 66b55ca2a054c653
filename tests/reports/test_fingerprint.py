"""Prompt fingerprints recorded at call time by the real SDKs: keyed hashes and a class, never text."""

from __future__ import annotations

import logging
import os
import stat

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import otel_llmcost
from otel_llmcost import fingerprint, names
from otel_llmcost.reports.advise import main as advise_main
from otel_llmcost.reports.synthetic import SYSTEM_PROMPT
from otel_llmcost.store import LocalStoreSpanExporter
from tests.conftest import llmcost_spans

FINGERPRINT_KEYS = (names.LLMCOST_QUERY_HASH, names.LLMCOST_PROMPT_PREFIX_HASHES,
                    names.LLMCOST_PROMPT_PREFIX_TOKENS, names.LLMCOST_ROUTE_COMPLEXITY)


def chat(client, question, system=SYSTEM_PROMPT):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return client.chat.completions.create(model="gpt-5.4", messages=messages, temperature=0)


@pytest.fixture
def oai(llm_server):
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test-secret", max_retries=0)


@pytest.fixture
def classify_all(monkeypatch):
    """Every call gets its complexity class (the default is a 10% sample)."""
    monkeypatch.setenv(fingerprint.OTEL_LLMCOST_COMPLEXITY_SAMPLE, "1")
    fingerprint.reset_key()


def test_openai_calls_carry_prefix_and_query_hashes(classify_all, instrumented, oai, span_exporter):
    """Two questions on one long system prompt share their prefix hashes; asking again repeats the query hash."""
    chat(oai, "What time do you close?")
    chat(oai, "Where is my order?")
    chat(oai, "What time do you close?")
    first, second, third = (span.attributes for span in llmcost_spans(span_exporter))
    # ~2,450 estimated tokens of system prompt: the 1024 and 2048 boundaries.
    assert first[names.LLMCOST_PROMPT_PREFIX_TOKENS] == (1024, 2048)
    assert first[names.LLMCOST_PROMPT_PREFIX_HASHES] == second[names.LLMCOST_PROMPT_PREFIX_HASHES]
    assert len(set(first[names.LLMCOST_PROMPT_PREFIX_HASHES])) == 2
    assert first[names.LLMCOST_QUERY_HASH] != second[names.LLMCOST_QUERY_HASH]
    assert first[names.LLMCOST_QUERY_HASH] == third[names.LLMCOST_QUERY_HASH]
    assert first[names.LLMCOST_ROUTE_COMPLEXITY] == "simple"
    for attrs in (first, second, third):
        for value in attrs.values():
            text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert "Policy" not in text and "close" not in text and "sk-test" not in text


def test_short_prompts_have_a_query_hash_only(instrumented, oai, span_exporter):
    """A prompt under 1024 estimated tokens has no prefix a provider would cache: no prefix attributes."""
    chat(oai, "Hi", system="Be brief.")
    attrs = llmcost_spans(span_exporter)[0].attributes
    assert names.LLMCOST_QUERY_HASH in attrs
    assert names.LLMCOST_PROMPT_PREFIX_HASHES not in attrs


def test_anthropic_and_gemini_hash_their_system_prompts(instrumented, llm_server, span_exporter):
    """Anthropic's `system=` and Gemini's `config.system_instruction` are part of the hashed prefix."""
    claude = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0)
    for question in ("Where is my order?", "Do you ship to Canada?"):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=SYSTEM_PROMPT,
                               messages=[{"role": "user", "content": question}])
    gemini = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=llm_server.google_base_url))
    for question in ("Where is my order?", "Do you ship to Canada?"):
        gemini.models.generate_content(model="gemini-2.5-flash", contents=question,
                                       config=types.GenerateContentConfig(system_instruction=SYSTEM_PROMPT))
    spans = [s.attributes for s in llmcost_spans(span_exporter)]
    assert len(spans) == 4
    claude_a, claude_b, gemini_a, gemini_b = spans
    assert claude_a[names.LLMCOST_PROMPT_PREFIX_HASHES] == claude_b[names.LLMCOST_PROMPT_PREFIX_HASHES]
    assert gemini_a[names.LLMCOST_PROMPT_PREFIX_HASHES] == gemini_b[names.LLMCOST_PROMPT_PREFIX_HASHES]
    assert claude_a[names.LLMCOST_QUERY_HASH] != claude_b[names.LLMCOST_QUERY_HASH]


def test_switch_turns_fingerprints_off(monkeypatch, tracer_provider, meter_provider, oai, span_exporter):
    """OTEL_LLMCOST_FINGERPRINTS=false: no hashes and no class on the span."""
    monkeypatch.setenv(fingerprint.OTEL_LLMCOST_FINGERPRINTS, "false")
    otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        chat(oai, "What time do you close?")
    finally:
        otel_llmcost.uninstrument()
    attrs = llmcost_spans(span_exporter)[0].attributes
    assert not any(key in attrs for key in FINGERPRINT_KEYS)


def test_hashes_are_keyed(monkeypatch):
    """The same prompt under two keys hashes differently: telemetry readers cannot confirm guesses."""
    kwargs = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "yes"}]}
    first = fingerprint.fingerprint("openai", "gpt-5.4", kwargs)[names.LLMCOST_QUERY_HASH]
    monkeypatch.setenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY, "another-installation")
    fingerprint.reset_key()
    second = fingerprint.fingerprint("openai", "gpt-5.4", kwargs)[names.LLMCOST_QUERY_HASH]
    assert first != second
    transport = fingerprint.fingerprint("openai", "gpt-5.4", {**kwargs, "timeout": 5, "extra_headers": {"x": "1"}})
    assert transport[names.LLMCOST_QUERY_HASH] == second  # options that do not change the answer
    hotter = fingerprint.fingerprint("openai", "gpt-5.4", {**kwargs, "temperature": 1})
    assert hotter[names.LLMCOST_QUERY_HASH] != second


def test_key_file_is_created_private_and_reused(monkeypatch, tmp_path):
    """With no key in the environment, a 0600 key file is made once and read back by later processes."""
    monkeypatch.delenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fingerprint.reset_key()
    key = fingerprint.hash_key()
    path = tmp_path / "otel-llmcost" / "fingerprint.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fingerprint.reset_key()
    assert fingerprint.hash_key() == key


def test_unusable_key_file_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    """A damaged key file does not break the app: a per-process key, and a warning that says so."""
    monkeypatch.delenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "otel-llmcost").mkdir()
    (tmp_path / "otel-llmcost" / "fingerprint.key").write_text("not hex")
    fingerprint.reset_key()
    with caplog.at_level(logging.WARNING):
        assert len(fingerprint.hash_key()) == 32
    assert "keyed for this process only" in caplog.text


def test_complexity_is_sampled(monkeypatch):
    """The class is recorded on the configured share of calls: none at 0, all at 1, some at 0.5."""
    kwargs = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "What time do you close?"}]}

    def classified(share: str) -> int:
        monkeypatch.setenv(fingerprint.OTEL_LLMCOST_COMPLEXITY_SAMPLE, share)
        fingerprint.reset_key()
        return sum(names.LLMCOST_ROUTE_COMPLEXITY in fingerprint.fingerprint("openai", "gpt-5.4", kwargs)
                   for _ in range(400))

    assert classified("0") == 0
    assert classified("1") == 400
    assert 120 < classified("0.5") < 280  # binomial(400, 0.5): outside this range once in ~10^15 runs


def test_advise_finds_the_repeated_prefix_of_real_calls(classify_all, llm_server, tmp_path, capsys):
    """Real OpenAI calls recorded in the embedded store: advise sees the shared 2,048-token prefix."""
    store = tmp_path / "calls.db"
    exporter = LocalStoreSpanExporter(store)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_llmcost.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test", max_retries=0)
        with otel_llmcost.attributes(user_id="u-1", feature="nightly-report"):
            for question in ("Where is my order?", "Do you ship to Canada?", "Where is my order?"):
                chat(client, question)
    finally:
        otel_llmcost.uninstrument()
        provider.shutdown()
    assert advise_main([str(store), "--format", "json", "--no-progress"]) == 0
    import json

    advice = {r["kind"]: r for r in json.loads(capsys.readouterr().out)["recommendations"]}
    caching = advice["prompt_caching"]["evidence"]
    assert caching["calls_with_a_cached_prefix_available"] == 2
    assert advice["app_caching"]["evidence"]["exact_duplicates"] == 1
    assert advice["batching"]["sample"] == 3
    assert advice["routing"]["evidence"]["calls_classified"] == 3


def _blake(key: bytes, text: str) -> str:
    import hashlib

    digest = hashlib.blake2b(key=key, digest_size=16, person=b"llmcost-prefix")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def test_hashes_follow_the_documented_serialisation(monkeypatch):
    """Hashes recorded by earlier releases must stay comparable: the text hashed is the prompt's strings in
    prompt-cache order joined by U+001F (mapping keys, then values; list items; SDK objects by their
    dump; numbers by repr), then provider, model and the answer-changing parameters sorted by name."""
    from pydantic import BaseModel

    class Part(BaseModel):
        type: str
        text: str | None = None

    monkeypatch.setenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY, "pinned")
    fingerprint.reset_key()
    key = fingerprint.hash_key()
    kwargs = {
        "model": "gpt-5.4",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [Part(type="text", text="hi"), {"n": 2, "skip": None}]}],
        "tools": [{"name": "t", "deep": [[{"x": (1.5, True)}]]}],
        "temperature": 0, "seed": 7, "timeout": 3, "response_format": {"type": "json_object"},
    }
    prompt = ["tools", "name", "t", "deep", "x", "1.5", "True",
              "messages", "role", "system", "content", "Be brief.", "role", "user", "content",
              "type", "text", "text", "hi", "n", "2"]
    rest = ["openai", "gpt-5.4", "response_format", "type", "json_object", "seed", "7", "temperature", "0"]
    expected = _blake(key, "\x1f".join(prompt) + "\x1f".join([""] + rest))
    got = fingerprint.fingerprint("openai", "gpt-5.4", kwargs, complexity_rate=0.0)
    assert got == {names.LLMCOST_QUERY_HASH: expected}


def test_prefix_hashes_cover_whole_boundaries_and_deep_nesting_stops():
    """A prompt of 7,500 characters has one prefix hash (the first 1,024 estimated tokens = 4,096 chars);
    nesting deeper than the walk follows is left out instead of recursing without end."""
    fingerprint.reset_key()
    key = fingerprint.hash_key()
    text = "word " * 1500
    kwargs = {"messages": [{"role": "user", "content": text}]}
    got = fingerprint.fingerprint("openai", "m", kwargs, complexity_rate=0.0)
    joined = "\x1f".join(["messages", "role", "user", "content", text])
    assert got[names.LLMCOST_PROMPT_PREFIX_TOKENS] == (1024,)
    assert got[names.LLMCOST_PROMPT_PREFIX_HASHES] == (_blake(key, joined[:4096]),)
    nested: object = "bottom"
    for _ in range(200):
        nested = [nested]
    deep = fingerprint.fingerprint("openai", "m", {"messages": nested}, complexity_rate=0.0)
    shallow = fingerprint.fingerprint("openai", "m", {"messages": [[[]]]}, complexity_rate=0.0)
    assert deep[names.LLMCOST_QUERY_HASH] == shallow[names.LLMCOST_QUERY_HASH]  # "bottom" is below the cut
