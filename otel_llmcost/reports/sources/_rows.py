"""From one call's attributes (store row or span) to a row of the calls frame: shared by the readers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ... import names

_LOOKUP_STATUSES = (names.CACHE_MISS, names.CACHE_EXACT_HIT, names.CACHE_SEMANTIC_HIT)


def _int(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any, default: float = 0.0) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(result) else result


def call_row(
    *,
    start_ns: int,
    end_ns: int | None,
    source: str,
    get: Mapping[str, Any],
    prefix_hashes: tuple[tuple[int, str], ...] | None,
) -> dict[str, Any]:
    """The frame row of one call; `get` maps our attribute names (see `names`) to values."""
    cost = get.get(names.GEN_AI_USAGE_COST)
    known = get.get(names.LLMCOST_PRICE_KNOWN)
    error = get.get(names.ERROR_TYPE)
    status = get.get(names.LLMCOST_CACHE_STATUS)
    has_usage = get.get(names.GEN_AI_USAGE_INPUT_TOKENS) is not None or get.get(names.GEN_AI_USAGE_OUTPUT_TOKENS) is not None
    unpriced = (known is not None and not bool(known)) or (known is None and cost is None and has_usage)
    write = get.get(names.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
    if write is None:
        write = get.get(names.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)
    request_model = get.get(names.GEN_AI_REQUEST_MODEL)
    return {
        "time": start_ns,
        "source": source,
        "calls": 1,
        "provider": get.get(names.GEN_AI_PROVIDER_NAME),
        "operation": get.get(names.GEN_AI_OPERATION_NAME),
        "request_model": request_model,
        "model": get.get(names.GEN_AI_RESPONSE_MODEL) or request_model,
        "user": get.get(names.LLMCOST_USER_ID),
        "tenant": get.get(names.LLMCOST_TENANT_ID),
        "tier": get.get(names.LLMCOST_USER_TIER),
        "feature": get.get(names.LLMCOST_FEATURE),
        "input_tokens": _int(get.get(names.GEN_AI_USAGE_INPUT_TOKENS)),
        "cached_tokens": _int(get.get(names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)),
        "cache_write_tokens": _int(write),
        "output_tokens": _int(get.get(names.GEN_AI_USAGE_OUTPUT_TOKENS)),
        "reasoning_tokens": _int(get.get(names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)),
        "cost_usd": 0.0 if unpriced else _float(cost),
        "unpriced_calls": int(unpriced),
        "saved_usd": _float(get.get(names.LLMCOST_COST_SAVED)),
        "cache_lookups": int(status in _LOOKUP_STATUSES),
        "exact_hits": int(status == names.CACHE_EXACT_HIT),
        "semantic_hits": int(status == names.CACHE_SEMANTIC_HIT),
        "errors": int(error is not None),
        "batch": bool(get.get(names.LLMCOST_BATCH)),
        "duration_s": (end_ns - start_ns) / 1e9 if end_ns else float("nan"),
        "cache_similarity": _float(get.get(names.LLMCOST_CACHE_SIMILARITY), float("nan")),
        "complexity": get.get(names.LLMCOST_ROUTE_COMPLEXITY),
        "query_hash": get.get(names.LLMCOST_QUERY_HASH),
        "prefix_hashes": prefix_hashes,
    }
