"""Pricing: usage normalisation per provider, exact costs, overrides, batch, unknown models."""

from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest

from otel_llmcost.errors import PriceFileError, UsageError
from otel_llmcost.pricing import PriceCatalog, UnknownPriceError, Usage, load_catalog
from otel_llmcost.pricing import usage as normalise
from otel_llmcost.pricing.overrides import parse_price_text

M = Decimal(1_000_000)

# (provider, model, usage, expected USD) computed by hand from the published per-million rates.
CASES = [
    ("openai", "gpt-4o", Usage(1000, 500), (1000 * Decimal("2.5") + 500 * 10) / M),
    ("openai", "gpt-4o", Usage(2000, 100, cache_read_tokens=1024),
     (976 * Decimal("2.5") + 1024 * Decimal("1.25") + 100 * 10) / M),
    ("openai", "gpt-4o-mini", Usage(1200, 300), (1200 * Decimal("0.15") + 300 * Decimal("0.6")) / M),
    ("anthropic", "claude-sonnet-4-5", Usage(3000, 200, cache_read_tokens=2000),
     (1000 * 3 + 2000 * Decimal("0.3") + 200 * 15) / M),
    ("anthropic", "claude-sonnet-4-5", Usage(3000, 200, cache_write_tokens=2000),
     (1000 * 3 + 2000 * Decimal("3.75") + 200 * 15) / M),
    ("anthropic", "claude-sonnet-4-5", Usage(3000, 200, cache_write_tokens=2000, cache_write_1h_tokens=2000),
     (1000 * 3 + 2000 * 6 + 200 * 15) / M),
    ("anthropic", "claude-sonnet-4-5", Usage(250_000, 1000),
     (250_000 * 6 + 1000 * Decimal("22.5")) / M),  # above the 200k tier: every token at the tier rate
    ("gcp.gemini", "gemini-2.5-pro", Usage(300_000, 500), (300_000 * Decimal("2.5") + 500 * 15) / M),
    ("gcp.gemini", "models/gemini-2.5-pro", Usage(1000, 500, reasoning_tokens=200),
     (1000 * Decimal("1.25") + 500 * 10) / M),
]


@pytest.mark.parametrize(("provider", "model", "usage", "expected"), CASES)
def test_exact_costs(provider: str, model: str, usage: Usage, expected: Decimal) -> None:
    """Each (provider, model, usage) case costs exactly what the published rates give."""
    assert PriceCatalog().cost(usage, model, provider).total == expected


@pytest.mark.parametrize(("provider", "model", "usage", "expected"), CASES)
def test_agrees_with_genai_prices_calculator(provider: str, model: str, usage: Usage, expected: Decimal) -> None:
    """Our fast arithmetic gives the same total as genai-prices' own (slow) calculator."""
    from otel_llmcost.pricing import provider_id

    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                           cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
                           cache_write_1h_tokens=usage.cache_write_1h_tokens),
        model.removeprefix("models/"), provider_id=provider_id(provider),
    )
    assert PriceCatalog().cost(usage, model, provider).total == theirs.total_price


def test_batch_discount_halves_openai_and_anthropic() -> None:
    """Batch calls are priced at the providers' 50% batch rate, and say so."""
    catalog = PriceCatalog()
    for provider, model in (("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")):
        standard = catalog.cost(Usage(10_000, 2_000), model, provider)
        batch = catalog.cost(Usage(10_000, 2_000), model, provider, batch=True)
        assert batch.total == standard.total / 2
        assert batch.batch_multiplier == Decimal("0.5")


def test_unknown_model_raises_lookup_error() -> None:
    """An unknown model is an explicit UnknownPriceError (a LookupError), never a zero cost."""
    with pytest.raises(UnknownPriceError, match="no price for model 'my-own-model'") as info:
        PriceCatalog().cost(Usage(10, 10), "my-own-model", "openai")
    assert isinstance(info.value, LookupError)


def test_openai_usage_includes_cached_prompt_tokens() -> None:
    """OpenAI prompt_tokens already include cached_tokens; reasoning is part of completion_tokens."""
    usage = normalise.from_openai({"prompt_tokens": 1500, "completion_tokens": 300,
                                   "prompt_tokens_details": {"cached_tokens": 1024},
                                   "completion_tokens_details": {"reasoning_tokens": 120}})
    assert usage == Usage(1500, 300, cache_read_tokens=1024, reasoning_tokens=120)


def test_anthropic_usage_adds_cache_tokens_to_input() -> None:
    """Anthropic input_tokens exclude cache reads and writes; 1h writes come from cache_creation."""
    usage = normalise.from_anthropic({"input_tokens": 50, "output_tokens": 20, "cache_read_input_tokens": 1000,
                                      "cache_creation_input_tokens": 300,
                                      "cache_creation": {"ephemeral_5m_input_tokens": 100,
                                                         "ephemeral_1h_input_tokens": 200}})
    assert usage == Usage(1350, 20, cache_read_tokens=1000, cache_write_tokens=300, cache_write_1h_tokens=200)


def test_google_thoughts_are_billed_as_output() -> None:
    """Google thoughts_token_count is output on top of candidates; cached content is part of the prompt."""
    usage = normalise.from_google({"prompt_token_count": 5000, "candidates_token_count": 100,
                                   "thoughts_token_count": 400, "cached_content_token_count": 4096})
    assert usage == Usage(5000, 500, cache_read_tokens=4096, reasoning_tokens=400)


def test_genai_span_attributes_read_both_cache_write_names() -> None:
    """Usage from other tools' spans reads cache_write and the older cache_creation name."""
    new = normalise.from_genai_attributes({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 5,
                                           "gen_ai.usage.cache_write.input_tokens": 40})
    old = normalise.from_genai_attributes({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 5,
                                           "gen_ai.usage.cache_creation.input_tokens": 40})
    assert new == old == Usage(100, 5, cache_write_tokens=40)
    assert normalise.from_genai_attributes({"gen_ai.request.model": "x"}) is None


@pytest.mark.parametrize("payload", [
    {"prompt_tokens": -5, "completion_tokens": 1},
    {"prompt_tokens": "many", "completion_tokens": 1},
    {"prompt_tokens": float("nan"), "completion_tokens": 1},
    {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}},
    {"prompt_tokens": True, "completion_tokens": 1},
])
def test_bad_usage_is_a_clear_error(payload: dict) -> None:
    """Negative, non-numeric, NaN or inconsistent token counts raise UsageError instead of pricing."""
    with pytest.raises(UsageError):
        normalise.from_openai(payload)


PRICE_FILE = """\
aliases:
  prod-gpt4o: {model: gpt-4o, provider: openai}
  my-haiku: claude-haiku-4-5
models:
  - model: ft:gpt-4o-mini:acme::abc123
    provider: openai
    input_mtok: 0.30
    output_mtok: 1.20
    cache_read_mtok: 0.15
  - match: {prefix: "llama-3.1-70b"}
    input_mtok: 0
    output_mtok: 0
batch:
  openai: 0.4
"""


def test_price_file_overrides_aliases_and_batch(tmp_path) -> None:
    """A price file prices fine-tunes, maps aliases, prices self-hosted at a known zero, sets batch rates."""
    path = tmp_path / "prices.yaml"
    path.write_text(PRICE_FILE)
    catalog = load_catalog(str(path))
    fine_tune = catalog.cost(Usage(1000, 1000, cache_read_tokens=500), "ft:gpt-4o-mini:acme::abc123", "openai")
    assert fine_tune.total == (500 * Decimal("0.30") + 500 * Decimal("0.15") + 1000 * Decimal("1.20")) / M
    assert "prices.yaml line 5: models[0]" in fine_tune.source
    assert catalog.cost(Usage(1000, 0), "prod-gpt4o", "azure.ai.openai").total == 1000 * Decimal("2.5") / M
    assert catalog.cost(Usage(1000, 0), "my-haiku", "anthropic").model.startswith("claude-haiku-4")
    assert catalog.cost(Usage(1000, 1000), "llama-3.1-70b-instruct", "vllm").total == 0
    assert catalog.cost(Usage(1000, 0), "gpt-4o", "openai", batch=True).total == 1000 * Decimal("2.5") * Decimal("0.4") / M


def test_price_file_from_environment(tmp_path, monkeypatch) -> None:
    """OTEL_LLMCOST_PRICES_FILE names the price file when no argument is given."""
    path = tmp_path / "prices.json"
    path.write_text('{"models": [{"model": "house-model", "input_mtok": 1, "output_mtok": 2}]}')
    monkeypatch.setenv("OTEL_LLMCOST_PRICES_FILE", str(path))
    assert load_catalog().cost(Usage(1_000_000, 0), "house-model").total == 1


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  - model: x\n    input_mtok: 1\n", r"line 2: models\[0\]: output_mtok is missing"),
    ("models:\n  - model: x\n    input_mtok: -1\n    output_mtok: 1\n", r"line 3: models\[0\].input_mtok: -1 must be"),
    ("models:\n  - model: x\n    input_mtok: 1\n    ouput_mtok: 1\n", r"line 4: models\[0\].ouput_mtok is not a known field"),
    ("models:\n  - model: x\n    input_mtok: lots\n    output_mtok: 1\n", r"line 3: .*'lots' is not a number"),
    ("modles: []\n", r"line 1: unknown section 'modles'"),
    ("models: [\n", r"not valid YAML"),
    ("batch:\n  openai: 2\n", r"line 2: batch.openai=2 is a surcharge"),
    ("models:\n  - match: {regex: '('}\n    input_mtok: 1\n    output_mtok: 1\n", r"match.regex"),
])
def test_malformed_price_file_names_line_and_field(text: str, message: str) -> None:
    """A malformed price file is a PriceFileError naming the line and the field; nothing is priced at 0."""
    with pytest.raises(PriceFileError, match=message):
        parse_price_text(text, "prices.yaml")


def test_missing_price_file_is_a_clear_error(tmp_path) -> None:
    """A price file that does not exist is an error at startup, not a silent catalog without overrides."""
    with pytest.raises(PriceFileError, match="cannot be read"):
        load_catalog(str(tmp_path / "nope.yaml"))
