"""The routing decision: which model a call should use, and why. Pure: no I/O, no clock, no state.

    router = Router()                                        # default table, heuristic classifier
    decision = router.route(RouteRequest("gpt-4o", "openai", "What time do you close?"), tier="pro")
    decision.model, decision.reason      # 'gpt-4o-mini', 'simple query → cheap model gpt-4o-mini'

The order of the rules, each one able to overrule the ones before it:

1. Complexity: the classifier's level picks the provider's model for that level in the table
   (complex: the requested model). Only models of the call's own provider are ever chosen, and only
   when the requested model is known to belong to it (a custom deployment name is left alone).
2. No upgrade (unless the table allows it): a call never moves to a dearer model than it asked for.
3. Budget throttle (`hints.level >= THROTTLE`): the chosen model is replaced by its cheaper substitute
   (`hints.substitutes`), which wins over the complexity choice.
4. Allowed models: the tier's list and the budget's `hints.allowed_models` both apply. A model that is
   not allowed is replaced by the next model down the provider's column that is; if none is,
   the decision says so (`allowed=False`) and keeps the requested model for the caller to refuse.

Prices, used only to compare two models for rule 2, come from a `PriceCatalog` read at construction
and held in memory; `route()` itself reads no file, network or clock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..budget.levels import Level
from .complexity import COMPLEXITIES, Classifier, Complexity
from .table import REQUESTED, RoutingTable, bare_model, default_table, model_family, provider_key

if TYPE_CHECKING:
    from ..budget.engine import Hints
    from ..cache.embedders import Embedder
    from ..pricing import PriceCatalog
    from .config import RoutingConfig

PriceFn = Callable[[str, str], "Decimal | None"]
"""(model, provider) → a price to compare models by (USD for 1k input + 1k output tokens), or None."""


@dataclass(frozen=True)
class RouteRequest:
    """What the router sees of a call: the requested model, its provider and the last user message.

    `provider` is the `gen_ai.provider.name` (openai, anthropic, gcp.gemini, ...); `prompt_tokens`, when
    known, is the size of the whole prompt (route-eval uses it for cost estimates).
    """

    model: str
    provider: str
    text: str = ""
    prompt_tokens: int | None = None

    @classmethod
    def from_call(cls, model: str, provider: str, kwargs: Mapping[str, Any]) -> RouteRequest:
        """From an SDK call's keyword arguments: the last user message and the prompt's estimated size."""
        from ..pricing.estimate import estimate_request

        return cls(model, provider, last_user_text(kwargs), estimate_request(kwargs, 0).input_tokens)


@dataclass(frozen=True)
class RouteDecision:
    """The model to call, the model asked for, the query's complexity, and the reasons in order.

    `allowed` is False when neither the requested model nor any model the router may pick is allowed
    for the tier and budget: `model` is then the requested one and the caller decides (refuse, or let
    it through). `substituted` is True when a budget throttle substitute was applied.
    """

    model: str
    from_model: str
    complexity: Complexity
    reason: str
    tier: str | None = None
    allowed: bool = True
    substituted: bool = False

    @property
    def rerouted(self) -> bool:
        """Whether the call goes to another model than it asked for."""
        return self.model != self.from_model


class Router:
    """Decides the model for each call from a `RoutingTable`, a `Classifier` and budget `Hints`.

    `prices` (a `PriceCatalog`, default the bundled one) is consulted only to compare a routed model
    with the requested one, so that routing never upgrades a call; pass `price=` to supply your own
    comparison instead (`lambda model, provider: None` turns price comparison off).
    """

    def __init__(
        self,
        table: RoutingTable | None = None,
        classifier: Classifier | None = None,
        *,
        prices: PriceCatalog | None = None,
        price: PriceFn | None = None,
    ) -> None:
        from .classifier import HeuristicClassifier

        self.table = table if table is not None else default_table()
        self.classifier: Classifier = classifier if classifier is not None else HeuristicClassifier()
        self._price = price if price is not None else catalog_price(prices)
        self._named: dict[str, set[str]] = {}  # provider → the models the table names for it
        for model, provider in sorted(self.table.models()):
            self._named.setdefault(provider, set()).add(model)
            self._price(model, provider)  # warm the look-ups now, not in the call path

    @classmethod
    def from_config(
        cls,
        config: RoutingConfig | str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        prices: PriceCatalog | None = None,
    ) -> Router:
        """A router from the `routing:` section of the config file (default `$OTEL_LLMCOST_CONFIG`).

        With `classifier: knn` the examples are embedded here, once (default embedder: MiniLM).
        """
        from .config import RoutingConfig, load_routing_config

        if not isinstance(config, RoutingConfig):
            config = load_routing_config(config)
        return cls(config.table, config.build_classifier(embedder), prices=prices)

    # -- the decision --------------------------------------------------------------------------------
    def route(
        self,
        request: RouteRequest,
        tier: str | None = None,
        hints: Hints | None = None,
        *,
        complexity: Complexity | None = None,
    ) -> RouteDecision:
        """The model for this call (see the module docstring for the rules). `complexity` skips the
        classifier when the caller already knows it."""
        level = complexity if complexity is not None else self.classifier.classify(request.text)
        requested = request.model
        bare = bare_model(requested)
        prefix = "models/" if requested.startswith("models/") else ""
        rule = self.table.tier_rule(tier)
        budget_allowed = tuple(hints.allowed_models) if hints is not None and hints.allowed_models is not None else None
        throttled = hints is not None and Level(hints.level) >= Level.THROTTLE
        substitutes: Mapping[str, str] = hints.substitutes if throttled and hints is not None else {}
        reasons: list[str] = []
        if tier is not None and tier not in self.table.tiers:
            if rule is None:
                reasons.append(f"unknown tier {tier}: no tier restriction")
            else:
                reasons.append(f"unknown tier {tier}: rules of tier {rule.name}")
        tier_name = rule.name if rule is not None else tier

        def refusal(model: str) -> str | None:
            if rule is not None and not rule.allows(model):
                return f"tier {tier_name} may not use {model}"
            if budget_allowed is not None and bare_model(model) not in budget_allowed:
                budget = f"budget {hints.budget}" if hints is not None and hints.budget else "budget"
                return f"{budget} allows only {', '.join(budget_allowed) or 'no models'}, not {model}"
            return None

        # 1-2. Complexity routing within the provider, never to a dearer model unless allowed.
        ladder = self._ladder(request.provider, bare)
        if ladder:
            target = ladder[level]
            if target == bare:
                reasons.append(f"{level} query → requested model")
            elif not self.table.upgrade and self._dearer(target, bare, request.provider):
                reasons.append(f"{level} query → requested model ({bare} costs less than {target})")
                target = bare
            else:
                reasons.append(f"{level} query → {_kind(level)} model {target}")
            # If the tier or budget refuses the choice: this level's model, the levels below, then the
            # requested model itself (the tier decides here, not the price of what was asked for).
            lower = [ladder[below] for below in reversed(COMPLEXITIES[: COMPLEXITIES.index(level)])]
            candidates = [target, ladder[level], *lower, bare]
        else:
            why = (
                f"no routing for provider {request.provider}"
                if not self.table.ladder(request.provider, bare)
                else f"{bare} is not a known {provider_key(request.provider)} model"
            )
            reasons.append(f"{level} query; {why}: requested model kept")
            candidates = [bare]
        candidates = list(dict.fromkeys(candidates))

        # 3-4. Budget substitutes, then what the tier and the budget allow, stepping down the column.
        chosen: str | None = None
        used_substitute = False
        refused_at: int | None = None  # index of the reason saying why the last candidate was refused
        for candidate in candidates:
            if throttled:
                substitute = substitutes.get(candidate) or substitutes.get(prefix + candidate)
                substitute = bare_model(substitute) if substitute else None
                if substitute and substitute != candidate:
                    why_not = self._foreign(substitute, bare, request.provider) or refusal(substitute)
                    if why_not is None:
                        reasons.append(f"budget throttle → substitute {substitute} for {candidate}")
                        chosen, used_substitute = substitute, True
                        break
                    reasons.append(f"budget throttle: substitute {substitute} for {candidate} not used ({why_not})")
            why_not = refusal(candidate)
            if why_not is None:
                chosen = candidate
                break
            refused_at = len(reasons)
            reasons.append(why_not)
        if chosen is None:
            if rule is not None or budget_allowed is not None:
                reasons.append(
                    f"no allowed {provider_key(request.provider)} model for this call: {requested} kept, not allowed"
                )
            return RouteDecision(requested, requested, level, "; ".join(reasons), tier_name, allowed=False)
        if refused_at is not None and not used_substitute:
            reasons[refused_at] += f" → {chosen}"
        model = prefix + chosen if chosen != bare else requested
        return RouteDecision(model, requested, level, "; ".join(reasons), tier_name, True, used_substitute)

    def route_batch(
        self, requests: Sequence[RouteRequest], tier: str | None = None, hints: Hints | None = None
    ) -> list[RouteDecision]:
        """`route` for many requests, classifying them in one batch (route-eval, offline analysis)."""
        levels = self.classifier.classify_batch([r.text for r in requests])
        return [self.route(r, tier, hints, complexity=level) for r, level in zip(requests, levels, strict=True)]

    # -- helpers -------------------------------------------------------------------------------------
    def _ladder(self, provider: str, bare: str) -> dict[Complexity, str]:
        """The provider's column, if the requested model is known to be one of the provider's models."""
        ladder = self.table.ladder(provider, bare)
        if not ladder:
            return {}
        key = provider_key(provider)
        if model_family(bare) == key or bare in self._named.get(key, ()):
            return ladder
        return {}

    def _foreign(self, model: str, requested: str, provider: str) -> str | None:
        """Why `model` may not replace `requested` on `provider` (another provider's model), or None."""
        family = model_family(model)
        own = model_family(requested) or provider_key(provider)
        if family is not None and family != own:
            return f"{model} belongs to {family}, this call to {provider}"
        return None

    def _dearer(self, model: str, than: str, provider: str) -> bool:
        """Whether `model` costs more than `than`: by price when both are known, else by table order."""
        if model == than:
            return False
        a, b = self._price(model, provider), self._price(than, provider)
        if a is not None and b is not None:
            return a > b
        key = provider_key(provider)
        order = [self.table.complexity.get(level, {}).get(key) for level in COMPLEXITIES]
        named = [m for m in order if m is not None and m != REQUESTED]
        if model in named and than in named:
            return named.index(model) > named.index(than)
        return False


def _kind(level: Complexity) -> str:
    return {"simple": "cheap", "medium": "mid-price", "complex": "strongest"}[level]


def catalog_price(catalog: PriceCatalog | None = None) -> PriceFn:
    """A price comparison from a `PriceCatalog` (USD for 1k input + 1k output tokens), memoised."""
    from ..pricing import PriceCatalog, UnknownPriceError, Usage

    source = catalog if catalog is not None else PriceCatalog()
    reference = Usage(input_tokens=1000, output_tokens=1000)
    memo: dict[tuple[str, str], Decimal | None] = {}
    lock = threading.Lock()

    def price(model: str, provider: str) -> Decimal | None:
        key = (model, provider)
        if key in memo:
            return memo[key]
        try:
            value: Decimal | None = source.cost(reference, model, provider).total
        except (UnknownPriceError, ValueError):
            value = None
        with lock:
            if len(memo) > 4096:
                memo.clear()
            memo[key] = value
        return value

    return price


def last_user_text(kwargs: Mapping[str, Any]) -> str:
    """The text of the last user message in an OpenAI, Anthropic or google-genai call's arguments."""
    for key in ("messages", "input", "contents", "prompt"):
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)):
            for message in reversed(value):
                role = _get(message, "role")
                if role not in (None, "user"):
                    continue
                if isinstance(message, str):
                    return message
                text = _text(_get(message, "content")) or _text(_get(message, "parts"))
                if text:
                    return text
    return ""


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [_get(part, "text") if not isinstance(part, str) else part for part in content]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""
