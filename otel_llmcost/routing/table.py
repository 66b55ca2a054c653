"""The routing table: which models each tier may use, and which model each complexity gets per provider.

Routing keeps the provider: an OpenAI SDK call can only go to another OpenAI model, so the complexity
mapping is keyed by `gen_ai.provider.name` and every model in it must belong to that provider.

The default table follows the lesson's tier table ("Free: GPT-4o-mini only; Pro: GPT-4o, Claude
Sonnet; Enterprise: all models"), with the cheaper models of each family open to Pro as well (a tier
limits how expensive a model may be, and routing a Pro user's "hello" to gpt-4o-mini must stay allowed):

| tier       | allowed models                                                              |
|------------|-----------------------------------------------------------------------------|
| free       | gpt-4o-mini                                                                 |
| pro        | gpt-4o-mini, gpt-4o, claude-haiku-4-5, claude-sonnet-4-6, gemini-2.5-flash, gemini-2.5-pro |
| enterprise | all                                                                         |

| complexity | openai      | anthropic         | gcp.gemini       |
|------------|-------------|-------------------|------------------|
| simple     | gpt-4o-mini | claude-haiku-4-5  | gemini-2.5-flash |
| medium     | gpt-4o      | claude-sonnet-4-6 | gemini-2.5-pro   |
| complex    | requested   | requested         | requested        |

"requested" keeps the model the call asked for; when the tier does not allow it the router steps down
the column to the best model the tier does allow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ..budget.errors import ConfigError
from .complexity import COMPLEXITIES, Complexity

REQUESTED = "requested"
"""In the complexity mapping: keep the model the call asked for."""

ALL_MODELS = "*"
"""In a tier's allowed list: every model."""

# Providers that serve the same models under another `gen_ai.provider.name`.
_PROVIDER_ALIASES: Mapping[str, str] = {"gcp.gen_ai": "gcp.gemini", "google": "gcp.gemini"}

# Model-name families: which provider's SDK can call a model of that name. Unknown names: None.
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:ft:)?(?:gpt-|chatgpt-|o\d(?:$|-)|davinci|babbage|text-embedding-|codex-)"), "openai"),
    (re.compile(r"^claude-"), "anthropic"),
    (re.compile(r"^(?:models/)?(?:gemini-|gemma-)"), "gcp.gemini"),
)


def provider_key(provider: str) -> str:
    """The key under which the complexity mapping lists a provider's models."""
    return _PROVIDER_ALIASES.get(provider, provider)


def model_family(model: str) -> str | None:
    """The provider whose SDK calls a model of this name (openai, anthropic, gcp.gemini), or None."""
    for pattern, family in _FAMILIES:
        if pattern.match(model):
            return family
    return None


def bare_model(model: str) -> str:
    """The model name without google-genai's ``models/`` prefix."""
    return model[len("models/") :] if model.startswith("models/") else model


@dataclass(frozen=True)
class TierRule:
    """The models one tier may use: exact names or shell patterns (``gpt-4o-mini*``); None: all."""

    name: str
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"{self.name!r} is not a tier name", field="tiers")
        if self.allowed is not None:
            allowed = tuple(self.allowed)
            for i, model in enumerate(allowed):
                if not isinstance(model, str) or not model.strip():
                    raise ConfigError(f"{model!r} is not a model name", field=f"tiers.{self.name}.allowed[{i}]")
            object.__setattr__(self, "allowed", None if ALL_MODELS in allowed else allowed)

    def allows(self, model: str) -> bool:
        """Whether this tier may use `model` (the ``models/`` prefix is ignored)."""
        if self.allowed is None:
            return True
        name = bare_model(model)
        return any(name == pattern or fnmatchcase(name, pattern) for pattern in self.allowed)

    def describe(self) -> str:
        return "all models" if self.allowed is None else ", ".join(self.allowed) or "no models"


@dataclass(frozen=True)
class RoutingTable:
    """Tiers, the complexity → model mapping per provider, and two policies.

    `complexity[level][provider]` is a model name or `REQUESTED`; a provider missing from a level keeps
    the requested model at that level. `default_tier` applies to a tier name the table does not know
    (None: such a tier is not restricted). `upgrade=False` (the default) never routes a call to a
    dearer model than it asked for: routing only saves.
    """

    tiers: Mapping[str, TierRule] = field(default_factory=dict)
    complexity: Mapping[Complexity, Mapping[str, str]] = field(default_factory=dict)
    default_tier: str | None = None
    upgrade: bool = False

    def __post_init__(self) -> None:
        tiers = dict(self.tiers)
        for name, rule in tiers.items():
            if not isinstance(rule, TierRule) or rule.name != name:
                raise ConfigError(f"expected TierRule({name!r}, ...), got {rule!r}", field=f"tiers.{name}")
        levels: dict[Complexity, dict[str, str]] = {}
        for level, mapping in self.complexity.items():
            if level not in COMPLEXITIES:
                raise ConfigError(
                    f"unknown complexity {level!r}; use {', '.join(COMPLEXITIES)}", field=f"complexity.{level}"
                )
            levels[level] = {}
            for provider, model in dict(mapping).items():
                where = f"complexity.{level}.{provider}"
                if not isinstance(provider, str) or not provider:
                    raise ConfigError(f"{provider!r} is not a provider name", field=f"complexity.{level}")
                if not isinstance(model, str) or not model.strip():
                    raise ConfigError(f"expected a model name or {REQUESTED!r}, got {model!r}", field=where)
                model = model.strip()
                family = model_family(model)
                key = provider_key(provider)
                if model != REQUESTED and family is not None and key in _known_families() and family != key:
                    raise ConfigError(
                        f"{model} belongs to {family}; routing keeps a call with its provider ({provider})",
                        field=where,
                    )
                levels[level][key] = model
        if self.default_tier is not None and self.default_tier not in tiers:
            raise ConfigError(
                f"{self.default_tier!r} is not one of the tiers ({', '.join(tiers) or 'none defined'})",
                field="default_tier",
            )
        if not isinstance(self.upgrade, bool):
            raise ConfigError(f"expected true or false, got {self.upgrade!r}", field="upgrade")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "complexity", levels)

    def tier_rule(self, tier: str | None) -> TierRule | None:
        """The rule for `tier`: its own, the default tier's for an unknown name, or None (no limits)."""
        if tier is None:
            return None
        rule = self.tiers.get(tier)
        if rule is None and self.default_tier is not None:
            return self.tiers[self.default_tier]
        return rule

    def ladder(self, provider: str, requested: str) -> dict[Complexity, str]:
        """The model for each complexity on `provider`, with `REQUESTED` resolved to `requested`.

        Empty when the table has no models for this provider. A level the provider is missing from
        keeps the requested model.
        """
        key = provider_key(provider)
        if not any(key in mapping for mapping in self.complexity.values()):
            return {}
        result: dict[Complexity, str] = {}
        for level in COMPLEXITIES:
            model = self.complexity.get(level, {}).get(key, REQUESTED)
            result[level] = requested if model == REQUESTED else model
        return result

    def models(self) -> set[tuple[str, str]]:
        """Every (model, provider) the complexity mapping names."""
        return {
            (model, provider)
            for mapping in self.complexity.values()
            for provider, model in mapping.items()
            if model != REQUESTED
        }


def _known_families() -> set[str]:
    return {family for _, family in _FAMILIES}


DEFAULT_TIERS: Mapping[str, tuple[str, ...] | None] = {
    "free": ("gpt-4o-mini",),
    "pro": ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-sonnet-4-6", "gemini-2.5-flash", "gemini-2.5-pro"),
    "enterprise": None,
}

DEFAULT_COMPLEXITY: Mapping[Complexity, Mapping[str, str]] = {
    "simple": {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gcp.gemini": "gemini-2.5-flash"},
    "medium": {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6", "gcp.gemini": "gemini-2.5-pro"},
    "complex": {"openai": REQUESTED, "anthropic": REQUESTED, "gcp.gemini": REQUESTED},
}


def default_table() -> RoutingTable:
    """The lesson's tiers and complexity routing (see the module docstring)."""
    return RoutingTable(
        tiers={name: TierRule(name, allowed) for name, allowed in DEFAULT_TIERS.items()},
        complexity=DEFAULT_COMPLEXITY,
    )
