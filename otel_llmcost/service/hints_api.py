"""`/v1/hints`: the budget engine's hints as JSON, for one call's attribution or for every scope.

`GET /v1/hints?user=alice&tier=pro&feature=search` answers what the engine's `hints()` would say for a
call with those attributes (dimensions as in budget scopes: user, tenant, tier, feature, model,
provider, or any dotted attribute name). `GET /v1/hints` with no query lists every budget scope that
has spend in its window, with the dimensions it applies to (`match`), so a client can answer for any
call locally between two polls — that is what `otel_llmcost.hints.HintsClient` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from ..budget.engine import BudgetEngine, Hints
from ..budget.levels import Level
from ..budget.policy import DIMENSIONS, GLOBAL_SCOPE_KEY


def scope_match(scope_key: str) -> dict[str, str]:
    """The dimensions a scope key fixes: ``tier=free,user=al%2Cice`` → {"tier": "free", "user": "al,ice"}."""
    if scope_key == GLOBAL_SCOPE_KEY:
        return {}
    found: dict[str, str] = {}
    for part in scope_key.split(","):
        dimension, _, value = part.partition("=")
        found[dimension] = unquote(value)
    return found


def hints_json(hints: Hints) -> dict[str, Any]:
    """A `Hints` as JSON-ready data (the inverse of `otel_llmcost.hints.hints_from_json`)."""
    return {
        "level": hints.level.label,
        "budget": hints.budget,
        "scope_key": hints.scope_key,
        "utilization": hints.utilization,
        "substitutes": dict(hints.substitutes),
        "cache_only": hints.cache_only,
        "allowed_models": list(hints.allowed_models) if hints.allowed_models is not None else None,
        "reset_at": hints.reset_at.isoformat() if hints.reset_at is not None else None,
    }


def query_attributes(query: Mapping[str, list[str]]) -> dict[str, str]:
    """Call attributes from query parameters; ValueError naming an unknown dimension."""
    attributes: dict[str, str] = {}
    for name, values in query.items():
        if name in DIMENSIONS:
            attributes[DIMENSIONS[name][0]] = values[-1]
        elif "." in name:
            attributes[name] = values[-1]
        else:
            raise ValueError(f"unknown dimension {name!r}; use {', '.join(DIMENSIONS)} or a dotted attribute name")
    return attributes


def hints_payload(engine: BudgetEngine, query: Mapping[str, list[str]]) -> dict[str, Any]:
    """The `/v1/hints` answer (see the module doc)."""
    now = datetime.now(timezone.utc).isoformat()
    if query:
        return {"generated_at": now, "hints": hints_json(engine.hints(query_attributes(query)))}
    scopes = []
    substitutes = dict(engine.config.routing.substitutes)
    for status in engine.state():
        budget = engine.config.budget(status.budget)
        throttled = status.level >= Level.THROTTLE
        scopes.append({
            "budget": status.budget,
            "scope_key": status.scope_key,
            "match": scope_match(status.scope_key),
            "level": status.level.label,
            "utilization": status.utilization,
            "spend": str(status.spend),
            "limit": str(status.limit),
            "stop_limit": str(budget.stop_limit),
            "cache_only": status.level >= Level.STOP,
            "allowed_models": list(budget.allowed_models) if throttled and budget.allowed_models else None,
            "reset_at": status.window_end.isoformat(),
        })
    return {"generated_at": now, "substitutes": substitutes, "scopes": scopes}
