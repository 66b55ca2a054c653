"""One config file turns on instrumentation, budgets and the whole cost guard."""

from __future__ import annotations

import openai
import pytest

import otel_llmcost
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
