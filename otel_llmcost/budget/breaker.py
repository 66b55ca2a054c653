"""The budget circuit breaker in the call path: warn, throttle to cheaper models, stop.

Before each instrumented call it reads the tightest budget's hints for the call's attribution: at
`throttle` the model is replaced by its cheaper substitute (routing table in the config), at `stop`
only cached answers may be served, so an uncached call is refused with `BudgetExceededError`. Every
call reserves its estimated maximum cost first and settles the real cost when it ends (for a stream,
when the stream ends), so concurrent calls cannot overdraw a budget between check and spend.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from .. import names
from ..pricing import PriceCatalog, UnknownPriceError
from ..pricing.estimate import estimate_request
from ..telemetry import Call, CallResult
from .engine import BudgetEngine, Hints, Ticket
from .errors import BudgetExceededError
from .levels import Level

_log = logging.getLogger(__name__)


class BudgetBreaker:
    """A guard (see `Telemetry.guard`) that applies a `BudgetEngine`'s levels to each call."""

    def __init__(self, engine: BudgetEngine, catalog: PriceCatalog) -> None:
        self.engine = engine
        self.catalog = catalog

    def attributes(self, call: Call) -> dict[str, str]:
        return {**call.who, names.GEN_AI_PROVIDER_NAME: call.provider, names.GEN_AI_REQUEST_MODEL: call.request_model}

    def before(self, call: Call, kwargs: dict[str, Any], endpoint: Any = None,
               asynchronous: bool = False) -> dict[str, Any]:
        """Throttle or refuse by the budget level; reserve the call's estimated cost."""
        attributes = self.attributes(call)
        hints = self.engine.hints(attributes)
        call.span.set_attribute(names.LLMCOST_BUDGET_LEVEL, hints.level.label)
        if hints.cache_only:
            raise self.exceeded(attributes, hints)
        kwargs = self.throttle(call, kwargs, hints)
        attributes[names.GEN_AI_REQUEST_MODEL] = call.request_model
        ticket = self.engine.reserve(self.estimate(call, kwargs), attributes)
        call.on_end(lambda result, error: self.settle(call, ticket, result))
        return kwargs

    def throttle(self, call: Call, kwargs: dict[str, Any], hints: Hints) -> dict[str, Any]:
        """At `throttle` and above, send the call to the cheaper substitute of its model, if one is set."""
        model = kwargs.get("model")
        if hints.level < Level.THROTTLE or not isinstance(model, str):
            return kwargs
        bare = model.removeprefix("models/")
        substitute = hints.substitutes.get(model) or hints.substitutes.get(bare)
        if substitute is None or substitute == bare:
            return kwargs
        if hints.allowed_models is not None and substitute not in hints.allowed_models:
            _log.warning("budget %s: substitute %r of %r is not an allowed model; not rerouted",
                         hints.budget, substitute, model)
            return kwargs
        new_model = "models/" + substitute if model.startswith("models/") else substitute
        call.reroute(new_model, model)
        return {**kwargs, "model": new_model}

    def estimate(self, call: Call, kwargs: dict[str, Any]) -> Decimal:
        """The most this call should cost: prompt size and its output cap at the model's prices."""
        try:
            return self.catalog.cost(estimate_request(kwargs), call.request_model, call.provider).total
        except UnknownPriceError:
            return Decimal(0)  # unknown price: nothing to reserve; the call is counted as unpriced

    def settle(self, call: Call, ticket: Ticket, result: CallResult | None) -> None:
        actual = result.cost.total if result is not None and result.cost is not None else Decimal(0)
        self.engine.settle(ticket, actual)
        call.settled = True

    def exceeded(self, attributes: dict[str, str], hints: Hints) -> BudgetExceededError:
        for status in self.engine.status(attributes):
            if status.budget == hints.budget and status.scope_key == hints.scope_key:
                return BudgetExceededError(
                    budget=status.budget, scope_key=status.scope_key, spend=status.spend,
                    reserved=status.reserved, limit=self.engine.config.budget(status.budget).stop_limit,
                    amount=status.limit, reset_at=status.window_end,
                )
        return BudgetExceededError(budget=hints.budget or "?", scope_key=hints.scope_key or "?",
                                   spend=Decimal(0), limit=Decimal(0),
                                   reset_at=hints.reset_at or _never())


def _never() -> Any:
    from datetime import datetime, timezone

    return datetime.max.replace(tzinfo=timezone.utc)
