"""How OpenAI SDK methods map onto GenAI telemetry: request attributes, usage, streams."""

from __future__ import annotations

import json
import threading
from typing import Any

from ... import names
from ...environment_variables import OTEL_LLMCOST_OPENAI_STREAM_USAGE, env_choice
from ...pricing import usage as usage_mod
from ...pricing.estimate import estimate_tokens
from .._wrappers import Outcome, request_attributes

_REQUEST_PARAMS = {
    "temperature": names.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": names.GEN_AI_REQUEST_TOP_P,
    "seed": names.GEN_AI_REQUEST_SEED,
    "max_tokens": names.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": names.GEN_AI_REQUEST_MAX_TOKENS,
    "max_output_tokens": names.GEN_AI_REQUEST_MAX_TOKENS,
    "stream": names.GEN_AI_REQUEST_STREAM,
}


def _provider(instance: Any) -> tuple[str, dict[str, Any]]:
    """`azure.ai.openai` for Azure clients (their prices differ), else `openai`; plus server address."""
    client = getattr(instance, "_client", None)
    provider = "azure.ai.openai" if client is not None and "Azure" in type(client).__name__ else "openai"
    attrs: dict[str, Any] = {}
    base_url = getattr(client, "base_url", None)
    host = getattr(base_url, "host", None)
    if host:
        attrs[names.SERVER_ADDRESS] = host
        port = getattr(base_url, "port", None)
        if port:
            attrs[names.SERVER_PORT] = port
    return provider, attrs


def _text_len(value: Any) -> int:
    """Characters of text in a prompt (messages, input items), for usage estimates only."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_len(v) for k, v in value.items() if k in ("content", "text", "input", "arguments"))
    if isinstance(value, (list, tuple)):
        return sum(_text_len(v) for v in value)
    return 0


def _content_json(value: Any) -> str:
    return json.dumps(value, default=lambda o: getattr(o, "model_dump", lambda: str(o))(), ensure_ascii=False)


class AddedStreamOptions(dict[str, Any]):
    """`stream_options` we added to a Chat Completions stream to have it report usage (the app did not
    ask): whoever replays the stream (the response cache) leaves the usage-only chunk out, as we do."""


class OpenAIEndpoint:
    """One OpenAI method; `kind` says which API shape it speaks, `method` which call (`create` or
    `parse`, whose answer is the SDK's parsed type)."""

    def __init__(self, kind: str, capture_content: Any, method: str = "create") -> None:
        self.kind = kind  # "chat", "responses", "embeddings"
        self.method = method
        self.provider = "openai"
        self.operation = "embeddings" if kind == "embeddings" else "chat"
        self._capture = capture_content
        self._stream_types: tuple[type, ...] | None = None
        self._lock = threading.Lock()

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        provider, attrs = _provider(instance)
        self.provider = provider  # the same resource class serves one kind of client
        attrs.update(request_attributes(kwargs, _REQUEST_PARAMS))
        if self._capture() and self.kind != "embeddings":
            prompt = kwargs.get("messages", kwargs.get("input"))
            if prompt is not None:
                attrs[names.GEN_AI_INPUT_MESSAGES] = _content_json(prompt)
        return str(kwargs.get("model", "unknown")), attrs

    def prepare(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if not kwargs.get("stream"):
            return kwargs, None
        if self.kind == "responses":
            return kwargs, ResponsesStreamAccumulator(self._capture())
        prompt_chars = _text_len(kwargs.get("messages"))
        options = kwargs.get("stream_options")
        asked = isinstance(options, dict) and bool(options.get("include_usage"))
        if asked or env_choice(OTEL_LLMCOST_OPENAI_STREAM_USAGE, ("request", "estimate"), "request") == "estimate":
            return kwargs, ChatStreamAccumulator(False, prompt_chars, self._capture())
        # The app did not ask for usage: ask for it, and hide the extra usage-only chunk from the app.
        new_options = AddedStreamOptions(options) if isinstance(options, dict) else AddedStreamOptions()
        new_options["include_usage"] = True
        return {**kwargs, "stream_options": new_options}, ChatStreamAccumulator(True, prompt_chars, self._capture())

    def is_stream(self, result: Any) -> bool:
        if self._stream_types is None:
            import openai

            self._stream_types = (openai.Stream, openai.AsyncStream)
        return isinstance(result, self._stream_types)

    def _from_raw(self, raw: Any) -> Any:
        """A `with_raw_response` result: read its (already received) body into the SDK's own type,
        leaving the app's response object untouched (its `parse()` is a coroutine on async clients)."""
        from openai.types import CreateEmbeddingResponse
        from openai.types.chat import ChatCompletion
        from openai.types.responses import Response

        model: Any = {"chat": ChatCompletion, "responses": Response}.get(self.kind, CreateEmbeddingResponse)
        return model.model_validate(raw.http_response.json())

    def response(self, result: Any, kwargs: dict[str, Any]) -> Outcome | None:
        if hasattr(result, "parse") and hasattr(result, "http_response"):
            result = self._from_raw(result)
        usage = getattr(result, "usage", None)
        attrs: dict[str, Any] = {}
        response_id = getattr(result, "id", None)
        if isinstance(response_id, str):
            attrs[names.GEN_AI_RESPONSE_ID] = response_id
        if self.kind == "chat":
            choices = getattr(result, "choices", None) or []
            reasons = [c.finish_reason for c in choices if getattr(c, "finish_reason", None)]
            if reasons:
                attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
            if self._capture():
                attrs[names.GEN_AI_OUTPUT_MESSAGES] = _content_json([c.message for c in choices])
            normalised = usage_mod.from_openai(usage) if usage is not None else None
        elif self.kind == "responses":
            status = getattr(result, "status", None)
            if isinstance(status, str):
                attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [status]
            if self._capture():
                attrs[names.GEN_AI_OUTPUT_MESSAGES] = _content_json(getattr(result, "output", None))
            normalised = usage_mod.from_openai_responses(usage) if usage is not None else None
        else:
            normalised = usage_mod.from_openai(usage) if usage is not None else None
        model = getattr(result, "model", None)
        return Outcome(normalised, model if isinstance(model, str) else None, attrs)


class ChatStreamAccumulator:
    """Chat Completions chunks: usage arrives in a last chunk with no choices, if it was asked for."""

    def __init__(self, injected: bool, prompt_chars: int, capture: bool) -> None:
        self.injected = injected
        self.prompt_chars = prompt_chars
        self.capture = capture
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: Any = None
        self.reasons: dict[int, str] = {}
        self.output_chars = 0
        self.text: list[str] = []
        self.done = False

    def feed(self, chunk: Any) -> bool:
        self.model = getattr(chunk, "model", None) or self.model
        self.response_id = getattr(chunk, "id", None) or self.response_id
        choices = getattr(chunk, "choices", None) or []
        for choice in choices:
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if isinstance(content, str):
                self.output_chars += len(content)
                if self.capture:
                    self.text.append(content)
            if choice.finish_reason:
                self.reasons[choice.index] = choice.finish_reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
            self.done = True
            return self.injected and not choices
        if self.reasons and not self.injected and self.usage is None:
            self.done = True
        return False

    @property
    def complete(self) -> bool:
        return self.done

    def outcome(self) -> Outcome:
        attrs: dict[str, Any] = {}
        if self.response_id:
            attrs[names.GEN_AI_RESPONSE_ID] = self.response_id
        if self.reasons:
            attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [self.reasons[i] for i in sorted(self.reasons)]
        if self.capture:
            attrs[names.GEN_AI_OUTPUT_MESSAGES] = json.dumps(
                [{"role": "assistant", "content": "".join(self.text)}], ensure_ascii=False)
        if self.usage is not None:
            return Outcome(usage_mod.from_openai(self.usage), self.model, attrs)
        # No usage chunk: the app turned our request off (estimate mode) or the stream ended early.
        estimate = usage_mod.Usage(estimate_tokens(self.prompt_chars), estimate_tokens(self.output_chars))
        return Outcome(estimate, self.model, attrs, estimated=True)


class ResponsesStreamAccumulator:
    """Responses API events: the final `response.completed` (or incomplete/failed) carries usage."""

    _FINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.response: Any = None
        self.done = False
        self.output_chars = 0

    def feed(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "response.created" or kind in self._FINAL:
            self.response = getattr(event, "response", None) or self.response
            self.done = self.done or kind in self._FINAL
        elif kind == "response.output_text.delta":
            self.output_chars += len(getattr(event, "delta", "") or "")
        return False

    @property
    def complete(self) -> bool:
        return self.done

    def outcome(self) -> Outcome:
        response = self.response
        usage = getattr(response, "usage", None)
        attrs: dict[str, Any] = {}
        if response is not None:
            attrs[names.GEN_AI_RESPONSE_ID] = response.id
            if isinstance(getattr(response, "status", None), str):
                attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [response.status]
            if self.capture and self.done:
                attrs[names.GEN_AI_OUTPUT_MESSAGES] = _content_json(response.output)
        model = getattr(response, "model", None)
        if usage is not None:
            return Outcome(usage_mod.from_openai_responses(usage), model, attrs)
        return Outcome(usage_mod.Usage(0, estimate_tokens(self.output_chars)), model, attrs, estimated=True)


class BatchEndpoint:
    """`batches.retrieve`: a completed batch is priced once, at the batch discount, from its usage."""

    provider = "openai"
    operation = "batch"

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def first_completion(self, batch: Any) -> bool:
        if getattr(batch, "status", None) != "completed" or getattr(batch, "usage", None) is None:
            return False
        with self._lock:
            if batch.id in self.seen:
                return False
            self.seen.add(batch.id)
            return True
