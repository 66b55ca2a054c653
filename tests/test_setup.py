"""One config file turns on instrumentation, budgets and the whole cost guard."""

from __future__ import annotations

import time

import openai
import pytest

import otel_llmcost
from otel_llmcost.budget import BudgetExceededError
from otel_llmcost.budget.errors import ConfigError
from otel_llmcost.ratelimit.errors import RateLimitExceeded
from otel_llmcost.setup import configure
from tests.conftest import llmcost_spans

CONFIG = """
budgets:
  - {name: monthly, amount: 100}
routing:
  substitutes: {gpt-4o: gpt-4o-mini}
guard:
  rate_limits:
    tiers: {free: {requests_per_minute: 3}}
  budgets: enforce
  cache:
    exact: {storage: "sqlite:///CACHE", ttl: 600}
    semantic: {embedder: hashing, threshold: 0.9}
  routing: true
"""


def test_config_file_turns_everything_on(tmp_path, llm_server, tracer_provider, meter_provider, span_exporter):
    """A config file with guard: rate limits, budgets (enforced), exact + semantic cache and routing."""
    path = tmp_path / "llmcost.yaml"
    path.write_text(CONFIG.replace("CACHE", str(tmp_path / "cache.db")))
    setup = configure(path, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
        with otel_llmcost.attributes(user_id="u", tier="free"):
            first = client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                                   messages=[{"role": "user", "content": "What are your opening hours?"}])
            client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                           messages=[{"role": "user", "content": "What are your opening hours?"}])
            client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                           messages=[{"role": "user", "content": "Do you ship to Norway?"}])
            with pytest.raises(RateLimitExceeded):
                client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                               messages=[{"role": "user", "content": "Another one"}])
        setup.budget_processor.force_flush()
        spans = llmcost_spans(span_exporter)
        assert first.usage.prompt_tokens > 0
        assert [s.attributes.get("llmcost.cache.status") for s in spans[:3]] == ["miss", "exact_hit", "miss"]
        assert all(s.attributes["llmcost.budget.level"] == "ok" for s in spans[:3])
        assert "llmcost.route.complexity" in spans[0].attributes
        state = setup.budget_processor.engine.state()[0]
        paid = sum(s.attributes["gen_ai.usage.cost"] for s in spans[:3])
        assert float(state.spend) == pytest.approx(paid)
    finally:
        setup.shutdown()


@pytest.mark.parametrize(("text", "field"), [
    ("guard: {rate_limit: {}}\n", "guard.rate_limit"),
    ("guard: {cache: {exact: {storage: memory://, size: 3}}}\n", "guard.cache.exact.size"),
    ("guard: {budgets: always}\n", "guard.budgets"),
    ("guard: {cache: {semantic: {embedder: word2vec}}}\n", "guard.cache.semantic.embedder"),
])
def test_config_mistakes_name_the_field(tmp_path, text, field):
    """A mistake in the guard section is a ConfigError naming the field, and nothing stays instrumented."""
    path = tmp_path / "llmcost.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        configure(path)
    from otel_llmcost.telemetry import current_telemetry

    assert current_telemetry() is None


def test_config_is_required(monkeypatch):
    """Without a file or OTEL_LLMCOST_CONFIG, configure says what to do."""
    monkeypatch.delenv("OTEL_LLMCOST_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="OTEL_LLMCOST_CONFIG"):
        configure()


def test_config_file_takes_budget_levels_from_the_processor(tmp_path, llm_server, monkeypatch):
    """`guard.hints` points the guard at the processor service: its levels throttle and stop this app."""
    from tests.test_hints import TOKEN, Processor

    processor = Processor(tmp_path)
    processor.spend({"llmcost.user.id": "gus"}, 0.9)   # per-user budget of $1: throttle
    processor.spend({"llmcost.user.id": "hal"}, 0.99)  # stop
    monkeypatch.setenv("OTEL_LLMCOST_PROCESSOR_TOKEN", TOKEN)
    path = tmp_path / "llmcost.yaml"
    path.write_text(f"guard:\n  hints: {{url: '{processor.url}', interval: 0.2, default_level: ok}}\n")
    setup = configure(path)
    try:
        assert setup.hints_client is not None and setup.budget_processor is None
        deadline = time.monotonic() + 10
        while setup.hints_client.polls == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sdk = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        with otel_llmcost.attributes(user_id="gus"):
            sdk.chat.completions.create(model="gpt-5.4", messages=messages)
        assert [r.json["model"] for r in llm_server.requests] == ["gpt-5.4-mini"]
        with otel_llmcost.attributes(user_id="hal"), pytest.raises(BudgetExceededError):
            sdk.chat.completions.create(model="gpt-5.4", messages=messages)
        assert len(llm_server.requests) == 1
    finally:
        setup.shutdown()
        processor.stop()


@pytest.mark.parametrize(("hints", "field"), [
    ("{url: 'processor:4319'}", "guard.hints.url"),
    ("{url: 'http://p:4319', interval: 0}", "guard.hints.interval"),
    ("{url: 'http://p:4319', default_level: panic}", "guard.hints.default_level"),
    ("{url: 'http://p:4319', every: 3}", "guard.hints.every"),
])
def test_hints_mistakes_name_the_field(tmp_path, hints, field):
    path = tmp_path / "llmcost.yaml"
    path.write_text(f"guard:\n  hints: {hints}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        configure(path)


def test_hints_and_a_local_enforcing_ledger_exclude_each_other(tmp_path):
    path = tmp_path / "llmcost.yaml"
    path.write_text("budgets:\n  - {name: m, amount: 1}\nguard:\n  budgets: enforce\n  hints: {url: 'http://p:4319'}\n")
    with pytest.raises(ConfigError, match="keep one"):
        configure(path)
