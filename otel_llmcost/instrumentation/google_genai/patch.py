"""How google-genai methods map onto GenAI telemetry: provider, request config, usage, streams."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from ... import names
from ...pricing import usage as usage_mod
from ...pricing.estimate import estimate_tokens
from .._wrappers import Outcome

GEMINI = "gcp.gemini"
VERTEX_AI = "gcp.vertex_ai"

_CONFIG_PARAMS = {
    "temperature": names.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": names.GEN_AI_REQUEST_TOP_P,
    "top_k": names.GEN_AI_REQUEST_TOP_K,
    "max_output_tokens": names.GEN_AI_REQUEST_MAX_TOKENS,
    "seed": names.GEN_AI_REQUEST_SEED,
}


def _get(obj: Any, key: str) -> Any:
    """A field of an SDK object or of the plain dict the SDK accepts in its place."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def provider_of(instance: Any) -> str:
    """`gcp.vertex_ai` for a client in Vertex AI mode, else `gcp.gemini` (the Gemini Developer API)."""
    return VERTEX_AI if getattr(getattr(instance, "_api_client", None), "vertexai", False) else GEMINI


def _server_attributes(instance: Any) -> dict[str, Any]:
    base_url = _get(getattr(getattr(instance, "_api_client", None), "_http_options", None), "base_url")
    if not isinstance(base_url, str):
        return {}
    parts = urlsplit(base_url)
    attrs: dict[str, Any] = {}
    if parts.hostname:
        attrs[names.SERVER_ADDRESS] = parts.hostname
        if parts.port:
            attrs[names.SERVER_PORT] = parts.port
    return attrs


def model_name(model: Any) -> str:
    """The model id of what the app passed: `models/x`, `publishers/google/models/x` and full Vertex
    resource names all name model `x` (the id prices are listed under); tuned models keep their name."""
    if not isinstance(model, str) or not model:
        return "unknown"
    head, sep, tail = model.rpartition("models/")
    return tail if sep and tail and (not head or head.endswith("/")) else model


def config_attributes(config: Any) -> dict[str, Any]:
    """Sampling parameters of a `GenerateContentConfig` (or its dict form) as span attributes."""
    attrs: dict[str, Any] = {}
    if config is None:
        return attrs
    for param, attribute in _CONFIG_PARAMS.items():
        value = _get(config, param)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[attribute] = value
    return attrs


def finish_reason(value: Any) -> str:
    """`FinishReason.STOP` → `stop`, as the upstream OpenTelemetry google-genai instrumentation writes it."""
    name = getattr(value, "name", None) or getattr(value, "value", None) or str(value)
    return str(name).lower().removeprefix("finish_reason_")


# -- content (only when capture is on) -------------------------------------------------------------
def _part(part: Any) -> dict[str, Any] | None:
    if isinstance(part, str):
        return {"type": "text", "content": part}
    text = _get(part, "text")
    if isinstance(text, str):
        return {"type": "reasoning" if _get(part, "thought") else "text", "content": text}
    call = _get(part, "function_call")
    if call is not None:
        return {"type": "tool_call", "id": _get(call, "id"), "name": _get(call, "name"),
                "arguments": _get(call, "args")}
    result = _get(part, "function_response")
    if result is not None:
        return {"type": "tool_call_response", "id": _get(result, "id"), "response": _get(result, "response")}
    blob = _get(part, "inline_data")
    if blob is not None:  # the bytes themselves are never recorded
        return {"type": "blob", "mime_type": _get(blob, "mime_type")}
    file = _get(part, "file_data")
    if file is not None:
        return {"type": "uri", "mime_type": _get(file, "mime_type"), "uri": _get(file, "file_uri")}
    return None


def _parts(parts: Any) -> list[dict[str, Any]]:
    out = []
    for part in parts or ():
        converted = _part(part)
        if converted is not None:
            out.append(converted)
    return out


def input_messages(contents: Any) -> list[dict[str, Any]]:
    """The prompt as GenAI messages: each `Content` is a message; loose strings and parts are grouped
    into one user message, as the SDK itself groups them."""
    items = contents if isinstance(contents, (list, tuple)) else [contents]
    messages: list[dict[str, Any]] = []
    loose: list[dict[str, Any]] = []
    for item in items:
        parts = None if isinstance(item, str) else _get(item, "parts")
        if parts is None:
            converted = _part(item)
            if converted is not None:
                loose.append(converted)
            continue
        if loose:
            messages.append({"role": "user", "parts": loose})
            loose = []
        messages.append({"role": _get(item, "role") or "user", "parts": _parts(parts)})
    if loose:
        messages.append({"role": "user", "parts": loose})
    return messages


def system_instructions(config: Any) -> list[dict[str, Any]]:
    instruction = _get(config, "system_instruction")
    if instruction is None:
        return []
    parts: list[dict[str, Any]] = []
    for message in input_messages(instruction):
        parts.extend(message["parts"])
    return parts


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def text_chars(contents: Any) -> int:
    """Characters of text in contents, for usage estimates only."""
    if isinstance(contents, str):
        return len(contents)
    if isinstance(contents, (list, tuple)):
        return sum(text_chars(item) for item in contents)
    parts = _get(contents, "parts")
    if parts is not None:
        return text_chars(list(parts))
    text = _get(contents, "text")
    return len(text) if isinstance(text, str) else 0


# -- endpoints -------------------------------------------------------------------------------------
class GenerateContentEndpoint:
    """One Gemini model request: `generate_content` (operation name of the GenAI conventions)."""

    operation = "generate_content"

    def __init__(self, stream: bool, capture_content: Any) -> None:
        self.stream = stream
        self.provider = GEMINI  # the per-call provider comes with the request attributes
        self._capture = capture_content

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        attrs: dict[str, Any] = {names.GEN_AI_PROVIDER_NAME: provider_of(instance)}
        attrs.update(_server_attributes(instance))
        config = kwargs.get("config")
        attrs.update(config_attributes(config))
        if self.stream:
            attrs[names.GEN_AI_REQUEST_STREAM] = True
        if self._capture():
            attrs[names.GEN_AI_INPUT_MESSAGES] = _dumps(input_messages(kwargs.get("contents")))
            instructions = system_instructions(config)
            if instructions:
                attrs[names.GEN_AI_SYSTEM_INSTRUCTIONS] = _dumps(instructions)
        return model_name(kwargs.get("model")), attrs

    def prepare(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if not self.stream:
            return kwargs, None
        return kwargs, GenerateContentStreamAccumulator(kwargs.get("contents"), self._capture())

    def is_stream(self, result: Any) -> bool:
        return self.stream and (hasattr(result, "__next__") or hasattr(result, "__anext__"))

    def response(self, result: Any, kwargs: dict[str, Any]) -> Outcome | None:
        reader = ResponseReader(self._capture())
        reader.feed(_parsed(result))
        return reader.outcome(kwargs.get("contents"))


def _parsed(result: Any) -> Any:
    """With `config.should_return_http_response` the app gets the raw HTTP body and no parsed fields:
    read the usage from the body (the SDK's models accept the API's camelCase JSON)."""
    if getattr(result, "usage_metadata", None) is not None or getattr(result, "candidates", None):
        return result
    body = getattr(getattr(result, "sdk_http_response", None), "body", None)
    if not isinstance(body, str) or not body.startswith("{"):
        return result
    return type(result).model_validate(json.loads(body))


class ResponseReader:
    """What `GenerateContentResponse`s say: one response, or the chunks of a stream in order.

    In a stream each chunk's `usage_metadata` is the running total of the request so far, so the latest
    one is kept, never a sum.
    """

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.chunks = 0
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: dict[int, str] = {}
        self.blocked: str | None = None
        self.output_chars = 0
        self.output: dict[int, list[dict[str, Any]]] = {}

    def feed(self, response: Any) -> None:
        self.chunks += 1
        usage = getattr(response, "usage_metadata", None)
        if usage is not None:
            self.usage = usage
        model = getattr(response, "model_version", None)
        if isinstance(model, str) and model:
            self.model = model
        response_id = getattr(response, "response_id", None)
        if isinstance(response_id, str) and response_id:
            self.response_id = response_id
        for position, candidate in enumerate(getattr(response, "candidates", None) or ()):
            index = candidate.index if isinstance(candidate.index, int) else position
            if candidate.finish_reason:
                self.reasons[index] = finish_reason(candidate.finish_reason)
            parts = getattr(candidate.content, "parts", None) or ()
            for part in parts:
                text = getattr(part, "text", None)
                if isinstance(text, str):
                    self.output_chars += len(text)
            if self.capture:
                self.output.setdefault(index, []).extend(_parts(parts))
        block = getattr(getattr(response, "prompt_feedback", None), "block_reason", None)
        if block:
            self.blocked = finish_reason(block)

    @property
    def complete(self) -> bool:
        """A candidate finished, or the prompt was blocked (then no candidate ever comes)."""
        return bool(self.reasons) or self.blocked is not None

    def outcome(self, contents: Any) -> Outcome:
        attrs: dict[str, Any] = {}
        if self.response_id:
            attrs[names.GEN_AI_RESPONSE_ID] = self.response_id
        if self.reasons:
            attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [self.reasons[i] for i in sorted(self.reasons)]
        elif self.blocked:
            attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [self.blocked]
        if self.capture:
            attrs[names.GEN_AI_OUTPUT_MESSAGES] = _dumps([
                {"role": "assistant", "parts": self._merged(self.output.get(i, [])),
                 "finish_reason": self.reasons.get(i)}
                for i in sorted(set(self.output) | set(self.reasons))
            ])
        if self.usage is not None:
            usage = usage_mod.from_google(self.usage)
            if not self.complete and getattr(self.usage, "candidates_token_count", None) is None \
                    and self.output_chars:
                # Gemini reports the answer's tokens only on a stream's last chunk: a stream that ended
                # early has its prompt counted exactly and the text it did receive estimated.
                usage = replace(usage, output_tokens=usage.output_tokens + estimate_tokens(self.output_chars))
                return Outcome(usage, self.model, attrs, estimated=True)
            return Outcome(usage, self.model, attrs)
        if not self.chunks:
            return Outcome(None, self.model, attrs)
        # Chunks came but none carried usage (Gemini sends it on every chunk; a proxy may drop it).
        estimate = usage_mod.Usage(estimate_tokens(text_chars(contents)), estimate_tokens(self.output_chars))
        return Outcome(estimate, self.model, attrs, estimated=True)

    @staticmethod
    def _merged(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stream chunks split one text into many parts; join neighbours of the same kind."""
        merged: list[dict[str, Any]] = []
        for part in parts:
            last = merged[-1] if merged else None
            if last is not None and part["type"] in ("text", "reasoning") and last["type"] == part["type"]:
                last["content"] += part["content"]
            else:
                merged.append(dict(part))
        return merged


class GenerateContentStreamAccumulator:
    """The chunks of one streamed request; complete once a candidate has a finish reason."""

    def __init__(self, contents: Any, capture: bool) -> None:
        self.contents = contents
        self.reader = ResponseReader(capture)

    def feed(self, chunk: Any) -> bool:
        self.reader.feed(chunk)
        return False

    @property
    def complete(self) -> bool:
        return self.reader.complete

    def outcome(self) -> Outcome:
        return self.reader.outcome(self.contents)


class EmbedContentEndpoint:
    """`embed_content`: priced from the tokens the response reports, else estimated from the text.

    Where the count comes from: `usage_metadata.prompt_token_count` (the Gemini API's
    `batchEmbedContents` and Vertex AI's `embedContent`), else the sum of
    `embeddings[].statistics.token_count` (Vertex AI's `predict`), else ~4 characters a token, marked
    `llmcost.usage.estimated=true`. `metadata.billable_character_count` (Vertex AI's older per-character
    billing) is not a token count and is not used.
    """

    operation = "embeddings"

    def __init__(self) -> None:
        self.provider = GEMINI

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        attrs: dict[str, Any] = {names.GEN_AI_PROVIDER_NAME: provider_of(instance)}
        attrs.update(_server_attributes(instance))
        return model_name(kwargs.get("model")), attrs

    def prepare(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        return kwargs, None

    def is_stream(self, result: Any) -> bool:
        return False

    def response(self, result: Any, kwargs: dict[str, Any]) -> Outcome:
        metadata = getattr(result, "usage_metadata", None)
        if getattr(metadata, "prompt_token_count", None) is not None:
            return Outcome(usage_mod.from_google(metadata))
        counts: list[Any] = [getattr(getattr(e, "statistics", None), "token_count", None)
                             for e in getattr(result, "embeddings", None) or ()]
        if counts and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts):
            return Outcome(usage_mod.Usage(input_tokens=round(sum(counts))))
        return Outcome(usage_mod.Usage(input_tokens=estimate_tokens(text_chars(kwargs.get("contents")))),
                       estimated=True)
