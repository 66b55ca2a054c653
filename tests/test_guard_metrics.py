"""Metrics the dashboards need: routing decisions, false-hit guard refusals, prompt-cache savings, budget projection."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

import otel_llmcost
from otel_llmcost.budget import Budget, BudgetConfig, BudgetEngine, Routing
from otel_llmcost.cache import SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import GuardedPolicy, ThresholdPolicy
from otel_llmcost.errors import ModelNotAllowedError
from otel_llmcost.guard import install_guard
from otel_llmcost.routing import Router
from tests.conftest import llmcost_spans, metric_points

HELLO = [{"role": "user", "content": "Hello"}]
COMPLEX = [{"role": "user", "content": (
    "Analyze the trade-offs between microservices and a monolith for a payments platform, "
    "step by step, with failure modes, data consistency and migration plan.")}]


@pytest.fixture
def client(llm_server):
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)


@pytest.fixture
def claude(llm_server):
    return anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                               open_telemetry=False)


def decisions(reader) -> dict[tuple[str, str, str], int]:
    """`llmcost.route.decisions` as {(from model, to model, kind): count}."""
    found: dict[tuple[str, str, str], int] = {}
    for point in metric_points(reader, "llmcost.route.decisions"):
        a = point.attributes
        key = (a["llmcost.route.from_model"], a["gen_ai.request.model"], a["llmcost.route.kind"])
        found[key] = found.get(key, 0) + point.value
    return found


def throttled_engine(limit: str = "0.01", spent: str = "0.0086") -> BudgetEngine:
    """A monthly budget already past its throttle level (85%), with Claude Sonnet → Haiku as substitute."""
    engine = BudgetEngine(BudgetConfig(budgets=(Budget("monthly", Decimal(limit)),),
                                       routing=Routing({"claude-sonnet-4-6": "claude-haiku-4-5",
                                                        "gpt-4o": "gpt-4o-mini"})), sinks=[])
    engine.record_cost(Decimal(spent), {})
    return engine


def test_router_decisions_are_counted_by_kind(instrumented, client, metric_reader):
    """A simple query routed to the cheap model counts as `complexity`, a complex one kept as `kept`,
    with the tier and provider as labels."""
    install_guard(router=Router())
    with otel_llmcost.attributes(user_id="p", tier="pro", feature="support"):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
        client.chat.completions.create(model="gpt-4o", messages=COMPLEX)
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert decisions(metric_reader) == {("gpt-4o", "gpt-4o-mini", "complexity"): 2,
                                        ("gpt-4o", "gpt-4o", "kept"): 1}
    point = metric_points(metric_reader, "llmcost.route.decisions")[0]
    assert point.attributes["llmcost.user.tier"] == "pro"
    assert point.attributes["llmcost.feature"] == "support"
    assert point.attributes["gen_ai.provider.name"] == "openai"
    assert "llmcost.user.id" not in point.attributes  # user ids stay off metrics by default


def test_budget_downgrade_without_router(instrumented, claude, metric_reader, span_exporter):
    """With only a budget in the guard, a call at the throttle level is a `budget_throttle` decision."""
    install_guard(budget=throttled_engine())
    message = claude.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=HELLO)
    assert message.model == "claude-haiku-4-5"
    assert decisions(metric_reader) == {("claude-sonnet-4-6", "claude-haiku-4-5", "budget_throttle"): 1}
    assert llmcost_spans(span_exporter)[0].attributes["llmcost.route.from_model"] == "claude-sonnet-4-6"


def test_budget_below_throttle_counts_kept(instrumented, claude, metric_reader):
    """Below the throttle level the model is kept and counted so, so that the routed share has its base."""
    install_guard(budget=throttled_engine(limit="5", spent="0"))
    claude.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=HELLO)
    assert decisions(metric_reader) == {("claude-sonnet-4-6", "claude-sonnet-4-6", "kept"): 1}


def test_router_budget_substitute_counts_as_downgrade(instrumented, claude, metric_reader):
    """With router and budget, the router's use of the budget substitute counts as `budget_throttle`,
    not as complexity routing."""
    install_guard(router=Router(), budget=throttled_engine())
    with otel_llmcost.attributes(user_id="e", tier="enterprise"):
        message = claude.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=COMPLEX)
    assert message.model == "claude-haiku-4-5"
    assert decisions(metric_reader) == {("claude-sonnet-4-6", "claude-haiku-4-5", "budget_throttle"): 1}


def test_model_not_allowed_is_counted(instrumented, claude, metric_reader):
    """A call refused because the tier may use no model of the provider counts as `not_allowed`."""
    install_guard(router=Router())
    with otel_llmcost.attributes(user_id="f", tier="free"), pytest.raises(ModelNotAllowedError):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=HELLO)
    assert decisions(metric_reader) == {("claude-sonnet-4-6", "claude-sonnet-4-6", "not_allowed"): 1}


def test_no_decision_without_router_or_budget(instrumented, client, metric_reader):
    """A guard that does not route (rate limits or cache only) records no routing decisions."""
    from otel_llmcost.ratelimit import RateLimiter
    from otel_llmcost.ratelimit.tiers import DEFAULT_TIERS

    install_guard(limiter=RateLimiter(DEFAULT_TIERS))
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert decisions(metric_reader) == {}


def ask(client, text: str) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                                   temperature=0)


def refusals(reader) -> dict[str, int]:
    """`llmcost.cache.semantic.refusals` as {provider: count}."""
    found: dict[str, int] = {}
    for point in metric_points(reader, "llmcost.cache.semantic.refusals"):
        key = point.attributes["gen_ai.provider.name"]
        found[key] = found.get(key, 0) + point.value
    return found


def test_false_hit_guard_refusal_is_counted(instrumented, client, metric_reader, span_exporter):
    """A close match refused by a guard (another number) is a miss counted in
    `llmcost.cache.semantic.refusals`, marked on the span without the reason (it quotes the prompt); a
    served paraphrase and an unrelated question count nothing."""
    install_guard(cache=ResponseCache(None, SemanticCache(HashingEmbedder(), GuardedPolicy())))
    ask(client, "Can I return an item after 30 days?")
    ask(client, "Can I return an item after 90 days?")  # number differs: refused
    ask(client, "Can I return an item after 30 days please?")  # filler only: served
    ask(client, "Do you ship tents to Canada?")  # nothing close: a plain miss
    spans = llmcost_spans(span_exporter)
    assert [s.attributes["llmcost.cache.status"] for s in spans] == ["miss", "miss", "semantic_hit", "miss"]
    assert spans[1].attributes["llmcost.cache.semantic.refused"] is True
    assert all("llmcost.cache.semantic.refused" not in s.attributes for s in (spans[0], spans[2], spans[3]))
    assert not any("days" in v for v in spans[1].attributes.values() if isinstance(v, str))
    assert refusals(metric_reader) == {"openai": 1}


def test_threshold_rejection_is_not_a_guard_refusal(instrumented, client, metric_reader):
    """A candidate below a plain threshold policy's cut is an ordinary miss, not a false hit avoided."""
    install_guard(cache=ResponseCache(None, SemanticCache(HashingEmbedder(), ThresholdPolicy(0.999))))
    ask(client, "Can I return an item after 30 days?")
    ask(client, "Can I return an item after 90 days?")
    assert refusals(metric_reader) == {}
    lookups = {p.attributes["llmcost.cache.status"]: p.value
               for p in metric_points(metric_reader, "llmcost.cache.lookups")}
    assert lookups == {"miss": 2}


# -- provider prompt cache and budget projection -----------------------------------------------------
LONG_SYSTEM = "You are the support assistant of Acme. " + " ".join(
    f"Rule {i}: answer questions about category {i} politely and briefly." for i in range(150))


def test_prompt_cache_saving_is_cache_reads_at_the_input_discount(instrumented, client, metric_reader, span_exporter):
    """The second call with the same long system prompt reads the provider's prompt cache;
    `llmcost.prompt_cache.saved` is its cache-read tokens times (input price - cache-read price)."""
    from otel_llmcost.pricing import PriceCatalog

    messages = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Hello"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert metric_points(metric_reader, "llmcost.prompt_cache.saved") == []  # a cold cache saves nothing
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    second = llmcost_spans(span_exporter)[-1]
    cached = second.attributes["gen_ai.usage.cache_read.input_tokens"]
    assert cached > 1000
    prices = PriceCatalog().prices("gpt-4o-mini", "openai")
    expected = cached * (Decimal(str(prices.input_mtok)) - Decimal(str(prices.cache_read_mtok))) / 1_000_000
    (point,) = metric_points(metric_reader, "llmcost.prompt_cache.saved")
    assert point.value == pytest.approx(float(expected), rel=1e-6)
    assert point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_budget_projection_gauge(meter_provider, metric_reader):
    """`llmcost.budget.projected`: spend so far over the elapsed share of a calendar window; a rolling
    window has no end to project to, so no point."""
    from datetime import datetime, timedelta, timezone

    from otel_llmcost.budget import RollingWindow
    from otel_llmcost.budget.processor import BudgetProcessor

    now = datetime(2026, 11, 16, tzinfo=timezone.utc)  # 15 of November's 30 days gone
    engine = BudgetEngine([Budget("monthly", Decimal("10")),
                           Budget("hourly", Decimal("5"), window=RollingWindow(timedelta(hours=1)))], sinks=[], clock=lambda: now)
    engine.record_cost(Decimal("1.5"), {}, now)
    processor = BudgetProcessor(engine, meter_provider=meter_provider)
    try:
        points = metric_points(metric_reader, "llmcost.budget.projected")
    finally:
        processor.shutdown()
    assert [(p.attributes["llmcost.budget.name"], p.value) for p in points] == [("monthly", pytest.approx(3.0))]
