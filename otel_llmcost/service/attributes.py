"""Reading OTLP `KeyValue` lists the cheap way.

Protobuf wrapper objects cost about a microsecond per field touched, and the ingest path runs over
every attribute of every span: so attributes are read by key first and their values only when the key
is one we use, and values are turned into the plain strings budget scopes compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def any_value(value: Any) -> Any:
    """The Python value of an OTLP `AnyValue` (None when unset; arrays and maps as their text)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value"):
        return str(value)
    return getattr(value, kind)


def as_text(value: Any) -> str:
    """An attribute value as the string budget scopes compare (True → "true", like the SDK's export)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def all_attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    """Every attribute of a small list (resources, metric points) as a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def some_attributes(pairs: Iterable[Any], wanted: frozenset[str] | set[str]) -> dict[str, Any]:
    """Only the attributes named in `wanted` (the fast path for spans)."""
    found: dict[str, Any] = {}
    for kv in pairs:
        key = kv.key
        if key in wanted:
            found[key] = any_value(kv.value)
    return found
