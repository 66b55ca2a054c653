"""Routing table rules: tier restrictions, the provider kept, complexity → model, never an upgrade."""

from __future__ import annotations

import pytest

from otel_llmcost.budget import ConfigError
from otel_llmcost.routing import (
    REQUESTED,
    Router,
    RouteRequest,
    RoutingTable,
    TierRule,
    default_table,
    model_family,
)


def route(router: Router, model: str, provider: str, level: str, tier: str | None = None):
    return router.route(RouteRequest(model, provider, "query text"), tier, complexity=level)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "provider", "level", "expected"),
    [
        ("gpt-4o", "openai", "simple", "gpt-4o-mini"),
        ("gpt-4o", "openai", "medium", "gpt-4o"),
        ("gpt-4o", "openai", "complex", "gpt-4o"),
        ("claude-opus-4-1", "anthropic", "simple", "claude-haiku-4-5"),
        ("claude-opus-4-1", "anthropic", "medium", "claude-sonnet-4-6"),
        ("claude-opus-4-1", "anthropic", "complex", "claude-opus-4-1"),
        ("gemini-2.5-pro", "gcp.gemini", "simple", "gemini-2.5-flash"),
        ("gemini-2.5-pro", "gcp.gen_ai", "simple", "gemini-2.5-flash"),
    ],
)
def test_complexity_picks_the_providers_model_for_each_level(router, model, provider, level, expected):
    """With no tier, each complexity gets its provider's model from the table; complex keeps the request."""
    decision = route(router, model, provider, level)
    assert (decision.model, decision.from_model, decision.complexity, decision.allowed) == (
        expected, model, level, True
    )


def test_simple_query_reason_names_the_cheap_model(router):
    """The reason says what happened in words a person can read."""
    decision = route(router, "gpt-4o", "openai", "simple", "pro")
    assert decision.reason == "simple query → cheap model gpt-4o-mini"
    assert decision.rerouted and decision.tier == "pro"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gcp.gemini"])
@pytest.mark.parametrize("level", ["simple", "medium", "complex"])
@pytest.mark.parametrize("tier", [None, "free", "pro", "enterprise"])
def test_provider_family_is_never_changed(router, provider, level, tier):
    """Whatever the tier and complexity, a call is routed only to a model of its own provider."""
    requested = {"openai": "gpt-4.1", "anthropic": "claude-opus-4-1", "gcp.gemini": "gemini-2.5-pro"}[provider]
    decision = route(router, requested, provider, level, tier)
    assert model_family(decision.model) == provider


def test_free_tier_gets_only_gpt_4o_mini(router):
    """Free may use gpt-4o-mini only: a complex gpt-4o call steps down to it and says why."""
    decision = route(router, "gpt-4o", "openai", "complex", "free")
    assert decision.model == "gpt-4o-mini"
    assert decision.reason == "complex query → requested model; tier free may not use gpt-4o → gpt-4o-mini"


def test_requested_model_outside_the_tier_gets_the_tiers_best_of_that_provider(router):
    """Pro may not use Opus: a complex Opus call goes to Sonnet, Pro's best Anthropic model."""
    decision = route(router, "claude-opus-4-1", "anthropic", "complex", "pro")
    assert decision.model == "claude-sonnet-4-6"
    assert "tier pro may not use claude-opus-4-1 → claude-sonnet-4-6" in decision.reason


def test_disallowed_cheap_request_goes_to_the_tiers_model_for_its_level(router):
    """A model the tier does not list is replaced even when it is cheaper (the tier decides)."""
    decision = route(router, "gpt-4.1-nano", "openai", "simple", "pro")
    assert decision.model == "gpt-4o-mini" and decision.allowed


def test_no_allowed_model_of_the_provider_is_reported_not_crossed(router):
    """Free allows no Anthropic model: the call is not moved to OpenAI; the decision says not allowed."""
    decision = route(router, "claude-sonnet-4-6", "anthropic", "simple", "free")
    assert decision.allowed is False
    assert decision.model == "claude-sonnet-4-6"
    assert decision.reason.endswith("no allowed anthropic model for this call: claude-sonnet-4-6 kept, not allowed")


def test_enterprise_allows_every_model(router):
    """Enterprise keeps a complex call on the model it asked for, whatever it is."""
    decision = route(router, "claude-opus-4-1", "anthropic", "complex", "enterprise")
    assert decision.model == "claude-opus-4-1" and not decision.rerouted


def test_routing_never_upgrades_a_cheaper_request(router):
    """A medium query that asked for gpt-4o-mini stays on it: routing only saves."""
    decision = route(router, "gpt-4o-mini", "openai", "medium", "pro")
    assert decision.model == "gpt-4o-mini"
    assert decision.reason == "medium query → requested model (gpt-4o-mini costs less than gpt-4o)"


def test_upgrade_true_lets_routing_pick_a_dearer_model():
    """With upgrade: true the table's medium model is used even when it costs more than the request."""
    router = Router(RoutingTable(complexity=default_table().complexity, upgrade=True))
    assert route(router, "gpt-4o-mini", "openai", "medium").model == "gpt-4o"


def test_without_prices_the_table_order_prevents_upgrades():
    """With no price known, the column order (simple < medium < complex) says which model is dearer."""
    router = Router(default_table(), price=lambda model, provider: None)
    assert route(router, "gpt-4o-mini", "openai", "medium").model == "gpt-4o-mini"
    assert route(router, "gpt-4o", "openai", "simple").model == "gpt-4o-mini"


def test_unknown_model_name_is_not_routed(router):
    """A name of no known family (a proxy's or self-hosted model) is left alone: the endpoint may not
    serve our choice."""
    decision = route(router, "llama3", "openai", "simple")
    assert decision.model == "llama3"
    assert decision.reason == "simple query; llama3 is not a known openai model: requested model kept"


def test_provider_without_a_column_is_not_routed(router):
    """A provider the table has no models for keeps the requested model."""
    decision = route(router, "mistral-large-latest", "mistral_ai", "simple")
    assert decision.model == "mistral-large-latest"
    assert "no routing for provider mistral_ai" in decision.reason


def test_models_prefix_of_google_genai_is_kept(router):
    """google-genai's models/ prefix is ignored for matching and put back on the routed model."""
    decision = route(router, "models/gemini-2.5-pro", "gcp.gemini", "simple", "pro")
    assert decision.model == "models/gemini-2.5-flash"


def test_unknown_tier_uses_default_tier_when_set():
    """A tier name the table lacks gets the default tier's rules, or none when no default is set."""
    base = default_table()
    strict = Router(RoutingTable(base.tiers, base.complexity, default_tier="free"))
    decision = route(strict, "gpt-4o", "openai", "complex", "gold")
    assert decision.model == "gpt-4o-mini" and decision.tier == "free"
    assert decision.reason.startswith("unknown tier gold: rules of tier free")
    loose = route(Router(base), "gpt-4o", "openai", "complex", "gold")
    assert loose.model == "gpt-4o" and loose.reason.startswith("unknown tier gold: no tier restriction")


def test_tier_patterns_match_dated_snapshots():
    """Allowed lists take shell patterns, so gpt-4o-mini* admits dated snapshots."""
    rule = TierRule("free", ("gpt-4o-mini*",))
    assert rule.allows("gpt-4o-mini-2024-07-18") and rule.allows("gpt-4o-mini") and not rule.allows("gpt-4o")
    assert TierRule("all", ("*",)).allowed is None


def test_table_refuses_a_model_of_another_provider():
    """The complexity mapping cannot send an OpenAI call to an Anthropic model."""
    with pytest.raises(ConfigError) as info:
        RoutingTable(complexity={"simple": {"openai": "claude-haiku-4-5"}})
    assert info.value.field == "complexity.simple.openai"
    assert info.value.message == "claude-haiku-4-5 belongs to anthropic; routing keeps a call with its provider (openai)"


def test_table_requested_keyword_keeps_the_model():
    """REQUESTED in a level keeps the call's own model at that level."""
    table = RoutingTable(complexity={"simple": {"openai": REQUESTED}})
    assert table.ladder("openai", "gpt-4o") == {"simple": "gpt-4o", "medium": "gpt-4o", "complex": "gpt-4o"}
