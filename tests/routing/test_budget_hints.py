"""Budget hints over routing: throttle substitutes win, the budget's allowed models are respected."""

from __future__ import annotations

from otel_llmcost.budget import Hints, Level
from otel_llmcost.routing import Router, RouteRequest

SUBSTITUTES = {"gpt-4o": "gpt-4o-mini", "claude-sonnet-4-6": "claude-haiku-4-5", "claude-opus-4-1": "claude-sonnet-4-6"}


def throttle(**extra) -> Hints:
    return Hints(level=Level.THROTTLE, budget="team-daily", substitutes=dict(SUBSTITUTES), **extra)


def route(router: Router, model: str, provider: str, level: str, tier: str | None = None, hints: Hints | None = None):
    return router.route(RouteRequest(model, provider, "query"), tier, hints, complexity=level)  # type: ignore[arg-type]


def test_throttle_substitute_wins_over_complexity_routing(router):
    """A complex query keeps gpt-4o by complexity, but at throttle the budget's substitute wins."""
    decision = route(router, "gpt-4o", "openai", "complex", "pro", throttle())
    assert decision.model == "gpt-4o-mini" and decision.substituted
    assert decision.reason == "complex query → requested model; budget throttle → substitute gpt-4o-mini for gpt-4o"


def test_throttle_applies_to_the_model_routing_chose(router):
    """Routing picks Sonnet for a medium Opus call; at throttle Sonnet's substitute Haiku is used."""
    decision = route(router, "claude-opus-4-1", "anthropic", "medium", "enterprise", throttle())
    assert decision.model == "claude-haiku-4-5"


def test_stop_level_substitutes_too(router):
    """Every level from throttle up (stop included) substitutes; refusing at stop is the breaker's job."""
    decision = route(router, "gpt-4o", "openai", "complex", None, Hints(level=Level.STOP, substitutes=SUBSTITUTES))
    assert decision.model == "gpt-4o-mini"


def test_below_throttle_substitutes_are_ignored(router):
    """At warn the substitutes are not applied: complexity routing alone decides."""
    decision = route(router, "gpt-4o", "openai", "complex", None, Hints(level=Level.WARN, substitutes=SUBSTITUTES))
    assert decision.model == "gpt-4o" and not decision.substituted


def test_substitute_of_another_provider_is_not_used(router):
    """A substitute from another provider's family is refused: the SDK call cannot change providers."""
    hints = Hints(level=Level.THROTTLE, substitutes={"gpt-4o": "claude-haiku-4-5"})
    decision = route(router, "gpt-4o", "openai", "complex", None, hints)
    assert decision.model == "gpt-4o" and not decision.substituted
    assert "substitute claude-haiku-4-5 for gpt-4o not used (claude-haiku-4-5 belongs to anthropic" in decision.reason


def test_substitute_the_tier_forbids_is_not_used():
    """A substitute outside the tier is skipped; the tier's own fallback applies instead."""
    router = Router()
    hints = Hints(level=Level.THROTTLE, substitutes={"gpt-4o": "gpt-4.1-nano"})
    decision = route(router, "gpt-4o", "openai", "complex", "pro", hints)
    assert decision.model == "gpt-4o"
    assert "(tier pro may not use gpt-4.1-nano)" in decision.reason


def test_substitute_on_an_unrouted_provider_still_applies(router):
    """Custom deployment names are not routed by complexity, but the budget's substitutes still apply."""
    hints = Hints(level=Level.THROTTLE, substitutes={"prod-gpt4o": "prod-gpt4o-mini"})
    decision = route(router, "prod-gpt4o", "azure.ai.openai", "complex", None, hints)
    assert decision.model == "prod-gpt4o-mini" and decision.substituted


def test_hints_allowed_models_are_respected(router):
    """The budget's allowed_models restrict the choice like a tier: gpt-4o steps down to gpt-4o-mini."""
    hints = Hints(level=Level.THROTTLE, budget="per-user", allowed_models=("gpt-4o-mini",))
    decision = route(router, "gpt-4o", "openai", "complex", "enterprise", hints)
    assert decision.model == "gpt-4o-mini"
    assert decision.reason == (
        "complex query → requested model; budget per-user allows only gpt-4o-mini, not gpt-4o → gpt-4o-mini"
    )


def test_hints_allowed_models_and_tier_both_apply(router):
    """A model must pass the tier and the budget: Pro allows gpt-4o but the budget does not."""
    hints = Hints(level=Level.THROTTLE, allowed_models=("gpt-4o-mini", "claude-haiku-4-5"))
    assert route(router, "gpt-4o", "openai", "medium", "pro", hints).model == "gpt-4o-mini"
    assert route(router, "claude-opus-4-1", "anthropic", "complex", "pro", hints).model == "claude-haiku-4-5"


def test_substitute_outside_allowed_models_is_not_used(router):
    """A substitute the budget does not allow is skipped and the model kept, as the budget breaker does."""
    hints = throttle(allowed_models=("claude-haiku-4-5", "claude-opus-4-1"))
    decision = route(router, "claude-opus-4-1", "anthropic", "complex", None, hints)
    assert decision.model == "claude-opus-4-1" and not decision.substituted
    assert decision.reason == (
        "complex query → requested model; budget throttle: substitute claude-sonnet-4-6 for claude-opus-4-1"
        " not used (budget team-daily allows only claude-haiku-4-5, claude-opus-4-1, not claude-sonnet-4-6)"
    )


def test_budget_allowing_nothing_of_the_provider_reports_not_allowed(router):
    """When the budget allows no model of the call's provider, the decision says so and keeps the model."""
    hints = Hints(level=Level.THROTTLE, allowed_models=("gpt-4o-mini",))
    decision = route(router, "claude-sonnet-4-6", "anthropic", "simple", None, hints)
    assert decision.allowed is False and decision.model == "claude-sonnet-4-6"
