"""A trimmed view of OTLP trace requests, for the ingest hot path.

Reading a span's attributes through the full OTLP messages costs about a microsecond per attribute
(one wrapper object per `KeyValue` and one per `AnyValue`). These messages share the wire format of
`ExportTraceServiceRequest` but declare only the fields the processor reads, and declare span
attributes as raw `bytes`: each encoded `KeyValue` arrives as one bytes object, which is parsed once
and cached — most attributes of GenAI spans (model, provider, operation, user, feature, server) repeat
exactly from span to span. Fields not declared here are skipped by the protobuf runtime in C.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from .attributes import as_text

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "otel_llmcost.otlplite"
_CACHE_LIMIT = 200_000


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="otel_llmcost_otlp_lite.proto", package=_PACKAGE,
                                              syntax="proto3")

    def message(name: str, fields: list[tuple[str, int, int, bool, str | None]]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind,
                                    label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"

    # Field numbers are those of opentelemetry/proto/trace/v1/trace.proto.
    message("Span", [("trace_id", 1, _F.TYPE_BYTES, False, None), ("span_id", 2, _F.TYPE_BYTES, False, None),
                     ("parent_span_id", 4, _F.TYPE_BYTES, False, None),
                     ("end_time_unix_nano", 8, _F.TYPE_FIXED64, False, None),
                     ("attributes", 9, _F.TYPE_BYTES, True, None)])
    message("ScopeSpans", [("scope", 1, _F.TYPE_BYTES, False, None), ("spans", 2, _F.TYPE_MESSAGE, True, "Span")])
    message("ResourceSpans", [("resource", 1, _F.TYPE_BYTES, False, None),
                              ("scope_spans", 2, _F.TYPE_MESSAGE, True, "ScopeSpans")])
    message("ExportTraceServiceRequest", [("resource_spans", 1, _F.TYPE_MESSAGE, True, "ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


LiteTraceRequest: Any = _build()
"""Parses an OTLP `ExportTraceServiceRequest` body into the trimmed view (see the module doc)."""


USAGE = 1
"""Flag of a cached attribute that carries usage, cost, model or provider."""
SCOPED = 2
"""Flag of a cached attribute that a budget scope reads."""


class AttributeCache:
    """Encoded `KeyValue` bytes → what the ingest loop needs of it, bounded; safe to share between threads.

    Three tables, so that a span whose attributes were all seen before is read with C-level `map`s and
    no Python step per attribute: `known` (every cached attribute, read or not), `usage` (key, value) of
    the attributes pricing reads, `scoped` (key, value as text) of those budget scopes read. Attributes
    nobody reads are cached only while their key has shown few distinct values (a temperature or server
    address repeats; a response id never does, and would only churn the cache). `tables` hands out the
    current tables once per request: when they grow past `limit` it starts new ones rather than clearing
    them, so a request on another thread never sees an entry vanish between its `known` test and its reads.
    """

    def __init__(self, usage: frozenset[str], scoped: frozenset[str], limit: int = _CACHE_LIMIT,
                 unread_values: int = 256) -> None:
        self.usage = usage
        self.scoped = scoped
        self.limit = limit
        self.unread_values = unread_values
        self.key_flags = {key.encode("utf-8"): (USAGE if key in usage else 0) | (SCOPED if key in scoped else 0)
                          for key in usage | scoped}
        self._fresh()

    def _fresh(self) -> None:
        self.known: set[bytes] = set()
        self.usage_pairs: dict[bytes, tuple[str, Any]] = {}
        self.scoped_pairs: dict[bytes, tuple[str, str]] = {}
        self.unread_seen: dict[bytes, int] = {}

    def tables(self) -> tuple[set[bytes], dict[bytes, tuple[str, Any]], dict[bytes, tuple[str, str]]]:
        """The (known, usage, scoped) tables a request reads and fills (new ones once over the limit)."""
        if len(self.known) >= self.limit:
            self._fresh()  # a crude bound; the working set refills within a few requests
        return self.known, self.usage_pairs, self.scoped_pairs

    def unread(self, raw: bytes) -> bool:
        """Whether an attribute outside the tables is one nobody reads (told by its key bytes alone, so a
        unique value such as a response id is never parsed); remembers it while its key has few values."""
        if raw[:1] != b"\n" or len(raw) < 2 or raw[1] >= 128:
            return False  # not the usual short key: let `parse` decide
        key = raw[2:2 + raw[1]]
        if key in self.key_flags:
            return False
        seen = self.unread_seen.get(key, 0)
        if seen < self.unread_values:
            self.unread_seen[key] = seen + 1
            self.known.add(raw)
        return True

    def parse(self, raw: bytes) -> tuple[str, Any, int, str]:
        """One encoded attribute as (key, value, flags, value as text); the caller caches it (`remember`)."""
        try:
            pair = KeyValue.FromString(raw)
        except DecodeError as exc:
            raise ValueError(f"an attribute is not a valid KeyValue: {exc}") from None
        value = pair.value
        kind = value.WhichOneof("value")
        if kind is None:
            parsed: Any = None
        elif kind in ("array_value", "kvlist_value"):
            parsed = str(getattr(value, kind))
        else:
            parsed = getattr(value, kind)
        key = pair.key
        flags = (USAGE if key in self.usage else 0) | (SCOPED if key in self.scoped else 0)
        return key, parsed, flags, as_text(parsed) if flags & SCOPED else ""

    def remember(self, raw: bytes, entry: tuple[str, Any, int, str],
                 tables: tuple[set[bytes], dict[bytes, tuple[str, Any]], dict[bytes, tuple[str, str]]]) -> None:
        """Cache a parsed attribute in a request's tables (those it read from: see the class doc)."""
        known, usage, scoped = tables
        key, value, flags, text = entry
        if flags & USAGE:
            usage[raw] = (key, value)
        if flags & SCOPED:
            scoped[raw] = (key, text)
        known.add(raw)
