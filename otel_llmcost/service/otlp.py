"""OTLP/HTTP request bodies → protobuf messages: protobuf or JSON, plain or gzip, with limits.

The Collector's `otlphttp` exporter sends gzip-compressed protobuf by default; SDK exporters may send
JSON. Both end up as the same `Export*ServiceRequest` message, so everything after decoding has one
shape to read. OTLP JSON is protobuf's JSON mapping with two differences that `json_format` does not
know: trace and span ids are hex strings (not base64), and enums may be given as integers (which it
accepts). Ids are rewritten before parsing, so a hex id is never silently decoded as base64 garbage.

Every failure is a `PayloadError` carrying the HTTP status to answer (400 malformed, 413 too large,
415 unsupported media type) and a reason the sender can act on.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .lite import LiteTraceRequest

M = TypeVar("M", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class PayloadError(ValueError):
    """A request the service refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters such as charset dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone; 413 once it would inflate past `limit` bytes.

    Inflating in bounded steps is what stops a gzip bomb: a few KiB that expand to gigabytes are
    refused after `limit` bytes, without ever holding more than that.
    """
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "deflate"):
        raise PayloadError(415, f"Content-Encoding {encoding!r} is not supported; send gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadError(413, f"the {coding} body inflates past the limit of {limit} bytes; "
                                    "send smaller batches (the Collector's batch processor: send_batch_max_size)")
        out += inflater.flush()
    except zlib.error as exc:
        raise PayloadError(400, f"the body is not valid {coding} data: {exc}") from None
    if not inflater.eof:
        raise PayloadError(400, f"the {coding} body is truncated")
    if len(out) > limit:
        raise PayloadError(413, f"the {coding} body inflates past the limit of {limit} bytes")
    return out


def _hex_ids(node: Any) -> Any:
    """Rewrite OTLP JSON's hex ids to the base64 that protobuf's JSON mapping expects, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise PayloadError(400, f"{key} {value[:40]!r} is not a hex string (OTLP JSON ids are hex)") from None
            elif isinstance(value, (dict, list)):
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids(item)
    return node


def parse(message_type: type[M], body: bytes, content_type: str | None) -> M:
    """Parse a decompressed body as `message_type` by its media type (protobuf or OTLP JSON)."""
    kind = media_type(content_type)
    message = message_type()
    if kind == PROTOBUF or kind == "application/protobuf":
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise PayloadError(400, f"the body is not a valid {message_type.__name__} protobuf: {exc}") from None
        return message
    if kind == JSON:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PayloadError(400, f"expected a JSON object ({message_type.__name__}), got {type(data).__name__}")
        try:
            json_format.ParseDict(_hex_ids(data), message, ignore_unknown_fields=True)
        except (json_format.ParseError, binascii.Error, ValueError, TypeError) as exc:
            raise PayloadError(400, f"the JSON is not a valid {message_type.__name__}: {exc}") from None
        return message
    raise PayloadError(415, f"Content-Type {content_type!r} is not supported; send {PROTOBUF} or {JSON}")


def decode_metrics(body: bytes, content_type: str | None, encoding: str | None,
                   limit: int) -> ExportMetricsServiceRequest:
    """An OTLP metrics export request from an HTTP body."""
    return parse(ExportMetricsServiceRequest, decompress(body, encoding, limit), content_type)


def decode_traces(body: bytes, content_type: str | None, encoding: str | None, limit: int) -> Any:
    """An OTLP traces export request from an HTTP body, as the trimmed view of `lite.py`.

    JSON is parsed (and checked) as the full message first, then re-encoded for the trimmed view.
    """
    plain = decompress(body, encoding, limit)
    if media_type(content_type) == JSON:
        plain = parse(ExportTraceServiceRequest, plain, content_type).SerializeToString()
    elif media_type(content_type) not in (PROTOBUF, "application/protobuf"):
        raise PayloadError(415, f"Content-Type {content_type!r} is not supported; send {PROTOBUF} or {JSON}")
    try:
        return LiteTraceRequest.FromString(plain)
    except DecodeError as exc:
        raise PayloadError(400, f"the body is not a valid ExportTraceServiceRequest protobuf: {exc}") from None


def encode_response(message: Message, content_type: str | None) -> tuple[bytes, str]:
    """An OTLP response body in the media type the request came in (JSON or protobuf)."""
    if media_type(content_type) == JSON:
        return json_format.MessageToJson(message, indent=None).encode("utf-8"), JSON
    return message.SerializeToString(), PROTOBUF
