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
    """Encoded `KeyValue` bytes → (key, value, flags, value as text), bounded; safe to share between threads.

    The flags (`USAGE`, `SCOPED`) are worked out once per distinct attribute, so the per-span loop
    skips the attributes nobody reads with one test.
    """

    def __init__(self, usage: frozenset[str], scoped: frozenset[str], limit: int = _CACHE_LIMIT) -> None:
        self.usage = usage
        self.scoped = scoped
        self.limit = limit
        self.entries: dict[bytes, tuple[str, Any, int, str]] = {}
        self.key_flags = {key.encode("utf-8"): (USAGE if key in usage else 0) | (SCOPED if key in scoped else 0)
                       for key in usage | scoped}

    def lookup(self, raw: bytes) -> tuple[str, Any, int, str] | None:
        """The cached entry for an encoded attribute, parsing it on a miss; None for an attribute
        nobody reads (told apart by its key bytes alone, so a unique value such as a response id is
        neither parsed nor cached)."""
        found = self.entries.get(raw)
        if found is not None:
            return found
        if raw[:1] == b"\n" and len(raw) > 1 and raw[1] < 128 and raw[2:2 + raw[1]] not in self.key_flags:
            return None  # field 1 (key), a short length, and a key we do not read
        return self.parse(raw)

    def parse(self, raw: bytes) -> tuple[str, Any, int, str]:
        """Parse and cache one encoded attribute (the miss path of `entries.get`)."""
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
        found = (key, parsed, flags, as_text(parsed) if flags & SCOPED else "")
        if len(self.entries) >= self.limit:
            self.entries.clear()  # a crude bound; the working set refills within a few requests
        self.entries[raw] = found
        return found
