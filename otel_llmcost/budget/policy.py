"""Budget policy: what is budgeted, for whom, over which window, and what each level means.

Declared in code with the dataclasses here, or in the YAML config file (`load_budget_config`). A
budget's scope says whose spend counts against it:

* global (no scope): every call;
* ``Scope(match={"tenant": "acme"})`` / ``scope: {tenant: acme}``: one budget for the calls whose
  attribute equals the value;
* ``Scope(by=("user",))`` / ``scope: {by: user}``: one budget *per distinct value* (per user id here);
  ``by`` may list several dimensions and combine with fixed ones: ``{by: user, tier: free}`` is one
  budget per user of the free tier.

Dimensions are `user`, `tenant`, `tier`, `feature`, `model`, `provider` (our attribution attributes and
the GenAI model/provider), or any attribute name with a dot in it, used as it is. A call that lacks a
`by` attribute is not counted against that budget. The scope key names the budget instance in the
ledger, alerts and state: ``global``, ``tenant=acme``, ``tier=free,user=alice`` (values %-escaped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal
from urllib.parse import quote

from .. import names
from ._money import parse_decimal
from .errors import ConfigError
from .ledger.backlog import BacklogPolicy
from .levels import ForecastPolicy, Thresholds
from .windows import CalendarWindow, WindowSpec

DIMENSIONS: Mapping[str, tuple[str, ...]] = {
    "user": (names.LLMCOST_USER_ID,),
    "tenant": (names.LLMCOST_TENANT_ID,),
    "tier": (names.LLMCOST_USER_TIER,),
    "feature": (names.LLMCOST_FEATURE,),
    "model": (names.GEN_AI_REQUEST_MODEL, names.GEN_AI_RESPONSE_MODEL),
    "provider": (names.GEN_AI_PROVIDER_NAME,),
}
"""Short dimension names → the attributes read for them, first present wins."""

GLOBAL_SCOPE_KEY = "global"
DEFAULT_RESERVATION_TTL = timedelta(minutes=10)
_BUDGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def _check_dimension(dimension: object, where: str) -> str:
    if not isinstance(dimension, str) or not (dimension in DIMENSIONS or "." in dimension):
        raise ConfigError(
            f"unknown dimension {dimension!r}; use {', '.join(DIMENSIONS)} or an attribute name with a dot",
            field=where,
        )
    return dimension


def _lookup(attributes: Mapping[str, str], dimension: str) -> str | None:
    for attribute in DIMENSIONS.get(dimension, (dimension,)):
        value = attributes.get(attribute)
        if value is not None and value != "":
            return str(value)
    return None


def _escape(value: str) -> str:
    return quote(value, safe=" @:/+-_.~!$'()*;")


@dataclass(frozen=True)
class Scope:
    """Whose spend a budget counts: `match` fixes dimensions, `by` splits it per distinct value."""

    by: tuple[str, ...] = ()
    match: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by = (self.by,) if isinstance(self.by, str) else tuple(self.by)
        for i, dimension in enumerate(by):
            _check_dimension(dimension, f"scope.by[{i}]")
        if len(set(by)) != len(by):
            raise ConfigError(f"{list(by)} names a dimension twice", field="scope.by")
        match: dict[str, str] = {}
        for dimension, value in dict(self.match).items():
            _check_dimension(dimension, f"scope.{dimension}")
            if dimension in by:
                raise ConfigError(f"{dimension!r} is both fixed and in 'by'", field=f"scope.{dimension}")
            if value is None or isinstance(value, (Mapping, list, tuple)) or str(value) == "":
                raise ConfigError(f"{value!r} is not a single value", field=f"scope.{dimension}")
            match[dimension] = str(value)
        object.__setattr__(self, "by", by)
        object.__setattr__(self, "match", match)

    def __hash__(self) -> int:
        return hash((self.by, tuple(self.match.items())))

    @property
    def is_global(self) -> bool:
        return not self.by and not self.match

    def key_for(self, attributes: Mapping[str, str]) -> str | None:
        """The scope key that a call with these attributes counts against, or None if none."""
        parts: list[tuple[str, str]] = []
        for dimension, wanted in self.match.items():
            if _lookup(attributes, dimension) != wanted:
                return None
            parts.append((dimension, wanted))
        for dimension in self.by:
            value = _lookup(attributes, dimension)
            if value is None:
                return None
            parts.append((dimension, value))
        if not parts:
            return GLOBAL_SCOPE_KEY
        return ",".join(f"{d}={_escape(v)}" for d, v in sorted(parts))

    def fixed_key(self) -> str | None:
        """The one scope key of a scope without `by` (None when it splits per value)."""
        if self.by:
            return None
        if not self.match:
            return GLOBAL_SCOPE_KEY
        return ",".join(f"{d}={_escape(v)}" for d, v in sorted(self.match.items()))

    def describe(self) -> str:
        if self.is_global:
            return "global"
        fixed = [f"{d}={v}" for d, v in self.match.items()]
        split = [f"per {d}" for d in self.by]
        return ", ".join(fixed + split)


@dataclass(frozen=True)
class Budget:
    """An amount of USD that the matching calls may spend per window.

    `allowed_models`, when set, is passed to callers in the hints once the budget reaches `throttle`:
    the models they may still use.
    """

    name: str
    amount: Decimal
    window: WindowSpec = CalendarWindow()
    scope: Scope = Scope()
    thresholds: Thresholds = Thresholds()
    forecast: ForecastPolicy | None = ForecastPolicy()
    allowed_models: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _BUDGET_NAME.match(self.name):
            raise ConfigError(
                f"{self.name!r} is not a budget name (letters, digits, '_', '.', '-'; up to 100)",
                field="name",
            )
        amount = parse_decimal(self.amount)
        if amount is None or amount <= 0:
            raise ConfigError(f"{self.amount!r} is not a positive amount of USD", field="amount")
        object.__setattr__(self, "amount", amount)
        if self.allowed_models is not None:
            models = (self.allowed_models,) if isinstance(self.allowed_models, str) else self.allowed_models
            if not models or not all(isinstance(m, str) and m for m in models):
                raise ConfigError(
                    f"{self.allowed_models!r} is not a list of model names", field="allowed_models"
                )
            object.__setattr__(self, "allowed_models", tuple(models))

    @property
    def stop_limit(self) -> Decimal:
        """USD at which reservations are refused: amount × stop threshold."""
        return self.amount * self.thresholds.stop


@dataclass(frozen=True)
class Routing:
    """Model substitutions offered in the hints once a budget reaches `throttle`."""

    substitutes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        table = dict(self.substitutes)
        for source, target in table.items():
            if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
                raise ConfigError(f"{source!r}: {target!r} is not model → model", field="routing.substitutes")
        object.__setattr__(self, "substitutes", table)

    def __hash__(self) -> int:
        return hash(tuple(self.substitutes.items()))


WebhookFormat = Literal["json", "slack"]


@dataclass(frozen=True)
class WebhookConfig:
    """A webhook to post alerts to; the signing secret is read from the environment variable named."""

    url: str
    format: WebhookFormat = "json"
    secret_env: str | None = None
    timeout: float = 5.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{self.url!r} is not an http(s) URL", field="url")
        if self.format not in ("json", "slack"):
            raise ConfigError(f"{self.format!r} is not json or slack", field="format")
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigError(f"{self.max_attempts!r} is not a positive whole number", field="max_attempts")
        timeout = parse_decimal(self.timeout)
        if timeout is None or timeout <= 0:
            raise ConfigError(f"{self.timeout!r} is not a positive number of seconds", field="timeout")
        object.__setattr__(self, "timeout", float(timeout))


@dataclass(frozen=True)
class AlertsConfig:
    """Where alerts go: the log (on by default) and any webhooks."""

    log: bool = True
    webhooks: tuple[WebhookConfig, ...] = ()


@dataclass(frozen=True)
class BudgetConfig:
    """Everything the budget engine needs: budgets, routing table, alert sinks, ledger URI."""

    budgets: tuple[Budget, ...] = ()
    routing: Routing = Routing()
    alerts: AlertsConfig = AlertsConfig()
    ledger: str | None = None
    reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL
    source: str | None = None
    backlog: BacklogPolicy | None = None
    """How spend waits for the ledger during an outage (None: the engine's default, memory only)."""

    def __post_init__(self) -> None:
        budgets = tuple(self.budgets)
        seen: set[str] = set()
        for i, budget in enumerate(budgets):
            if not isinstance(budget, Budget):
                raise ConfigError(f"{budget!r} is not a Budget", field=f"budgets[{i}]")
            if budget.name in seen:
                raise ConfigError(f"budget name {budget.name!r} is used twice", field=f"budgets[{i}].name")
            seen.add(budget.name)
        object.__setattr__(self, "budgets", budgets)
        if self.reservation_ttl.total_seconds() <= 0:
            raise ConfigError(f"{self.reservation_ttl} is not a positive duration", field="reservation_ttl")

    def budget(self, name: str) -> Budget:
        """The budget called `name` (KeyError if none)."""
        for budget in self.budgets:
            if budget.name == name:
                return budget
        raise KeyError(name)
