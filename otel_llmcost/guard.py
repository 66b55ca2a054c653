"""The cost guard: rate limits, budget levels, caches and routing around every instrumented call.

One object in the call path of every instrumented SDK, in this order:
rate limit → budget level → cache → route → provider call → settle (limits, ledger, cache store).
Each part is optional. Each decision lands on the call's span (`llmcost.budget.level`,
`llmcost.cache.status`, `llmcost.route.from_model`, `llmcost.ratelimit.*`), and a refusal is a
`CallRefused` (`RateLimitExceeded`, `BudgetExceededError`) raised into the app on purpose; any other
failure of a part is logged and the call goes ahead as if the part were off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from . import names
from .budget.breaker import BudgetBreaker
from .budget.engine import BudgetEngine, Hints
from .budget.levels import Level
from .errors import ModelNotAllowedError
from .hints import HintsBreaker, HintsClient
from .pricing import PriceCatalog
from .pricing.estimate import estimate_request
from .ratelimit.errors import RateLimitExceeded
from .ratelimit.limiter import Permit, RateLimiter
from .routing import Router, RouteRequest
from .telemetry import Call, CallResult, Served

_log = logging.getLogger(__name__)

_KEY_ATTRIBUTES = {"user": names.LLMCOST_USER_ID, "tenant": names.LLMCOST_TENANT_ID,
                   "feature": names.LLMCOST_FEATURE, "tier": names.LLMCOST_USER_TIER}


class CallCache(Protocol):
    """The response caches as the guard uses them (see `otel_llmcost.cache.callpath`)."""

    def lookup(self, call: Call, kwargs: dict[str, Any], endpoint: Any, asynchronous: bool) -> Served | None:
        """A cached answer in the SDK's own type (a stream replayed as a stream), or None."""

    def prepare_store(self, call: Call, kwargs: dict[str, Any], endpoint: Any) -> None:
        """Arrange for the call's response to be stored when the call ends well."""


@dataclass(frozen=True)
class RateLimitPolicy:
    """Which attribute names the rate-limited key, and the tier used when a call names none."""

    key: str = "user"
    default_tier: str = "free"
    anonymous_key: str = "anonymous"

    def key_and_tier(self, who: Mapping[str, str]) -> tuple[str, str]:
        attribute = _KEY_ATTRIBUTES.get(self.key, self.key)
        key = who.get(attribute) or self.anonymous_key
        return f"{self.key}:{key}", who.get(names.LLMCOST_USER_TIER) or self.default_tier


class CostGuard:
    """Rate limits, budgets, caches and routing in the call path (see the module docstring)."""

    def __init__(
        self,
        *,
        catalog: PriceCatalog,
        limiter: RateLimiter | None = None,
        rate_limit_policy: RateLimitPolicy | None = None,
        budget: BudgetEngine | None = None,
        cache: CallCache | None = None,
        router: Router | None = None,
        rejections: Any = None,
        hints: HintsClient | None = None,
    ) -> None:
        self.catalog = catalog
        self.limiter = limiter
        self.policy = rate_limit_policy or RateLimitPolicy()
        self.budget = budget
        self.hints_client = hints  # budget levels from the processor service, when no local engine
        self.breaker: BudgetBreaker | None = (
            BudgetBreaker(budget, catalog) if budget is not None else HintsBreaker(hints, catalog) if hints else None)
        self.cache = cache
        self.router = router
        self.rejections = rejections  # a Counter: llmcost.ratelimit.rejections

    # -- the decision, in order ----------------------------------------------------------------
    def before(self, call: Call, kwargs: dict[str, Any], endpoint: Any = None,
               asynchronous: bool = False) -> dict[str, Any] | Served:
        permit = self._rate_limit(call, kwargs)
        hints = self._hints(call)
        served = self._cached(call, kwargs, endpoint, asynchronous)
        if served is not None:
            self._settle_permit(permit, 0)
            return served
        if hints is not None and hints.cache_only and self.breaker is not None:
            self._settle_permit(permit, 0)
            raise self.breaker.exceeded(self.breaker.attributes(call), hints)
        requested = kwargs
        kwargs = self._route(call, kwargs, hints)
        ticket = None
        if self.breaker is not None and self.budget is not None:
            attributes = self.breaker.attributes(call)
            try:
                ticket = self.budget.reserve(self.breaker.estimate(call, kwargs), attributes)
            except Exception:
                self._settle_permit(permit, 0)
                raise
        if self.cache is not None:
            try:
                # Keyed by what the app asked for, so the next identical request finds the answer
                # whichever model routing sent this one to (the response names that model).
                self.cache.prepare_store(call, requested, endpoint)
            except Exception:
                _log.debug("otel-llmcost: preparing the cache store failed", exc_info=True)
        if permit is not None or ticket is not None:
            call.on_end(lambda result, error: self._settle(call, permit, ticket, result))
        return kwargs

    def _rate_limit(self, call: Call, kwargs: dict[str, Any]) -> Permit | None:
        if self.limiter is None:
            return None
        key, tier = self.policy.key_and_tier(call.who)
        estimate = estimate_request(kwargs)
        try:
            return self.limiter.acquire(key, tier, estimate.input_tokens + estimate.output_tokens)
        except RateLimitExceeded as refusal:
            call.span.set_attributes({"llmcost.ratelimit.limit": refusal.limit, "llmcost.ratelimit.tier": tier,
                                      "llmcost.ratelimit.retry_after": refusal.retry_after})
            if self.rejections is not None:
                self.rejections.add(1, {"llmcost.ratelimit.limit": refusal.limit, names.LLMCOST_USER_TIER: tier,
                                        names.GEN_AI_PROVIDER_NAME: call.provider})
            raise
        except ValueError:
            _log.warning("otel-llmcost: tier %r has no rate limits configured; the call is not limited", tier)
            return None

    def _hints(self, call: Call) -> Hints | None:
        if self.breaker is None:
            return None
        source = self.budget if self.budget is not None else self.hints_client
        if source is None:
            return None
        hints = source.hints(self.breaker.attributes(call))
        call.span.set_attribute(names.LLMCOST_BUDGET_LEVEL, hints.level.label)
        return hints

    def _cached(self, call: Call, kwargs: dict[str, Any], endpoint: Any, asynchronous: bool) -> Served | None:
        if self.cache is None:
            return None
        try:
            return self.cache.lookup(call, kwargs, endpoint, asynchronous)
        except Exception:
            _log.debug("otel-llmcost: cache lookup failed; calling the provider", exc_info=True)
            return None

    def _route(self, call: Call, kwargs: dict[str, Any], hints: Hints | None) -> dict[str, Any]:
        model = kwargs.get("model")
        if self.router is None or not isinstance(model, str):
            routed = kwargs
            if hints is not None and hints.level >= Level.THROTTLE and self.breaker is not None:
                routed = self.breaker.throttle(call, kwargs, hints)
            if self.breaker is not None and isinstance(model, str):
                _decided(call, model, names.ROUTE_KEPT if routed.get("model") == model else names.ROUTE_BUDGET_THROTTLE)
            return routed
        tier = call.who.get(names.LLMCOST_USER_TIER)
        decision = self.router.route(RouteRequest.from_call(model, call.provider, kwargs), tier, hints)
        call.span.set_attribute("llmcost.route.complexity", decision.complexity)
        if not decision.allowed:
            _decided(call, model, names.ROUTE_NOT_ALLOWED)
            raise ModelNotAllowedError(model, tier, decision.reason)
        if decision.model == model:
            _decided(call, model, names.ROUTE_KEPT)
            return kwargs
        call.reroute(decision.model, model)
        call.span.set_attribute("llmcost.route.reason", decision.reason)
        _decided(call, model, names.ROUTE_BUDGET_THROTTLE if decision.substituted else names.ROUTE_COMPLEXITY)
        return {**kwargs, "model": decision.model}

    # -- after the call ------------------------------------------------------------------------
    def _settle_permit(self, permit: Permit | None, tokens: int) -> None:
        if permit is not None and self.limiter is not None:
            try:
                self.limiter.settle(permit, tokens)
            except Exception:
                _log.debug("otel-llmcost: settling a rate-limit permit failed", exc_info=True)

    def _settle(self, call: Call, permit: Permit | None, ticket: Any, result: CallResult | None) -> None:
        usage = result.usage if result is not None else None
        self._settle_permit(permit, (usage.input_tokens + usage.output_tokens) if usage else 0)
        if ticket is not None and self.budget is not None:
            actual = result.cost.total if result is not None and result.cost is not None else Decimal(0)
            self.budget.settle(ticket, actual)
            call.settled = True


def _decided(call: Call, from_model: str, kind: str) -> None:
    """Count a routing decision; a metrics failure must not cost the app its call."""
    try:
        call.route_decided(from_model, kind)
    except Exception:
        _log.debug("otel-llmcost: recording a routing decision failed", exc_info=True)


def install_guard(
    *,
    telemetry: Any = None,
    limiter: RateLimiter | None = None,
    rate_limit_policy: RateLimitPolicy | None = None,
    budget: BudgetEngine | None = None,
    cache: CallCache | None = None,
    router: Router | None = None,
    hints: HintsClient | None = None,
) -> CostGuard:
    """Put a `CostGuard` with the given parts in the call path of every instrumented SDK.

    The budget engine, when given, is also fed by the instrumentation (see `enable_budgets`): calls the
    guard settled are not counted twice. Without one, `hints` (a `HintsClient` polling the processor
    service) supplies the budget levels: throttle and stop apply the same way, nothing is reserved.
    """
    from .telemetry import current_telemetry

    telemetry = telemetry or current_telemetry()
    if telemetry is None:
        raise RuntimeError("no instrumentation to guard: call otel_llmcost.instrument() first")
    guard = CostGuard(catalog=telemetry.catalog, limiter=limiter, rate_limit_policy=rate_limit_policy,
                      budget=budget, cache=cache, router=router, rejections=telemetry.ratelimit_rejections,
                      hints=hints)
    telemetry.guard = guard
    return guard
