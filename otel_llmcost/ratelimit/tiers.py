"""Tiers: named sets of limits (requests per minute, tokens per minute, tokens per day).

A tier is data. `load_tiers` turns a config mapping (as read from YAML or JSON) into tiers::

    tiers = load_tiers({
        "free": {"requests_per_minute": 10, "tokens_per_day": 50_000},
        "pro": {"requests_per_minute": 60, "tokens_per_day": 500_000, "tokens_per_minute": 40_000},
    })

A limit left out (or ``None``) is not enforced. `DEFAULT_TIERS` are the example tiers of the lesson.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

#: The limits a tier may set, in the order the storages keep their buckets.
LIMIT_NAMES: tuple[str, str, str] = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


@dataclass(frozen=True)
class Tier:
    """One tier: each limit is a positive number per period, or ``None`` for no limit."""

    name: str
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    tokens_per_day: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a tier needs a non-empty name, got {self.name!r}")
        for field in LIMIT_NAMES:
            value = getattr(self, field)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(
                    f"tier {self.name!r}: {field} must be a positive number or None (no limit), got {value!r}"
                )

    def limits(self) -> dict[str, float]:
        """The limits this tier enforces, by name (limits set to ``None`` are left out)."""
        return {field: value for field in LIMIT_NAMES if (value := getattr(self, field)) is not None}


#: The lesson's example tiers; tokens per minute are not limited unless configured.
DEFAULT_TIERS: Mapping[str, Tier] = MappingProxyType(
    {
        "free": Tier("free", requests_per_minute=10, tokens_per_day=50_000),
        "pro": Tier("pro", requests_per_minute=60, tokens_per_day=500_000),
        "enterprise": Tier("enterprise", requests_per_minute=300, tokens_per_day=5_000_000),
    }
)

TiersConfig: TypeAlias = Mapping[str, Tier | Mapping[str, Any]] | Iterable[Tier]


def load_tiers(config: TiersConfig) -> dict[str, Tier]:
    """Tiers by name from a mapping ``{name: Tier | {limit: value}}`` or from an iterable of `Tier`.

    Raises `ValueError` naming the tier and field at fault (unknown limit name, non-positive value,
    duplicate or mismatched name, no tiers at all).
    """
    tiers: dict[str, Tier] = {}
    if isinstance(config, Mapping):
        for name, spec in config.items():
            if isinstance(spec, Tier):
                if spec.name != name:
                    raise ValueError(f"tier {name!r} is configured with a Tier named {spec.name!r}")
                tiers[name] = spec
            elif isinstance(spec, Mapping):
                unknown = sorted(set(spec) - set(LIMIT_NAMES) - {"name"})
                if unknown:
                    raise ValueError(
                        f"tier {name!r}: unknown limit {', '.join(map(repr, unknown))}; "
                        f"known limits: {', '.join(LIMIT_NAMES)}"
                    )
                if spec.get("name", name) != name:
                    raise ValueError(f"tier {name!r} is configured with name {spec['name']!r}")
                tiers[name] = Tier(name, **{field: spec.get(field) for field in LIMIT_NAMES})
            else:
                raise ValueError(
                    f"tier {name!r}: expected a mapping of limits or a Tier, got {type(spec).__name__}"
                )
    else:
        for tier in config:
            if not isinstance(tier, Tier):
                raise ValueError(f"expected Tier objects, got {type(tier).__name__}")
            if tier.name in tiers:
                raise ValueError(f"tier {tier.name!r} is configured twice")
            tiers[tier.name] = tier
    if not tiers:
        raise ValueError("no rate-limit tiers configured")
    return tiers
