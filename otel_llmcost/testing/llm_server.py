"""A loopback HTTP server that speaks the OpenAI, Anthropic and Gemini wire formats.

Why it exists: our instrumentation must be tested against what the *real* SDK clients do — their
request building, response parsing, streaming iterators, retries and exception classes — without an
API key, a network or a bill. Stubbing SDK methods would test our guesses about the SDKs; this server
lets the unmodified clients talk HTTP to something that answers like the providers, so every code path
between the app and the socket is the genuine one. The same server backs `otel-llmcost demo` (a
realistic workload with no key) and the overhead benchmarks (so it is lean and turns Nagle off).

Point the clients at it by base URL::

    with LoopbackLLMServer() as server:
        openai.OpenAI(base_url=server.openai_base_url, api_key="test")
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test")
        genai.Client(api_key="test", http_options=types.HttpOptions(base_url=server.google_base_url))

Unscripted answers are deterministic: about one token per four characters of prompt text (minimum 1),
a reply text derived from the last user message, output capped by the request's token limit, the
request's model echoed back, and prompt caching billed the way each provider bills it. `script()`
queues replies that override usage, text, model or status, add a delay, or cut a stream mid-way.

Endpoints (JSON, and SSE where the API streams):

* OpenAI: POST /v1/chat/completions, /v1/responses, /v1/embeddings (float or base64 — the SDK asks for
  base64 by default), /v1/files, /v1/batches; GET /v1/files/{id}, /v1/files/{id}/content, /v1/batches/{id}.
* Anthropic: POST /v1/messages, /v1/messages/count_tokens, /v1/messages/batches; GET
  /v1/messages/batches/{id} and its /results (JSONL). Batches end at once: created "in_progress",
  retrieved "ended".
* Gemini Developer API, under /v1, /v1beta or /v1alpha (google-genai 3.x uses /v1 by default):
  models/{model}:generateContent, :streamGenerateContent (?alt=sse), :batchEmbedContents (what
  `embed_content` calls), :embedContent, :countTokens; POST cachedContents.

Only the standard library is used, so the module can ship in the package and run anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http
import itertools
import json
import math
import os
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl

__all__ = ["LoopbackLLMServer", "RecordedRequest", "Reply"]

OPENAI = "openai"
ANTHROPIC = "anthropic"
GOOGLE = "google"
_PROVIDERS = (OPENAI, ANTHROPIC, GOOGLE)

#: OpenAI caches prompt prefixes from 1024 tokens on, in steps of 128 tokens.
OPENAI_CACHE_MIN_TOKENS = 1024
OPENAI_CACHE_STEP_TOKENS = 128
#: Anthropic writes no cache entry for a prefix shorter than this (the documented minimum for most models).
ANTHROPIC_CACHE_MIN_TOKENS = 1024
#: Anthropic looks back this many blocks before a breakpoint for an earlier cache entry.
ANTHROPIC_CACHE_LOOKBACK_BLOCKS = 20
_ANTHROPIC_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
#: Token count assumed for a Gemini `cachedContent` name this server did not create.
GOOGLE_UNKNOWN_CACHE_TOKENS = 2048
DEFAULT_EMBEDDING_DIMENSIONS = 8
_MEMORY_LIMIT = 50_000  # prefix hashes kept per provider; old ones are forgotten first

# Short delay advertised on retryable errors: the SDKs honour it, so a test that lets them retry a
# scripted 429/5xx waits milliseconds instead of their default back-off of half a second and more.
_RETRY_AFTER_MS = "10"
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass
class Reply:
    """A scripted answer for the next request(s) of a provider; anything left None is computed as usual.

    `usage` holds provider-native usage fields that replace the computed ones key by key (nested dicts
    merged); totals are recomputed from the parts unless given. `error_body` replaces the default
    provider error JSON for a status >= 400. `cut_after_chunks` sends that many SSE events of a stream,
    then closes the connection without the rest (a non-streaming request gets no response at all).
    `times` is how many matching requests the script answers before it is used up. `finish` replaces the
    computed finish reason (OpenAI `finish_reason`, Anthropic `stop_reason`, Gemini `finishReason`), e.g.
    `content_filter`, `refusal` or `SAFETY`.
    """

    provider: str | None = None
    status: int = 200
    usage: dict[str, Any] | None = None
    model: str | None = None
    text: str | None = None
    error_body: dict[str, Any] | None = None
    delay: float = 0.0
    cut_after_chunks: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    finish: str | None = None

    def __post_init__(self) -> None:
        if self.provider is not None and self.provider not in _PROVIDERS:
            raise ValueError(f"provider must be None or one of {_PROVIDERS}, not {self.provider!r}")
        if self.times < 1:
            raise ValueError("times must be at least 1")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, so tests can check what the SDK (and we) actually sent.

    `path` has no query string (that is in `query`); header names are lower-case; `json` is the parsed
    body or None when the body was not JSON (then see `body`).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    query: dict[str, str] = field(default_factory=dict)
    provider: str | None = None
    body: bytes = field(default=b"", repr=False)


# --------------------------------------------------------------------------------------------------
# Text and token helpers


def _tokens(chars: int) -> int:
    """Prompt tokens for a character count: about four characters a token, never fewer than one."""
    return max(1, -(-chars // 4))


def _out_tokens(text: str) -> int:
    return -(-len(text) // 4)


_TEXT_KEYS = frozenset({"text", "content", "input", "arguments", "instructions", "output", "thinking"})
_SKIP_KEYS = frozenset({"cache_control", "image_url", "source", "inlineData", "inline_data", "fileData",
                        "file_data", "input_audio", "type", "role", "id", "signature"})


def _collect_text(value: Any, out: list[str]) -> list[str]:
    """Append every prompt string found in a message-like JSON value (images and metadata skipped)."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _SKIP_KEYS:
                continue
            if isinstance(item, str):
                if key in _TEXT_KEYS:
                    out.append(item)
            elif isinstance(item, (dict, list)):
                _collect_text(item, out)
    return out


def _joined_text(value: Any) -> str:
    return " ".join(_collect_text(value, []))


def _last_user_text(messages: Any, role_key: str = "role", user: str = "user") -> str:
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get(role_key, user) == user:
                return _joined_text(message)
    return ""


_SENTENCES = (
    "The short answer is yes, with a few conditions worth checking first.",
    "Most customers find the standard option covers what they need.",
    "You can do this online in a couple of minutes, or ask us to help.",
    "Keep your receipt or order number at hand; it makes everything faster.",
    "If anything is unclear, reply here and we will look at your case together.",
    "There is no extra charge for this in most cases.",
    "Our policy was updated this year, so older guides may differ.",
    "Processing usually takes three to five business days.",
    "For items bought in a store, the same rules apply as online.",
    "We recommend checking the product page for the details of your model.",
    "Please note that sale items can have different terms.",
    "Support is available every day from eight in the morning to eight in the evening.",
)


def _default_text(question: str) -> str:
    """A deterministic, plausible reply to a question: same question, same answer, any run."""
    topic = " ".join(question.split())[:80].rstrip(" ?.!") or "your request"
    seed = zlib.crc32(topic.encode("utf-8"))
    first, count = seed % len(_SENTENCES), 1 + (seed >> 8) % 3
    sentences = [_SENTENCES[(first + 5 * i) % len(_SENTENCES)] for i in range(count)]  # 5 is coprime to 12
    return f'Thanks for asking about "{topic}". ' + " ".join(sentences)


def _words(text: str) -> list[str]:
    """Stream pieces: one word (with its leading space) each, as token-by-token streams look."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or [text]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _total(usage: dict[str, Any], override: dict[str, Any], total_key: str, parts: Iterable[str]) -> None:
    """Recompute a total from its parts after an override, unless the override set the total itself."""
    if total_key in override:
        return
    values = [usage.get(part, 0) for part in parts]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        usage[total_key] = sum(values)


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one instance: json.dumps would build one per call


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


def _embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for a text, exactly representable in float32 (so base64 and JSON agree)."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}i", raw[: dimensions * 4])
    values = [v / 2**31 for v in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


# --------------------------------------------------------------------------------------------------
# Provider errors


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request (scripted by the loopback server)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Permission denied."),
    404: ("invalid_request_error", "model_not_found", "The requested resource does not exist."),
    408: ("server_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again shortly."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    401: "invalid x-api-key", 404: "Not found", 429: "Number of request tokens has exceeded your rate limit.",
    500: "Internal server error", 529: "Overloaded",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def _error_body(provider: str | None, status: int, request_id: str, message: str | None = None) -> dict[str, Any]:
    """The error JSON each provider really sends, so each SDK maps it to its own exception class."""
    if provider == OPENAI:
        kind, code, default = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}."))
        return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    if provider == ANTHROPIC:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        text = message or _ANTHROPIC_MESSAGES.get(status, f"Error {status} (scripted by the loopback server)")
        return {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}
    if provider == GOOGLE:
        state = _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message or f"{state} (scripted by the loopback server)",
                          "status": state}}
    return {"error": {"code": status, "message": message or "Not found"}}


# --------------------------------------------------------------------------------------------------
# Per-request plumbing


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    events: list[bytes] | None = None  # SSE events, each already framed; sent chunked
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Call:
    """Everything a route handler needs about one request."""

    server: LoopbackLLMServer
    provider: str | None
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    params: tuple[str, ...]
    reply: Reply | None

    def json_body(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise _BadRequest("We could not parse the JSON body of your request.")
        return self.body

    def answer(self, question: str, limit: Any) -> tuple[str, bool]:
        """Reply text (scripted or derived from the question), cut to the request's output-token limit."""
        text = self.reply.text if self.reply and self.reply.text is not None else _default_text(question)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 and _out_tokens(text) > limit:
            return text[: limit * 4], True
        return text, False

    def model(self, requested: str) -> str:
        return self.reply.model if self.reply and self.reply.model is not None else requested

    def finish(self, computed: str) -> str:
        return self.reply.finish if self.reply and self.reply.finish is not None else computed

    def usage(self, computed: dict[str, Any], total_key: str | None = None,
              parts: Iterable[str] = ()) -> dict[str, Any]:
        override = self.reply.usage if self.reply else None
        if not override:
            return computed
        usage = _merge(computed, override)
        if total_key:
            _total(usage, override, total_key, parts)
        return usage

    def json(self, obj: Any, status: int = 200) -> _Response:
        return _Response(status=status, body=_dumps(obj))


# --------------------------------------------------------------------------------------------------
# OpenAI


def _openai_chat_plan(call: _Call, body: dict[str, Any]) -> dict[str, Any]:
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("Invalid 'messages': empty array. Expected an array with minimum length 1.")
    pieces = [json.dumps(body["tools"])] if body.get("tools") else []
    for message in messages:
        _collect_text(message, pieces)
    prompt = _tokens(sum(map(len, pieces)))
    cached = call.server._openai_cached(model, pieces, prompt)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    text, truncated = call.answer(_last_user_text(messages), limit)
    completion = _out_tokens(text)
    usage = call.usage({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }, "total_tokens", ("prompt_tokens", "completion_tokens"))
    return {"id": "chatcmpl-" + call.server._new_id(), "created": int(time.time()), "model": call.model(model),
            "text": text, "finish": call.finish("length" if truncated else "stop"), "usage": usage}


def _openai_chat_json(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": plan["id"], "object": "chat.completion", "created": plan["created"], "model": plan["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": plan["text"], "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": plan["finish"]}],
        "usage": plan["usage"], "service_tier": "default", "system_fingerprint": "fp_loopback",
    }


def _openai_chat(call: _Call) -> _Response:
    body = call.json_body()
    plan = _openai_chat_plan(call, body)
    if not body.get("stream"):
        return call.json(_openai_chat_json(plan))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {"id": plan["id"], "object": "chat.completion.chunk", "created": plan["created"],
            "model": plan["model"], "service_tier": "default", "system_fingerprint": "fp_loopback"}
    if include_usage:
        head["usage"] = None  # as the real API: null on every chunk but the last

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = dict(head)
        data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return b"data: " + _dumps(data) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in _words(plan["text"]) if piece]
    events.append(chunk({}, plan["finish"]))
    if include_usage:
        events.append(b"data: " + _dumps({**head, "choices": [], "usage": plan["usage"]}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return _Response(events=events, content_type="text/event-stream; charset=utf-8")


def _openai_responses_plan(call: _Call, body: dict[str, Any]) -> dict[str, Any]:
    model, given = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        raise _BadRequest("Missing required parameter: 'model'.")
    pieces: list[str] = []
    if isinstance(body.get("instructions"), str):
        pieces.append(body["instructions"])
    if body.get("tools"):
        pieces.append(json.dumps(body["tools"]))
    _collect_text(given, pieces)
    prompt = _tokens(sum(map(len, pieces)))
    cached = call.server._openai_cached(model, pieces, prompt)
    text, truncated = call.answer(_last_user_text(given), body.get("max_output_tokens"))
    output = _out_tokens(text)
    usage = call.usage({
        "input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }, "total_tokens", ("input_tokens", "output_tokens"))
    return {"id": "resp_" + call.server._new_id(24), "msg_id": "msg_" + call.server._new_id(24),
            "created": int(time.time()), "model": call.model(model), "text": text, "truncated": truncated,
            "usage": usage, "body": body}


def _openai_response_obj(plan: dict[str, Any], done: bool) -> dict[str, Any]:
    body = plan["body"]
    status = ("incomplete" if plan["truncated"] else "completed") if done else "in_progress"
    output = [_openai_message_item(plan, plan["text"], "incomplete" if plan["truncated"] else "completed")] \
        if done else []
    return {
        "id": plan["id"], "object": "response", "created_at": plan["created"], "status": status,
        "background": False, "completed_at": plan["created"] if done and not plan["truncated"] else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and plan["truncated"] else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": plan["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"), "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None}, "safety_identifier": None, "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []), "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": plan["usage"] if done else None, "user": None, "metadata": body.get("metadata") or {},
    }


def _openai_message_item(plan: dict[str, Any], text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    return {"id": plan["msg_id"], "type": "message", "status": status, "content": content, "role": "assistant"}


def _openai_responses(call: _Call) -> _Response:
    body = call.json_body()
    plan = _openai_responses_plan(call, body)
    if not body.get("stream"):
        return call.json(_openai_response_obj(plan, done=True))
    sequence = itertools.count()
    ids = {"item_id": plan["msg_id"], "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}

    def event(kind: str, **data: Any) -> bytes:
        payload = {"type": kind, **data, "sequence_number": next(sequence)}
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"

    final = _openai_response_obj(plan, done=True)
    events = [
        event("response.created", response=_openai_response_obj(plan, done=False)),
        event("response.in_progress", response=_openai_response_obj(plan, done=False)),
        event("response.output_item.added", output_index=0, item=_openai_message_item(plan, None, "in_progress")),
        event("response.content_part.added", **ids, part=part),
    ]
    events += [event("response.output_text.delta", **ids, delta=piece, logprobs=[])
               for piece in _words(plan["text"]) if piece]
    events += [
        event("response.output_text.done", **ids, text=plan["text"], logprobs=[]),
        event("response.content_part.done", **ids, part={**part, "text": plan["text"]}),
        event("response.output_item.done", output_index=0, item=final["output"][0]),
        event("response.incomplete" if plan["truncated"] else "response.completed", response=final),
    ]
    return _Response(events=events, content_type="text/event-stream; charset=utf-8")


def _openai_embeddings_json(call: _Call, body: dict[str, Any]) -> dict[str, Any]:
    model, given = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter")
    if isinstance(given, str) or (isinstance(given, list) and given and isinstance(given[0], int)):
        given = [given]
    if not isinstance(given, list) or not given:
        raise _BadRequest("'input' : input must be a non-empty string or array")
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data, prompt = [], 0
    for index, item in enumerate(given):
        if isinstance(item, list):  # pre-tokenised input
            prompt += len(item)
            text = " ".join(map(str, item))
        else:
            text = str(item)
            prompt += _tokens(len(text))
        vector = _embedding(text, int(dimensions))
        value: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = call.usage({"prompt_tokens": prompt, "total_tokens": prompt}, "total_tokens", ("prompt_tokens",))
    return {"object": "list", "data": data, "model": call.model(model), "usage": usage}


def _openai_embeddings(call: _Call) -> _Response:
    return call.json(_openai_embeddings_json(call, call.json_body()))


def _multipart(call: _Call) -> dict[str, tuple[str | None, bytes]]:
    content_type = call.headers.get("content-type", "")
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + call.raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    parts: list[Any] = message.get_payload() if message.is_multipart() else []  # type: ignore[assignment]
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _openai_file_obj(file_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": len(entry["data"]), "created_at": entry["created"],
            "filename": entry["filename"], "purpose": entry["purpose"], "status": "processed",
            "expires_at": None, "status_details": None}


def _openai_file_upload(call: _Call) -> _Response:
    fields = _multipart(call)
    if "file" not in fields:
        raise _BadRequest("Missing required parameter: 'file'.")
    filename, data = fields["file"]
    purpose = fields.get("purpose", (None, b"batch"))[1].decode()
    file_id = "file-" + call.server._new_id(22)
    entry = {"filename": filename or "upload.jsonl", "purpose": purpose, "data": data, "created": int(time.time())}
    with call.server._lock:
        call.server._files[file_id] = entry
    return call.json(_openai_file_obj(file_id, entry))


def _openai_file(call: _Call) -> dict[str, Any]:
    entry = call.server._files.get(call.params[0])
    if entry is None:
        raise _BadRequest(f"No such File object: {call.params[0]}", 404)
    return entry


def _openai_file_get(call: _Call) -> _Response:
    return call.json(_openai_file_obj(call.params[0], _openai_file(call)))


def _openai_file_content(call: _Call) -> _Response:
    return _Response(body=_openai_file(call)["data"], content_type="application/octet-stream")


_OPENAI_BATCH_ENDPOINTS: dict[str, Callable[[_Call, dict[str, Any]], dict[str, Any]]] = {
    "/v1/chat/completions": lambda call, body: _openai_chat_json(_openai_chat_plan(call, body)),
    "/v1/responses": lambda call, body: _openai_response_obj(_openai_responses_plan(call, body), done=True),
    "/v1/embeddings": _openai_embeddings_json,
}


def _openai_batch_create(call: _Call) -> _Response:
    body = call.json_body()
    endpoint, file_id = body.get("endpoint"), body.get("input_file_id")
    if endpoint not in _OPENAI_BATCH_ENDPOINTS:
        raise _BadRequest(f"Invalid 'endpoint': {endpoint!r}.")
    source = call.server._files.get(str(file_id))
    if source is None:
        raise _BadRequest(f"No such File object: {file_id}", 404)
    run = _OPENAI_BATCH_ENDPOINTS[cast(str, endpoint)]
    inner = _Call(call.server, OPENAI, "POST", cast(str, endpoint), {}, {}, None, b"", (), None)
    lines, failed = [], 0
    totals = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
    for line in source["data"].decode().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        request_id = "req_" + call.server._new_id(32)
        try:
            result = run(inner, dict(item.get("body") or {}))
            response = {"status_code": 200, "request_id": request_id, "body": result}
            usage = result.get("usage") or {}
            totals["input_tokens"] += usage.get("prompt_tokens", usage.get("input_tokens", 0))
            totals["output_tokens"] += usage.get("completion_tokens", usage.get("output_tokens", 0))
            details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
            totals["cached_tokens"] += details.get("cached_tokens", 0)
        except _BadRequest as exc:
            failed += 1
            response = {"status_code": exc.status, "request_id": request_id,
                        "body": _error_body(OPENAI, exc.status, request_id, str(exc))}
        lines.append(_dumps({"id": "batch_req_" + call.server._new_id(), "custom_id": item.get("custom_id"),
                             "response": response, "error": None}))
    now = int(time.time())
    output_id = "file-" + call.server._new_id(22)
    batch_id = "batch_" + call.server._new_id(24)
    count = len(lines)
    batch = {
        "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": file_id,
        "completion_window": body.get("completion_window", "24h"), "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": count, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
    }
    done = {**batch, "status": "completed", "output_file_id": output_id, "in_progress_at": now,
            "finalizing_at": now, "completed_at": now,
            "request_counts": {"total": count, "completed": count - failed, "failed": failed},
            "usage": {"input_tokens": totals["input_tokens"],
                      "input_tokens_details": {"cached_tokens": totals["cached_tokens"]},
                      "output_tokens": totals["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": totals["input_tokens"] + totals["output_tokens"]}}
    with call.server._lock:
        call.server._files[output_id] = {"filename": "batch_output.jsonl", "purpose": "batch_output",
                                         "data": b"\n".join(lines) + b"\n", "created": now}
        call.server._batches[batch_id] = done
    return call.json(batch)


def _openai_batch_get(call: _Call) -> _Response:
    batch = call.server._batches.get(call.params[0])
    if batch is None or not batch["id"].startswith("batch_"):
        raise _BadRequest(f"No batch found with id '{call.params[0]}'.", 404)
    return call.json(batch)


# --------------------------------------------------------------------------------------------------
# Anthropic


def _anthropic_blocks(body: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The prompt as (text, cache_control) blocks in the order Anthropic caches it: tools, system, messages."""
    blocks: list[tuple[str, dict[str, Any] | None]] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            blocks.append((json.dumps({k: v for k, v in tool.items() if k != "cache_control"}),
                           tool.get("cache_control")))
    system = body.get("system")
    if isinstance(system, str):
        blocks.append((system, None))
    elif isinstance(system, list):
        blocks += [(_joined_text(block), block.get("cache_control") if isinstance(block, dict) else None)
                   for block in system]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks += [(_joined_text(block), block.get("cache_control") if isinstance(block, dict) else None)
                       for block in content]
        else:
            blocks.append((_joined_text(content), None))
    top = body.get("cache_control")  # automatic caching: a breakpoint on the last block
    if isinstance(top, dict) and blocks and blocks[-1][1] is None:
        blocks[-1] = (blocks[-1][0], top)
    return blocks


def _anthropic_message(call: _Call, body: dict[str, Any], service_tier: str = "standard") -> dict[str, Any]:
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: Field required")
    if not isinstance(max_tokens, int):
        raise _BadRequest("max_tokens: Field required")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: at least one message is required")
    total, read, write_5m, write_1h = call.server._anthropic_cached(model, _anthropic_blocks(body))
    text, truncated = call.answer(_last_user_text(messages), max_tokens)
    usage = call.usage({
        "input_tokens": total - read - write_5m - write_1h,
        "cache_creation_input_tokens": write_5m + write_1h, "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": _out_tokens(text), "service_tier": service_tier,
    })
    return {"id": "msg_01" + call.server._new_id(22), "type": "message", "role": "assistant",
            "model": call.model(model), "content": [{"type": "text", "text": text}],
            "stop_reason": call.finish("max_tokens" if truncated else "end_turn"), "stop_sequence": None,
            "usage": usage}


def _anthropic_messages(call: _Call) -> _Response:
    body = call.json_body()
    message = _anthropic_message(call, body)
    if not body.get("stream"):
        return call.json(message)
    usage, text = message["usage"], message["content"][0]["text"]

    def event(kind: str, **data: Any) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + _dumps({"type": kind, **data}) + b"\n\n"

    # message_start reports the input side and a first output token; message_delta the final counts.
    start_usage = {**usage, "output_tokens": 1 if usage.get("output_tokens") else 0}
    # message_delta carries cumulative counts, including the input side, as the current API does.
    delta_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                         "cache_read_input_tokens", "output_tokens") if k in usage}
    events = [
        event("message_start", message={**message, "content": [], "stop_reason": None, "usage": start_usage}),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += [event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
               for piece in _words(text) if piece]
    events += [
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": message["stop_reason"], "stop_sequence": None},
              usage=delta_usage),
        event("message_stop"),
    ]
    return _Response(events=events, content_type="text/event-stream; charset=utf-8")


def _anthropic_count_tokens(call: _Call) -> _Response:
    blocks = _anthropic_blocks(call.json_body())
    return call.json({"input_tokens": _tokens(sum(len(text) for text, _ in blocks))})


def _anthropic_batch_obj(call: _Call, batch: dict[str, Any], ended: bool) -> dict[str, Any]:
    count, errored = batch["count"], batch["errored"]
    return {
        "id": batch["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
        "request_counts": {"processing": 0 if ended else count, "succeeded": count - errored if ended else 0,
                           "errored": errored if ended else 0, "canceled": 0, "expired": 0},
        "ended_at": _iso(batch["created"]) if ended else None, "created_at": _iso(batch["created"]),
        "expires_at": _iso(batch["created"] + 86400), "archived_at": None, "cancel_initiated_at": None,
        "results_url": f"{call.server.url}/v1/messages/batches/{batch['id']}/results" if ended else None,
    }


def _anthropic_batch_create(call: _Call) -> _Response:
    requests = call.json_body().get("requests")
    if not isinstance(requests, list) or not requests:
        raise _BadRequest("requests: at least one request is required")
    inner = _Call(call.server, ANTHROPIC, "POST", "/v1/messages", {}, {}, None, b"", (), None)
    lines, errored = [], 0
    for item in requests:
        try:
            result: dict[str, Any] = {"type": "succeeded",
                                      "message": _anthropic_message(inner, dict(item.get("params") or {}), "batch")}
        except _BadRequest as exc:
            errored += 1
            result = {"type": "errored", "error": _error_body(ANTHROPIC, exc.status, "", str(exc))}
        lines.append(_dumps({"custom_id": item.get("custom_id"), "result": result}))
    batch: dict[str, Any] = {"id": "msgbatch_01" + call.server._new_id(22), "created": time.time(), "count": len(requests),
             "errored": errored, "results": b"\n".join(lines) + b"\n"}
    with call.server._lock:
        call.server._batches[batch["id"]] = batch
    return call.json(_anthropic_batch_obj(call, batch, ended=False))


def _anthropic_batch(call: _Call) -> dict[str, Any]:
    batch = call.server._batches.get(call.params[0])
    if batch is None or not batch["id"].startswith("msgbatch_"):
        raise _BadRequest(f"Message batch {call.params[0]} not found", 404)
    return batch


def _anthropic_batch_get(call: _Call) -> _Response:
    return call.json(_anthropic_batch_obj(call, _anthropic_batch(call), ended=True))


def _anthropic_batch_results(call: _Call) -> _Response:
    return _Response(body=_anthropic_batch(call)["results"], content_type="application/binary")


# --------------------------------------------------------------------------------------------------
# Google (Gemini Developer API)


def _google_prompt(body: dict[str, Any]) -> tuple[int, str]:
    pieces: list[str] = []
    _collect_text(body.get("systemInstruction"), pieces)
    if body.get("tools"):
        pieces.append(json.dumps(body["tools"]))
    _collect_text(body.get("contents"), pieces)
    return sum(map(len, pieces)), _last_user_text(body.get("contents"))


def _google_generate(call: _Call) -> _Response:
    body = call.json_body()
    model, method = call.params[1], call.params[2]
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        raise _BadRequest("* GenerateContentRequest.contents: contents is not specified")
    chars, question = _google_prompt(body)
    cached = 0
    if isinstance(body.get("cachedContent"), str):
        cached = call.server._google_caches.get(body["cachedContent"], GOOGLE_UNKNOWN_CACHE_TOKENS)
    prompt = _tokens(chars) + cached  # promptTokenCount includes the cached content, as Gemini reports it
    text, truncated = call.answer(question, (body.get("generationConfig") or {}).get("maxOutputTokens"))
    candidates = _out_tokens(text)
    details = [{"modality": "TEXT", "tokenCount": prompt}]
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                             "totalTokenCount": prompt + candidates, "promptTokensDetails": details}
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    usage = call.usage(usage, "totalTokenCount",
                       ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount"))
    head = {"modelVersion": call.model(model), "responseId": call.server._new_id(16)}
    finish = call.finish("MAX_TOKENS" if truncated else "STOP")

    def response(part: str, final: bool, meta: dict[str, Any]) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": part}], "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": meta, **head}

    if method == "generateContent":
        return call.json(response(text, True, usage))
    words = _words(text)
    groups = ["".join(words[i:i + 6]) for i in range(0, len(words), 6)] or [""]
    # Chunks before the last report the prompt side only; the last one carries the full usage.
    partial = {"promptTokenCount": prompt, "totalTokenCount": prompt, "promptTokensDetails": details}
    events = [b"data: " + _dumps(response(group, i == len(groups) - 1, usage if i == len(groups) - 1 else partial))
              + b"\r\n\r\n" for i, group in enumerate(groups)]
    return _Response(events=events, content_type="text/event-stream")


def _google_embed(call: _Call) -> _Response:
    body = call.json_body()
    method = call.params[2]
    requests = body.get("requests") if method == "batchEmbedContents" else [body]
    if not isinstance(requests, list) or not requests:
        raise _BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
    embeddings, prompt = [], 0
    for request in requests:
        text = _joined_text((request or {}).get("content"))
        prompt += _tokens(len(text))
        dimensions = (request or {}).get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
        embeddings.append({"values": _embedding(text, int(dimensions))})
    usage = call.usage({"promptTokenCount": prompt, "totalTokenCount": prompt}, "totalTokenCount",
                       ("promptTokenCount",))
    if method == "embedContent":
        return call.json({"embedding": embeddings[0], "usageMetadata": usage})
    return call.json({"embeddings": embeddings, "usageMetadata": usage})


def _google_count_tokens(call: _Call) -> _Response:
    body = call.json_body()
    chars, _ = _google_prompt(body.get("generateContentRequest") or body)
    total = _tokens(chars)
    return call.json({"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})


def _google_model_call(call: _Call) -> _Response:
    method = call.params[2]
    if method in ("generateContent", "streamGenerateContent"):
        return _google_generate(call)
    if method in ("embedContent", "batchEmbedContents"):
        return _google_embed(call)
    return _google_count_tokens(call)


def _google_cache_create(call: _Call) -> _Response:
    body = call.json_body()
    chars, _ = _google_prompt(body)
    tokens = _tokens(chars)
    name = "cachedContents/" + call.server._new_id(12)
    with call.server._lock:
        call.server._google_caches[name] = tokens
    now = time.time()
    ttl = str(body.get("ttl") or "3600s").rstrip("s")
    try:
        expire = now + float(ttl)
    except ValueError:
        expire = now + 3600
    return call.json({"name": name, "model": body.get("model"), "displayName": body.get("displayName", ""),
                      "createTime": _iso(now), "updateTime": _iso(now), "expireTime": _iso(expire),
                      "usageMetadata": {"totalTokenCount": tokens}})


# --------------------------------------------------------------------------------------------------
# Routing

_RouteHandler = Callable[[_Call], _Response]
_ROUTES: list[tuple[str, re.Pattern[str], str, _RouteHandler]] = [
    ("POST", re.compile(r"/v1/chat/completions"), OPENAI, _openai_chat),
    ("POST", re.compile(r"/v1/responses"), OPENAI, _openai_responses),
    ("POST", re.compile(r"/v1/embeddings"), OPENAI, _openai_embeddings),
    ("POST", re.compile(r"/v1/files"), OPENAI, _openai_file_upload),
    ("GET", re.compile(r"/v1/files/([^/]+)"), OPENAI, _openai_file_get),
    ("GET", re.compile(r"/v1/files/([^/]+)/content"), OPENAI, _openai_file_content),
    ("POST", re.compile(r"/v1/batches"), OPENAI, _openai_batch_create),
    ("GET", re.compile(r"/v1/batches/([^/]+)"), OPENAI, _openai_batch_get),
    ("POST", re.compile(r"/v1/messages"), ANTHROPIC, _anthropic_messages),
    ("POST", re.compile(r"/v1/messages/count_tokens"), ANTHROPIC, _anthropic_count_tokens),
    ("POST", re.compile(r"/v1/messages/batches"), ANTHROPIC, _anthropic_batch_create),
    ("GET", re.compile(r"/v1/messages/batches/([^/]+)"), ANTHROPIC, _anthropic_batch_get),
    ("GET", re.compile(r"/v1/messages/batches/([^/]+)/results"), ANTHROPIC, _anthropic_batch_results),
    ("POST", re.compile(r"/(v1beta|v1|v1alpha)/(?:models|tunedModels)/([^/:]+)"
                        r":(generateContent|streamGenerateContent|embedContent|batchEmbedContents|countTokens)"),
     GOOGLE, _google_model_call),
    ("POST", re.compile(r"/(v1beta|v1|v1alpha)/cachedContents"), GOOGLE, _google_cache_create),
]


def _route(method: str, path: str) -> tuple[str | None, _RouteHandler | None, tuple[str, ...]]:
    for route_method, pattern, provider, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if route_method == method:
                return provider, handler, match.groups()
            return provider, None, ()
    if path.startswith("/v1/messages"):
        return ANTHROPIC, None, ()
    if ":" in path or path.startswith(("/v1beta/", "/v1alpha/")):
        return GOOGLE, None, ()
    if path.startswith("/v1/"):
        return OPENAI, None, ()
    return None, None, ()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # many async tasks connect at once; the default backlog of 5 drops SYNs
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: LoopbackLLMServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep a server bug for the test to see (LoopbackLLMServer.errors); a client hanging up is no bug."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            self.owner.errors.append(error)

    def close_connections(self) -> None:
        """Wake every handler thread blocked on a keep-alive connection so it ends."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Status"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDKs pool connections, as against the real APIs
    disable_nagle_algorithm = True  # else each small response waits ~40 ms for the client's delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Silent: the server runs inside test and benchmark processes."""

    def handle_one_request(self) -> None:
        """Read one request and answer it, keeping the connection for the next unless told to close.

        Parses the request line and headers itself: the base class goes through `email.parser`,
        which cost more CPU than all the rest of a request, and this server sits inside benchmarks.
        """
        try:
            line = self.rfile.readline(65537)
        except OSError:
            line = b""
        parts = line.split()
        if len(parts) != 3:  # connection closed, or not HTTP
            self.close_connection = True
            return
        self.command, self.path, self.request_version = (part.decode("latin-1") for part in parts)
        headers: dict[str, str] = {}
        while True:
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version != "HTTP/1.1" and connection != "keep-alive")
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._handle(headers)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, headers: dict[str, str]) -> None:
        owner = cast(_Server, self.server).owner
        try:
            raw = self._read_body(headers)
        except (ValueError, OSError):
            self.close_connection = True
            return
        path, _, query_string = self.path.partition("?")
        query = dict(parse_qsl(query_string)) if query_string else {}
        body: Any = None
        if raw and "json" in headers.get("content-type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        provider, handler, params = _route(self.command, path)
        owner._record(RecordedRequest(self.command, path, headers, body, query, provider, raw))
        reply = owner._take_script(provider)
        if reply is not None and reply.delay > 0 and owner._stopping.wait(reply.delay):
            self.close_connection = True
            return
        request_id = "req_" + owner._new_id(24)
        call = _Call(owner, provider, self.command, path, query, headers, body, raw, params, reply)
        try:
            if reply is not None and reply.status >= 400:
                response = _Response(status=reply.status, body=_dumps(
                    reply.error_body if reply.error_body is not None
                    else _error_body(provider, reply.status, request_id)))
            elif handler is None:
                response = _Response(status=404, body=_dumps(
                    _error_body(provider, 404, request_id, f"Unknown request URL: {self.command} {path}")))
            else:
                response = handler(call)
                if reply is not None:
                    response.status = reply.status
        except _BadRequest as exc:
            response = _Response(status=exc.status, body=_dumps(_error_body(provider, exc.status, request_id,
                                                                            str(exc))))
        except Exception as exc:  # a bug here must surface in the test, not hang the client
            owner.errors.append(exc)
            response = _Response(status=500, body=_dumps(_error_body(provider, 500, request_id,
                                                                    f"loopback server error: {exc!r}")))
        if reply is not None:
            response.headers.update(reply.headers)
            if reply.cut_after_chunks is not None and response.events is None:
                response.drop = True
        try:
            self._send(response, provider, request_id, reply.cut_after_chunks if reply else None)
        except OSError:  # the client went away (timeout, closed stream): nothing to answer
            self.close_connection = True

    def _send(self, response: _Response, provider: str | None, request_id: str, cut: int | None) -> None:
        if response.drop:
            self._drop()
            return
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
                 f"content-type: {response.content_type}"]
        if provider == ANTHROPIC:
            lines.append(f"request-id: {request_id}")
        elif provider == OPENAI:
            lines += [f"x-request-id: {request_id}", "openai-processing-ms: 1"]
        if response.status in _RETRYABLE:
            lines.append(f"retry-after-ms: {_RETRY_AFTER_MS}")
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if self.close_connection:
            lines.append("connection: close")
        if response.events is None:
            lines.append(f"content-length: {len(response.body)}")
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
            return
        # Streams go out chunked so the connection stays reusable, like the real APIs over HTTP/1.1.
        lines += ["transfer-encoding: chunked", "cache-control: no-cache"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        frames = [b"%x\r\n%s\r\n" % (len(event), event) for event in response.events]
        if cut is not None:
            sent = max(0, min(cut, len(frames) - 1))
            self.wfile.write(head + b"".join(frames[:sent]))
            self._drop()
            return
        # The first event goes alone so the client sees a real time-to-first-chunk; the rest together.
        self.wfile.write(head + frames[0])
        self.wfile.write(b"".join(frames[1:]) + b"0\r\n\r\n")

    def _drop(self) -> None:
        """End the connection abruptly (FIN mid-body, no terminating chunk), like a proxy cutting it."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------------
# The server


class LoopbackLLMServer:
    """OpenAI, Anthropic and Gemini stand-in on 127.0.0.1, served from a daemon thread.

    Thread-safe: the SDK clients may call it from many threads and event loops at once. `requests`
    records every request (authorization headers included, for tests that check what was sent; they
    are never echoed in a response). `errors` collects exceptions raised inside the server, which a
    test can assert empty.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scripts: list[list[Any]] = []  # [Reply, remaining uses]
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(16).hex()
        self._openai_prefixes: OrderedDict[bytes, None] = OrderedDict()
        self._anthropic_cache: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._google_caches: dict[str, int] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> LoopbackLLMServer:
        """Bind (port 0 picks a free port) and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server((self.host, self.port), self)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"loopback-llm-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (clients holding a pooled one get a clean EOF)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> LoopbackLLMServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # addresses ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://HOST:PORT` of the running server."""
        if self._httpd is None:
            raise RuntimeError("LoopbackLLMServer is not started: call start() or use it in a with block")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For `openai.OpenAI(base_url=...)`: the SDK appends paths such as /chat/completions to /v1."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For `anthropic.Anthropic(base_url=...)`: the SDK adds /v1/messages itself."""
        return self.url

    @property
    def google_base_url(self) -> str:
        """For `genai.Client(http_options=HttpOptions(base_url=...))`: the SDK adds /{version}/models/..."""
        return self.url

    # scripting ------------------------------------------------------------------------------------

    def script(self, reply: Reply) -> None:
        """Queue `reply` for the next `reply.times` requests of its provider (None: any), in order."""
        with self._lock:
            self._scripts.append([reply, reply.times])

    def reset(self) -> None:
        """Forget scripts, recorded requests, errors, prompt caches, files and batches (between tests)."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.errors.clear()
            self._openai_prefixes.clear()
            self._anthropic_cache.clear()
            self._google_caches.clear()
            self._files.clear()
            self._batches.clear()

    def _take_script(self, provider: str | None) -> Reply | None:
        with self._lock:
            for entry in self._scripts:
                reply = cast(Reply, entry[0])
                if reply.provider is None or reply.provider == provider:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._scripts.remove(entry)
                    return reply
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _new_id(self, length: int = 24) -> str:
        """A short hex id, unique per server (random prefix) and cheap (a counter)."""
        number = f"{next(self._ids):x}"
        return self._id_prefix[: max(0, length - len(number))].ljust(length - len(number), "0") + number

    # prompt-caching simulations -------------------------------------------------------------------

    def _openai_cached(self, model: str, pieces: list[str], prompt_tokens: int) -> int:
        """OpenAI's automatic caching: the longest prefix (>= 1024 tokens, in 128-token steps) seen before."""
        if prompt_tokens < OPENAI_CACHE_MIN_TOKENS:
            return 0
        text = "".join(pieces)
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        keys: list[tuple[int, bytes]] = []
        done = 0
        for tokens in range(OPENAI_CACHE_MIN_TOKENS, prompt_tokens + 1, OPENAI_CACHE_STEP_TOKENS):
            digest.update(text[done:tokens * 4].encode("utf-8"))
            done = tokens * 4
            keys.append((tokens, digest.copy().digest()))
        cached = 0
        with self._lock:
            memory = self._openai_prefixes
            for tokens, key in keys:
                if key not in memory:
                    break
                cached = tokens
                memory.move_to_end(key)
            for _, key in keys:
                memory[key] = None
            while len(memory) > _MEMORY_LIMIT:
                memory.popitem(last=False)
        return cached

    def _anthropic_cached(self, model: str, blocks: list[tuple[str, dict[str, Any] | None]]
                          ) -> tuple[int, int, int, int]:
        """Anthropic's explicit caching: returns (total input, cache read, 5-minute write, 1-hour write).

        Each `cache_control` block ends a cacheable prefix. The longest prefix already cached (at a
        breakpoint or up to 20 blocks before one) is read; prefixes past it at breakpoints of at least
        the minimum length are written, their tokens billed under the breakpoint's TTL.
        """
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        chars = 0
        bounds: list[tuple[int, bytes, dict[str, Any] | None]] = []
        for text, control in blocks:
            digest.update(text.encode("utf-8") + b"\x1f")
            chars += len(text)
            bounds.append((_tokens(chars), digest.copy().digest(), control if isinstance(control, dict) else None))
        total = _tokens(chars)
        breakpoints = [i for i, bound in enumerate(bounds) if bound[2] is not None]
        if not breakpoints:
            return total, 0, 0, 0
        now = time.monotonic()
        writes = {"5m": 0, "1h": 0}
        with self._lock:
            cache = self._anthropic_cache
            hit = -1
            for point in breakpoints:
                for index in range(max(0, point - ANTHROPIC_CACHE_LOOKBACK_BLOCKS), point + 1):
                    entry = cache.get(bounds[index][1])
                    if entry is not None and entry[0] > now and index > hit:
                        hit = index
            read = bounds[hit][0] if hit >= 0 else 0
            if hit >= 0:
                key = bounds[hit][1]
                cache[key] = (now + cache[key][1], cache[key][1])  # a read refreshes the TTL
                cache.move_to_end(key)
            written = read
            for point in breakpoints:
                tokens, key, control = bounds[point]
                if point <= hit or tokens < ANTHROPIC_CACHE_MIN_TOKENS or tokens <= written:
                    continue
                ttl = "1h" if cast(dict, control).get("ttl") == "1h" else "5m"
                writes[ttl] += tokens - written
                written = tokens
                cache[key] = (now + _ANTHROPIC_TTL_SECONDS[ttl], _ANTHROPIC_TTL_SECONDS[ttl])
                cache.move_to_end(key)
            while len(cache) > _MEMORY_LIMIT:
                cache.popitem(last=False)
        return total, read, writes["5m"], writes["1h"]
