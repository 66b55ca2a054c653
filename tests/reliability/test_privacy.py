"""Privacy: no prompt or response text, and never an API key, in anything otel-llmcost emits.

A workload through all three real SDKs (sync, async, streamed; a 5xx, a cut stream, refusals) with
distinctive API keys and distinctive prompt, system-prompt and response text, through the whole product:
instrumentation, guard (rate limit, exact and semantic cache, budget breaker), budget processor with
log, webhook (JSON and Slack) and OpenTelemetry alert sinks, and the embedded SQLite store. Then every
span attribute, event, link and status, every metric point, every log record (tracebacks included),
every alert payload and header, every OpenTelemetry log record and every store row is scanned for the
canaries. With content capture turned on, the text must appear (the opt-in works) — the keys still not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_llmcost
from otel_llmcost.budget import Budget, BudgetEngine, Scope, WebhookSink
from otel_llmcost.budget.alerts import LoggingSink
from otel_llmcost.budget.otel_sink import OpenTelemetrySink
from otel_llmcost.budget.processor import enable_budgets
from otel_llmcost.cache import ExactCache, SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import ThresholdPolicy
from otel_llmcost.guard import install_guard
from otel_llmcost.ratelimit import RateLimiter, Tier
from otel_llmcost.store import LocalStoreSpanExporter
from otel_llmcost.testing import WebhookReceiver
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply

from .helpers import leaks, metric_haystacks, span_haystacks

KEYS = {
    "openai": "sk-proj-CANARYKEYopenai0123456789abcdef",
    "anthropic": "sk-ant-api03-CANARYKEYanthropic0123456789",
    "google": "AIzaCANARYKEYgoogle0123456789abcdefgh",
}
PROMPT = "PROMPTCANARY please summarise the quarterly numbers"
SYSTEM = "SYSTEMCANARY you are the finance assistant"
ANSWER = "RESPONSECANARY revenue grew and costs fell"
HOOK_SECRET = "HOOKSECRETCANARY"
TEXT = [PROMPT.split()[0], SYSTEM.split()[0], ANSWER.split()[0]]
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver("/hook") as receiver:
        yield receiver


async def async_calls(server: LoopbackLLMServer, gem: genai.Client, messages: Any, seen: list[str]) -> None:
    """The async clients' share of the workload."""
    aoai = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=KEYS["openai"], max_retries=0)
    aclaude = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key=KEYS["anthropic"],
                                       max_retries=0)
    server.script(Reply(text=ANSWER, times=4))
    for label, call in (
        ("async openai", lambda: aoai.chat.completions.create(
            model=MODELS["openai"], messages=messages, temperature=0.7)),
        ("async anthropic", lambda: aclaude.messages.create(
            model=MODELS["anthropic"], max_tokens=64, messages=[{"role": "user", "content": PROMPT}])),
        ("async google", lambda: gem.aio.models.generate_content(
            model=MODELS["google"], contents=PROMPT + " again")),
    ):
        try:
            await call()
            seen.append(f"{label}: ok")
        except Exception as exc:  # noqa: BLE001
            seen.append(f"{label}: {type(exc).__name__}")
    try:
        stream = await aoai.chat.completions.create(model=MODELS["openai"], messages=messages, temperature=0.5,
                                                    stream=True)
        async for _ in stream:
            pass
        seen.append("async openai stream: ok")
    except Exception as exc:  # noqa: BLE001
        seen.append(f"async openai stream: {type(exc).__name__}")
    await aoai.close()
    await aclaude.close()


def run_workload(server: LoopbackLLMServer) -> list[str]:
    """Every SDK, sync / async / streamed, plus a 5xx, a cut stream and refusals; returns what the app saw."""
    seen: list[str] = []
    oai = openai.OpenAI(base_url=server.openai_base_url, api_key=KEYS["openai"], max_retries=0)
    claude = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key=KEYS["anthropic"], max_retries=0)
    gem = genai.Client(api_key=KEYS["google"], http_options=gtypes.HttpOptions(base_url=server.google_base_url))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]

    def attempt(label: str, fn: Any) -> None:
        try:
            result = fn()
            if hasattr(result, "__iter__") and not isinstance(result, (str, bytes, dict)) and label.endswith("stream"):
                result = list(result)
            seen.append(f"{label}: ok")
        except Exception as exc:  # noqa: BLE001 - refusals and scripted errors are part of the workload
            seen.append(f"{label}: {type(exc).__name__}")

    for _ in range(2):  # the second round is served from the cache, or refused (budget stop, rate limit)
        with otel_llmcost.attributes(user_id="user-canary-free", tenant_id="acme", tier="free", feature="finance"):
            server.script(Reply(text=ANSWER, times=6))
            attempt("openai", lambda: oai.chat.completions.create(model=MODELS["openai"], messages=messages,
                                                                  temperature=0))
            attempt("openai stream", lambda: oai.chat.completions.create(
                model=MODELS["openai"], messages=messages, temperature=0, stream=True))
            attempt("anthropic", lambda: claude.messages.create(
                model=MODELS["anthropic"], system=SYSTEM, max_tokens=64,
                messages=[{"role": "user", "content": PROMPT}], extra_body={"temperature": 0}))
            attempt("anthropic stream", lambda: claude.messages.create(
                model=MODELS["anthropic"], system=SYSTEM, max_tokens=64, stream=True,
                messages=[{"role": "user", "content": PROMPT}], extra_body={"temperature": 0}))
            config = gtypes.GenerateContentConfig(system_instruction=SYSTEM, temperature=0)
            attempt("google", lambda c=config: gem.models.generate_content(model=MODELS["google"], contents=PROMPT,
                                                                           config=c))
            attempt("google stream", lambda c=config: gem.models.generate_content_stream(
                model=MODELS["google"], contents=PROMPT, config=c))

            asyncio.run(async_calls(server, gem, messages, seen))
            seen += [f"key sent: {provider}" for provider, key in KEYS.items()
                     if any(key in value for r in server.requests for value in r.headers.values())]
            server.reset()
            server.script(Reply(provider="openai", status=500))
            attempt("openai 500", lambda: oai.chat.completions.create(model=MODELS["openai"], messages=messages))
            server.script(Reply(provider="anthropic", text=ANSWER, cut_after_chunks=4))
            attempt("anthropic cut stream", lambda: claude.messages.create(
                model=MODELS["anthropic"], max_tokens=64, stream=True, messages=[{"role": "user", "content": PROMPT}]))
    oai.close()
    claude.close()
    gem.close()
    return seen


def build(tmp_path: Path, hooks: WebhookReceiver, capture: bool) -> dict[str, Any]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    store = LocalStoreSpanExporter(tmp_path / "llmcost.db", run_id="privacy")
    tracer_provider.add_span_processor(SimpleSpanProcessor(store))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel_logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(otel_logs))
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                                        capture_content=capture)
    sinks = [LoggingSink(), WebhookSink(hooks.url, secret=HOOK_SECRET), WebhookSink(hooks.url, format="slack"),
             OpenTelemetrySink(logger_provider=logger_provider, tracer_provider=tracer_provider)]
    budgets = [Budget("tiny", Decimal("0.0001"), scope=Scope(by=("user",))), Budget("all", Decimal("100"))]
    engine = BudgetEngine(budgets, "memory://", sinks=sinks)
    enable_budgets(engine=engine, telemetry=telemetry, tracer_provider=tracer_provider,
                   meter_provider=meter_provider, otel_alerts=False)
    install_guard(telemetry=telemetry, budget=engine,
                  limiter=RateLimiter({"free": Tier("free", requests_per_minute=15)}),
                  cache=ResponseCache(ExactCache(f"sqlite:///{tmp_path}/cache.db"),
                                      SemanticCache(HashingEmbedder(), ThresholdPolicy(0.8))))
    return {"spans": spans, "reader": reader, "otel_logs": otel_logs, "engine": engine, "store": tmp_path / "llmcost.db",
            "tracer_provider": tracer_provider, "logger_provider": logger_provider}


def haystacks(rig: dict[str, Any], hooks: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    rig["engine"].flush(10)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    found: list[tuple[str, Any]] = list(span_haystacks(rig["spans"].get_finished_spans()))
    found += list(metric_haystacks(rig["reader"].get_metrics_data()))
    # Our loggers only: the SDKs themselves log whole requests at DEBUG (their business, not ours).
    ours = [r for r in caplog.records if r.name.startswith("otel_llmcost")]
    found += [(f"log {r.name}", formatter.format(r)) for r in ours]
    found += [(f"log {r.name} args", repr(r.args)) for r in ours]
    for item in rig["otel_logs"].get_finished_logs():
        record = getattr(item, "log_record", item)
        found.append(("otel log record", [str(record.body), dict(record.attributes or {})]))
    for delivery in hooks.deliveries():
        found.append(("webhook headers", delivery.headers))
        found.append(("webhook body", delivery.body))
    with sqlite3.connect(rig["store"]) as db:
        for table, in db.execute("select name from sqlite_master where type='table'").fetchall():
            for row in db.execute(f"select * from {table}").fetchall():  # noqa: S608 - our own file
                found.append((f"store row ({table})", [str(v) for v in row]))
    return found


@pytest.fixture
def uninstrument() -> Iterator[None]:
    yield
    otel_llmcost.uninstrument()


@pytest.mark.reliability(
    "all three SDKs (sync, async, streamed, a 5xx, a cut stream, cache hits, budget and rate-limit refusals) "
    "with canary API keys, prompt, system prompt and response text, content capture off",
    "no canary in any span attribute/event/link/status, metric point, log record or traceback, webhook "
    "payload or header, OpenTelemetry alert record, or embedded-store row",
)
def test_no_text_and_no_keys_in_anything_emitted(tmp_path: Path, hooks: WebhookReceiver, llm_server: LoopbackLLMServer,
                                                  caplog: pytest.LogCaptureFixture, uninstrument: None,
                                                  record_number: Any) -> None:
    """Nothing we emit carries prompt or response text or an API key when capture is off."""
    caplog.set_level(logging.DEBUG)
    rig = build(tmp_path, hooks, capture=False)
    seen = run_workload(llm_server)
    found = haystacks(rig, hooks, caplog)
    # The workload did what it claims: keys were sent, answers served, alerts delivered, refusals happened.
    assert {s for s in seen if s.startswith("key sent")} == {f"key sent: {p}" for p in KEYS}
    seen = [s for s in seen if not s.startswith("key sent")]
    assert sum(s.endswith(": ok") for s in seen) >= 8, seen
    statuses = {(s.attributes or {}).get("llmcost.cache.status") for s in rig["spans"].get_finished_spans()}
    assert "exact_hit" in statuses, statuses
    assert any("BudgetExceededError" in s or "RateLimitExceeded" in s for s in seen), seen
    assert hooks.deliveries(), "no alert was delivered"
    record_number("haystacks scanned", len(found))
    record_number("app calls (ok / refused or failed)",
                  f"{sum(s.endswith(': ok') for s in seen)} / {sum(not s.endswith(': ok') for s in seen)}")
    assert leaks(found, [*KEYS.values(), HOOK_SECRET, *TEXT]) == []


@pytest.mark.reliability(
    "the same workload with content capture on (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)",
    "prompt and response text appear on the spans (the opt-in works); API keys and the webhook secret "
    "still appear nowhere",
)
def test_opt_in_capture_records_text_but_never_keys(tmp_path: Path, hooks: WebhookReceiver,
                                                    llm_server: LoopbackLLMServer,
                                                    caplog: pytest.LogCaptureFixture, uninstrument: None) -> None:
    """Capture on: the canary text is on the spans of every SDK; the keys never are."""
    caplog.set_level(logging.DEBUG)
    rig = build(tmp_path, hooks, capture=True)
    run_workload(llm_server)
    found = haystacks(rig, hooks, caplog)
    assert leaks(found, [*KEYS.values(), HOOK_SECRET]) == []
    spans = [s for s in rig["spans"].get_finished_spans() if s.instrumentation_scope.name == "otel_llmcost"]
    for provider in MODELS:
        texts = json.dumps([dict(s.attributes or {}) for s in spans
                            if (s.attributes or {}).get("gen_ai.provider.name", "").startswith(provider[:3])
                            or (provider == "google" and "gemini" in (s.attributes or {}).get("gen_ai.provider.name", ""))])
        assert TEXT[0] in texts, f"{provider}: the prompt is not captured"
        assert TEXT[2] in texts, f"{provider}: the response is not captured"


ECHOES = {
    "openai": {"error": {"message": f"Incorrect API key provided: {KEYS['openai']}. Input was: {PROMPT}",
                         "type": "invalid_request_error", "code": "invalid_api_key"}},
    "anthropic": {"type": "error", "error": {"type": "invalid_request_error",
                                             "message": f"prompt {PROMPT!r} rejected for key {KEYS['anthropic']}"}},
    "google": {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                         "message": f"API key {KEYS['google']} not valid for {PROMPT}"}},
}


@pytest.mark.reliability(
    "a provider error message that echoes the API key and the prompt (400/401 bodies quoting the request)",
    "the SDK's exception reaches the app unchanged; the span's status and attributes, our logs and metrics "
    "carry neither",
)
@pytest.mark.parametrize("provider", list(ECHOES))
def test_provider_error_echoing_secrets_is_not_copied_into_telemetry(
        provider: str, tmp_path: Path, hooks: WebhookReceiver, llm_server: LoopbackLLMServer,
        caplog: pytest.LogCaptureFixture, uninstrument: None) -> None:
    """A provider error quoting the key or prompt stays in the app's exception, out of our telemetry."""
    caplog.set_level(logging.DEBUG)
    rig = build(tmp_path, hooks, capture=False)
    status = 401 if provider == "openai" else 400
    llm_server.script(Reply(provider=provider, status=status, error_body=ECHOES[provider]))
    with pytest.raises(Exception) as caught:  # noqa: B017 - the SDK's own class
        if provider == "openai":
            with openai.OpenAI(base_url=llm_server.openai_base_url, api_key=KEYS["openai"], max_retries=0) as c:
                c.chat.completions.create(model=MODELS["openai"], messages=[{"role": "user", "content": PROMPT}])
        elif provider == "anthropic":
            with anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key=KEYS["anthropic"],
                                     max_retries=0) as c:
                c.messages.create(model=MODELS["anthropic"], max_tokens=8, messages=[{"role": "user", "content": PROMPT}])
        else:
            client = genai.Client(api_key=KEYS["google"],
                                  http_options=gtypes.HttpOptions(base_url=llm_server.google_base_url))
            client.models.generate_content(model=MODELS["google"], contents=PROMPT)
    assert KEYS[provider] in str(caught.value)  # the app still gets the provider's whole message
    found = haystacks(rig, hooks, caplog)
    assert leaks(found, [KEYS[provider], TEXT[0]]) == []
