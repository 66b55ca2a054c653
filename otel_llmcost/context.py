"""Attribution: who and what a call is for, carried by OpenTelemetry context.

Costs are grouped by user, tenant, tier and feature. The values live in the OpenTelemetry context (not a
global), so they follow threads that copy context and every asyncio task, and nest: an inner
`attributes()` block overrides only the keys it sets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from opentelemetry import context as otel_context

from . import names

_KEY = otel_context.create_key("llmcost-attribution")
_EMPTY: Mapping[str, str] = MappingProxyType({})

_FIELDS = {
    "user_id": names.LLMCOST_USER_ID,
    "tenant_id": names.LLMCOST_TENANT_ID,
    "tier": names.LLMCOST_USER_TIER,
    "feature": names.LLMCOST_FEATURE,
}


@contextmanager
def attributes(
    *,
    user_id: str | None = None,
    tenant_id: str | None = None,
    tier: str | None = None,
    feature: str | None = None,
) -> Iterator[Mapping[str, str]]:
    """Attribute every LLM call made inside the block to a user, tenant, tier and feature.

    The values land on spans as `llmcost.user.id`, `llmcost.tenant.id`, `llmcost.user.tier` and
    `llmcost.feature`; on metrics only tier and feature, unless user attribution is turned on.
    """
    given = {"user_id": user_id, "tenant_id": tenant_id, "tier": tier, "feature": feature}
    merged = dict(current())
    for field, value in given.items():
        if value is not None:
            merged[_FIELDS[field]] = str(value)
    token = otel_context.attach(otel_context.set_value(_KEY, MappingProxyType(merged)))
    try:
        yield merged
    finally:
        otel_context.detach(token)


def current() -> Mapping[str, str]:
    """The attribution in force here, as attribute name → value."""
    value = otel_context.get_value(_KEY)
    return value if isinstance(value, Mapping) else _EMPTY
