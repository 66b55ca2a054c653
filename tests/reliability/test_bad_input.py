"""Bad input: property-based tests (hypothesis) and a time-boxed random-bytes run over the config and
price-file loaders and the usage normalisers, and absurd token counts and costs through the cost path.

The contract everywhere: a result that is valid, or the part's own clear error (a `ValueError` subclass
naming what is wrong) — never another exception, never a hang, never a price of zero for what could
not be priced, and never a budget poisoned by a NaN or a negative amount.
"""

from __future__ import annotations

import math
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_llmcost.budget import Budget, BudgetEngine, MemoryLedger
from otel_llmcost.budget.config import load_budget_config
from otel_llmcost.budget.errors import ConfigError
from otel_llmcost.budget.ledger import BudgetKey
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger
from otel_llmcost.budget.processor import enable_budgets
from otel_llmcost.errors import PriceFileError, UsageError
from otel_llmcost.pricing import PriceCatalog, UnknownPriceError, Usage
from otel_llmcost.pricing import usage as usage_mod
from otel_llmcost.pricing.overrides import parse_price_text
from otel_llmcost.ratelimit import RateLimiter
from otel_llmcost.ratelimit.tiers import load_tiers
from otel_llmcost.routing.config import load_routing_config
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply
from tests.conftest import llmcost_spans, metric_points

from .conftest import soak_enabled

EXAMPLES = 2000 if soak_enabled() else 80
FUZZ_SECONDS = 60.0 if soak_enabled() else 3.0
# Derandomized by default so CI sees the same examples every run; the soak variant explores anew.
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None, derandomize=not soak_enabled())

# JSON-ish values, with the numbers providers get wrong: negatives, floats, NaN, huge, bools, strings.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["12", "-1", "1e309", "NaN", "0x10", ""]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=12)
USAGE_FIELDS = [
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "prompt_token_count", "candidates_token_count", "thoughts_token_count",
    "cached_content_token_count", "tool_use_prompt_token_count", "prompt_tokens_details",
    "completion_tokens_details", "input_tokens_details", "output_tokens_details", "cache_creation",
    "cached_tokens", "reasoning_tokens", "ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
]
usage_payloads = st.dictionaries(
    st.sampled_from(USAGE_FIELDS),
    st.one_of(scalars, st.dictionaries(st.sampled_from(USAGE_FIELDS), scalars, max_size=4)),
    max_size=8,
)
NORMALISERS = [usage_mod.from_openai, usage_mod.from_openai_responses, usage_mod.from_anthropic,
               usage_mod.from_google, usage_mod.from_genai_attributes]


def valid(usage: Usage | None) -> None:
    if usage is None:
        return
    for name in Usage.__slots__:
        value = getattr(usage, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0
    assert usage.cache_read_tokens + usage.cache_write_tokens <= usage.input_tokens
    assert usage.reasoning_tokens <= usage.output_tokens


@pytest.mark.reliability(
    "usage payloads of any shape (negative, float, NaN, huge, bool, string, nested junk counts)",
    "each normaliser returns a consistent non-negative Usage or raises UsageError; pricing it never "
    "yields a negative or non-finite cost",
)
@PROPERTY
@given(payload=usage_payloads)
def test_usage_normalisers_accept_or_refuse_clearly(payload: dict[str, Any]) -> None:
    """Any usage payload: a valid `Usage` or `UsageError`, and a valid usage prices to a finite amount ≥ 0."""
    catalog = PriceCatalog()
    for normalise in NORMALISERS:
        try:
            usage = normalise(payload)
        except UsageError as exc:
            assert str(exc)
            continue
        valid(usage)
        if usage is not None:
            cost = catalog.cost(usage, "gpt-4o-mini", "openai").total
            assert cost.is_finite() and cost >= 0


@pytest.mark.reliability(
    "token counts at the edges: 0, 1, 2**31, 2**53+1, 10**15",
    "priced exactly in Decimal (no float rounding, no overflow), linear in the count",
)
@PROPERTY
@given(tokens=st.sampled_from([0, 1, 2**31, 2**53 + 1, 10**15]) | st.integers(0, 10**15))
def test_absurd_token_counts_price_exactly(tokens: int) -> None:
    """Huge counts are priced exactly (Decimal), so a bug upstream shows as a huge cost, not a wrapped one."""
    catalog = PriceCatalog()
    prices = catalog.prices("gpt-4o-mini", "openai")
    cost = catalog.cost(Usage(input_tokens=tokens, output_tokens=tokens), "gpt-4o-mini", "openai").total
    assert cost == tokens * (prices.input_mtok + prices.output_mtok) / Decimal(1_000_000)


@pytest.mark.reliability(
    "negative, bool, float, NaN and inconsistent counts given to Usage directly",
    "UsageError naming the field; never a Usage that could price below zero",
)
@PROPERTY
@given(values=st.lists(scalars, min_size=6, max_size=6))
def test_usage_constructor_refuses_what_cannot_be_priced(values: list[Any]) -> None:
    """`Usage(...)` with arbitrary values: valid and consistent, or `UsageError`."""
    try:
        usage = Usage(*values)
    except UsageError as exc:
        assert "usage" in str(exc)
        return
    valid(usage)


# -- config and price-file loaders ------------------------------------------------------------------------
def _yaml_of(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, allow_unicode=True)


price_docs = st.fixed_dictionaries({}, optional={
    "models": st.lists(st.dictionaries(
        st.sampled_from(["model", "match", "provider", "input_mtok", "output_mtok", "cache_read_mtok", "oops"]),
        json_values, max_size=5), max_size=3) | json_values,
    "aliases": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    "batch": st.dictionaries(st.text(max_size=8), scalars, max_size=3) | json_values,
})


@pytest.mark.reliability(
    "price files of any structure (hypothesis: wrong types, NaN, negative, unknown keys, bad regexes)",
    "PriceOverrides or PriceFileError naming the source; no other exception",
)
@PROPERTY
@given(doc=price_docs)
def test_price_file_loader_accepts_or_refuses_clearly(doc: dict[str, Any]) -> None:
    """A price document of any shape either loads or raises `PriceFileError` that names the file."""
    try:
        parse_price_text(_yaml_of(doc), "prices.yaml")
    except PriceFileError as exc:
        assert str(exc).startswith("prices.yaml")


budget_docs = st.fixed_dictionaries({}, optional={
    "timezone": scalars, "ledger": scalars, "reservation_ttl": scalars,
    "thresholds": st.dictionaries(st.sampled_from(["warn", "throttle", "stop", "x"]), scalars, max_size=3),
    "forecast": json_values,
    "budgets": st.lists(st.dictionaries(
        st.sampled_from(["name", "amount", "window", "scope", "thresholds", "allowed_models", "timezone", "bad"]),
        json_values, max_size=6), max_size=3) | json_values,
    "routing": json_values,
    "alerts": json_values,
    "budget": json_values,
})


@pytest.mark.reliability(
    "budget and routing config files of any structure (hypothesis)",
    "a config or ConfigError naming the file (and the line and field where there is one); no other exception",
)
@PROPERTY
@given(doc=budget_docs)
def test_budget_and_routing_config_loaders_accept_or_refuse_clearly(doc: dict[str, Any], tmp_path_factory: Any) -> None:
    """A config document of any shape loads or raises `ConfigError` with the file's name in it."""
    path = tmp_path_factory.mktemp("cfg") / "llmcost.yaml"
    path.write_text(_yaml_of(doc), encoding="utf-8")
    for load in (load_budget_config, load_routing_config):
        try:
            load(path)
        except ConfigError as exc:
            assert str(path) in str(exc)


HUGE_DURATIONS = {
    "reservation_ttl of 86400000000000 s": "reservation_ttl: 86400000000000.0\nbudgets: [{name: a, amount: 1}]\n",
    "reservation_ttl of 99999999999999d": "reservation_ttl: 99999999999999d\nbudgets: [{name: a, amount: 1}]\n",
    "rolling window of 1000000d": "budgets: [{name: a, amount: 1, window: {rolling: 1000000d}}]\n",
    "rolling window of 1e15 s": "budgets: [{name: a, amount: 1, window: {rolling: 1000000000000000}}]\n",
}


@pytest.mark.reliability(
    "durations beyond what dates can hold (found by the soak run): a TTL of 10**14 s, a rolling window of "
    "a million days",
    "ConfigError naming the field at load time, not an OverflowError, nor a budget whose every cost event "
    "fails later",
)
@pytest.mark.parametrize("case", list(HUGE_DURATIONS))
def test_huge_durations_are_refused_at_load(case: str, tmp_path: Path) -> None:
    """Durations too long for datetime arithmetic are config errors, caught when the file is read."""
    path = tmp_path / "llmcost.yaml"
    path.write_text(HUGE_DURATIONS[case], encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_budget_config(path)
    assert "reservation_ttl" in str(caught.value) or "rolling" in str(caught.value)


@pytest.mark.reliability(
    "rate-limit tier mappings of any structure (hypothesis)",
    "tiers or ValueError naming the tier; no other exception",
)
@PROPERTY
@given(doc=st.dictionaries(st.text(max_size=6), json_values, max_size=3))
def test_tier_loader_accepts_or_refuses_clearly(doc: dict[str, Any]) -> None:
    """`load_tiers` on any mapping: tiers whose limits are positive and finite, or a `ValueError`."""
    try:
        tiers = load_tiers(doc)
    except ValueError as exc:
        assert str(exc)
        return
    for tier in tiers.values():
        assert all(math.isfinite(v) and v > 0 for v in tier.limits().values())


# YAML that attacks the parser itself rather than our schema.
HOSTILE_YAML = {
    "recursive alias": "models: &a [*a]\n",
    "recursive mapping": "&a {models: *a}\n",
    "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
                      + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
                                for i in range(8)) + "models: *i\n",
    "python tag": "models: !!python/object/apply:os.system ['true']\n",
    "deep nesting": "models: " + "[" * 1100 + "]" * 1100 + "\n",
    "binary junk": "\x00\x01\x02models:\xff\n",
    "tab indentation": "models:\n\t- model: x\n",
    "duplicate keys": "models: []\nmodels: []\n",
}


@pytest.mark.reliability(
    "hostile YAML: recursive aliases, billion laughs, python tags, 1100-deep nesting, binary junk",
    "price file, budget and routing config loaders refuse with their own error within seconds",
)
@pytest.mark.parametrize("name", list(HOSTILE_YAML))
def test_hostile_yaml_is_refused_quickly(name: str, tmp_path: Path, record_number: Any) -> None:
    """Parser attacks end in the loader's own error, quickly: no recursion crash, no exponential blow-up."""
    text = HOSTILE_YAML[name]
    path = tmp_path / "llmcost.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    started = time.monotonic()
    outcomes = []
    for label, load, error in (("prices", lambda: parse_price_text(text, str(path)), PriceFileError),
                               ("budget", lambda: load_budget_config(path), ConfigError),
                               ("routing", lambda: load_routing_config(path), ConfigError)):
        try:
            load()
            outcomes.append(f"{label}: loaded")
        except error:
            outcomes.append(f"{label}: refused")
    took = time.monotonic() - started
    record_number("outcomes", ", ".join(outcomes))
    assert took < 30, f"the loaders took {took:.1f} s on {name}"
    assert "prices: loaded" not in outcomes or name in ("duplicate keys", "tab indentation")


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        at = rng.randint(0, len(data)) if data else 0
        if op < 0.4 and data:
            data[min(at, len(data) - 1)] = rng.randint(0, 255)
        elif op < 0.7:
            data[at:at] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 6)))
        elif op < 0.85 and data:
            del data[at:at + rng.randint(1, 8)]
        else:
            data[at:at] = rng.choice([b"*a", b"&a ", b"{", b"[", b": ", b"\n- ", b"!!", b"nan", b"-1", b"1e999"])
    return bytes(data)


SEEDS = [
    b"aliases:\n  prod: {model: gpt-4o, provider: openai}\nmodels:\n  - model: ft:x\n    input_mtok: 0.3\n"
    b"    output_mtok: 1.2\n  - match: {regex: 'llama.*'}\n    input_mtok: 0\n    output_mtok: 0\nbatch: {openai: 0.5}\n",
    b"timezone: UTC\nledger: memory://\nbudgets:\n  - {name: m, amount: 5, window: day, scope: {by: user}}\n"
    b"routing:\n  substitutes: {gpt-4o: gpt-4o-mini}\n  tiers: {free: {allowed: [gpt-4o-mini]}}\n"
    b"alerts: {log: true}\n",
]


@pytest.mark.reliability(
    "random-byte mutations of valid price and config files (time-boxed fuzz run; soak: 60 s)",
    "only the loaders' own errors, never a crash or a hang",
)
def test_random_bytes_fuzz_of_the_loaders(tmp_path: Path, record_number: Any) -> None:
    """Mutated files for FUZZ_SECONDS: each either loads or raises the loader's error."""
    rng = random.Random(20261127)
    path = tmp_path / "llmcost.yaml"
    runs = refused = 0
    deadline = time.monotonic() + FUZZ_SECONDS
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(SEEDS))
        text = data.decode("utf-8", errors="replace")
        path.write_text(text, encoding="utf-8")
        for load, arg, error in ((parse_price_text, text, PriceFileError),
                                 (load_budget_config, path, ConfigError),
                                 (load_routing_config, path, ConfigError)):
            try:
                load(arg)  # type: ignore[operator]
            except error:
                refused += 1
            runs += 1
    record_number("loader runs", runs)
    record_number("refused with the loader's error", refused)
    assert runs > 30


# -- bad numbers through the cost path --------------------------------------------------------------------
BAD_AMOUNTS = [Decimal("NaN"), Decimal("-0.01"), Decimal("Infinity"), float("nan"), float("-inf"), "abc", None]


@pytest.mark.reliability(
    "NaN, negative, infinite and non-numeric costs sent to the budget engine and every ledger",
    "rejected (reserve: ValueError; record/settle: logged and counted), the ledger's spend unchanged",
)
@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=[repr(a) for a in BAD_AMOUNTS])
def test_bad_costs_never_poison_a_budget(amount: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A NaN or negative cost is refused by the engine and by each ledger; the budget keeps its spend."""
    for ledger in (MemoryLedger(), SQLiteLedger(tmp_path / f"l{random.random()}.db")):
        engine = BudgetEngine([Budget("b", Decimal("10"))], ledger, sinks=[])
        engine.record_cost(Decimal("1"), {})
        with caplog.at_level("CRITICAL"):
            engine.record_cost(amount, {})
            with pytest.raises(ValueError):
                engine.reserve(amount, {})
            ticket = engine.reserve(Decimal("0.5"), {})
            engine.settle(ticket, amount)
        assert engine.stats.errors == 2
        state = engine.state()[0]
        assert state.spend == Decimal("1") and state.reserved == 0
        window = engine.config.budgets[0].window.at(engine.clock())
        if isinstance(amount, Decimal):
            with pytest.raises(ValueError, match="finite, non-negative"):
                ledger.record(BudgetKey("b", "global"), window, amount)
        ledger.close()


@pytest.mark.reliability(
    "rate-limit estimates and actuals that are negative, NaN, infinite, bool or text",
    "ValueError naming the argument; the bucket is not touched",
)
@pytest.mark.parametrize("tokens", [-1, float("nan"), float("inf"), "10", None], ids=repr)
def test_bad_token_counts_never_touch_a_bucket(tokens: Any) -> None:
    """The limiter refuses impossible token counts on acquire and settle, leaving the bucket as it was."""
    limiter = RateLimiter({"t": {"tokens_per_day": 1000}}, clock=lambda: 0.0)
    permit = limiter.acquire("k", "t", 100)
    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire("k", "t", tokens)
    with pytest.raises(ValueError, match="tokens"):
        limiter.settle(permit, tokens)
    with pytest.raises(ValueError, match="tokens"):
        limiter.settle(permit, True)
    assert limiter.remaining("k", "t")["tokens_per_day"] == 900


BAD_USAGE = {
    "negative": {"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2},
    "text": {"prompt_tokens": "many", "completion_tokens": 3},
    "float": {"prompt_tokens": 10.5, "completion_tokens": 3},
    "inconsistent": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 50}},
}


@pytest.mark.reliability(
    "a provider answering with negative, text, fractional or inconsistent usage (real OpenAI SDK)",
    "the app gets the SDK's response unchanged; span llmcost.price.known=false with no cost, counted in "
    "llmcost.price.unknown, never priced as $0; the budget is not charged",
)
@pytest.mark.parametrize("kind", list(BAD_USAGE))
def test_bad_usage_from_a_provider_is_flagged_not_priced(kind: str, instrumented: Telemetry,
                                                       llm_server: LoopbackLLMServer, span_exporter: Any,
                                                       metric_reader: Any, meter_provider: Any) -> None:
    """Usage that cannot be priced is marked unpriced and counted; nothing is priced at zero or raised."""
    engine = BudgetEngine([Budget("b", Decimal("10"))], "memory://", sinks=[])
    enable_budgets(engine=engine, telemetry=instrumented, meter_provider=meter_provider, otel_alerts=False)
    llm_server.script(Reply(provider="openai", usage=BAD_USAGE[kind], text="fine"))
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "fine"
    (span,) = llmcost_spans(span_exporter)
    assert span.attributes["llmcost.price.known"] is False
    assert "gen_ai.usage.cost" not in span.attributes
    assert metric_points(metric_reader, "llmcost.cost") == []
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 1
    assert engine.state()[0].spend == 0


@pytest.mark.reliability(
    "unknown provider and unknown model names, and models with no per-token price",
    "UnknownPriceError naming the model, never a zero price",
)
@pytest.mark.parametrize("model,provider", [("no-such-model-xyz", "openai"), ("gpt-4o", "no-such-provider"),
                                            ("", None), ("models/", "gcp.gemini")])
def test_unknown_models_and_providers_are_unknown_not_free(model: str, provider: str | None) -> None:
    """An unpriceable model raises `UnknownPriceError` with its name; it is never priced at $0."""
    with pytest.raises(UnknownPriceError) as caught:
        PriceCatalog().cost(Usage(10, 10), model, provider)
    assert repr(model) in str(caught.value) or "model" in str(caught.value)


@pytest.mark.reliability(
    "a call to a model nobody has a price for, through the real SDK with budgets on",
    "the call succeeds; span llmcost.price.known=false and no gen_ai.usage.cost; counted once in "
    "llmcost.price.unknown, nothing added to llmcost.cost, the budget not charged",
)
def test_unknown_model_call_is_flagged_not_free(instrumented: Telemetry, llm_server: LoopbackLLMServer,
                                                span_exporter: Any, metric_reader: Any, meter_provider: Any) -> None:
    """A self-hosted or new model with no price: the call is marked and counted as unpriced, never as $0."""
    engine = BudgetEngine([Budget("b", Decimal("10"))], "memory://", sinks=[])
    enable_budgets(engine=engine, telemetry=instrumented, meter_provider=meter_provider, otel_alerts=False)
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="acme-private-llm-7b", messages=[{"role": "user", "content": "hi"}])
    (span,) = llmcost_spans(span_exporter)
    assert span.attributes["llmcost.price.known"] is False and "gen_ai.usage.cost" not in span.attributes
    assert span.attributes["gen_ai.usage.input_tokens"] > 0
    assert sum(p.value for p in metric_points(metric_reader, "llmcost.price.unknown")) == 1
    assert metric_points(metric_reader, "llmcost.cost") == []
    assert engine.state()[0].spend == 0
