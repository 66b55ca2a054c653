"""How Anthropic SDK methods map onto GenAI telemetry: request attributes, usage, streams, batch results."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ... import names
from ...pricing import Usage
from ...pricing import usage as usage_mod
from ...pricing.estimate import estimate_tokens
from ...telemetry import Call, Telemetry
from .._wrappers import Outcome, finish, request_attributes

PROVIDER = "anthropic"

_REQUEST_PARAMS = {
    "max_tokens": names.GEN_AI_REQUEST_MAX_TOKENS,
    "temperature": names.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": names.GEN_AI_REQUEST_TOP_P,
    "top_k": names.GEN_AI_REQUEST_TOP_K,
    "stream": names.GEN_AI_REQUEST_STREAM,
}


def _get(obj: Any, key: str) -> Any:
    """A field of an SDK model or of the same object as decoded JSON."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def message_usage(usage: Any) -> Usage:
    """Anthropic usage normalised, with thinking tokens as the reasoning share of output."""
    normalised = usage_mod.from_anthropic(usage)
    thinking = _get(_get(usage, "output_tokens_details"), "thinking_tokens")
    if isinstance(thinking, int) and 0 < thinking <= normalised.output_tokens:
        normalised = dataclasses.replace(normalised, reasoning_tokens=thinking)
    return normalised


def client_attributes(instance: Any) -> tuple[str, dict[str, Any]]:
    """The client's GenAI provider name (the SDK's own, so Bedrock and Vertex clients say so) and server."""
    client = getattr(instance, "_client", None)
    provider = getattr(client, "_gen_ai_provider_name", None)
    attrs: dict[str, Any] = {}
    base_url = getattr(client, "base_url", None)
    host = getattr(base_url, "host", None)
    if host:
        attrs[names.SERVER_ADDRESS] = host
        port = getattr(base_url, "port", None)
        if port:
            attrs[names.SERVER_PORT] = port
    return provider if isinstance(provider, str) else PROVIDER, attrs


def _json(value: Any) -> str:
    return json.dumps(value, default=lambda o: getattr(o, "model_dump", lambda: str(o))(), ensure_ascii=False)


class MessagesEndpoint:
    """`messages.create` / `parse` and the `messages.stream` helper (stable and beta), sync and async.

    `beta`: the `client.beta.messages` resource (its answers are the `Beta*` types); `method`: `create`
    (the stream helper too) or `parse` (the answer is the SDK's parsed type).
    """

    provider = PROVIDER
    operation = "chat"

    def __init__(self, capture_content: Any, *, beta: bool = False, method: str = "create") -> None:
        self._capture = capture_content
        self.beta = beta
        self.method = method
        self._stream_types: tuple[type, ...] | None = None

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        provider, attrs = client_attributes(instance)
        # The same resource classes serve Anthropic, Bedrock and Vertex clients, which price differently:
        # the wrapper takes this call's provider from here.
        attrs[names.GEN_AI_PROVIDER_NAME] = provider
        # Sampling parameters left the typed signature in anthropic 2.x; they still reach the API
        # through `extra_body`, where we read them too.
        extra = kwargs.get("extra_body")
        if isinstance(extra, Mapping):
            attrs.update(request_attributes(extra, _REQUEST_PARAMS))
        attrs.update(request_attributes(kwargs, _REQUEST_PARAMS))
        if self._capture():
            messages = kwargs.get("messages")
            if isinstance(messages, (list, tuple)):  # any other iterable is the SDK's to consume, once
                attrs[names.GEN_AI_INPUT_MESSAGES] = _json(messages)
            system = kwargs.get("system")
            if isinstance(system, (str, list, tuple)):
                attrs[names.GEN_AI_SYSTEM_INSTRUCTIONS] = _json(system)
        return str(kwargs.get("model", "unknown")), attrs

    def prepare(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if kwargs.get("stream") is True:
            return kwargs, MessageStreamAccumulator(self._capture())
        return kwargs, None

    def is_stream(self, result: Any) -> bool:
        if self._stream_types is None:
            import anthropic

            self._stream_types = (anthropic.Stream, anthropic.AsyncStream)
        return isinstance(result, self._stream_types)

    def response(self, result: Any, kwargs: dict[str, Any]) -> Outcome | None:
        if hasattr(result, "http_response") and hasattr(result, "parse"):
            # `with_raw_response`: the body is read already, so its JSON is there to read; a body the app
            # asked to stream (`with_streaming_response`) is left to the app, and the call is unpriced.
            http_response = result.http_response
            if kwargs.get("stream") or not http_response.is_closed:
                return None
            result = http_response.json()
        usage = _get(result, "usage")
        if usage is None:
            return None
        attrs: dict[str, Any] = {}
        response_id = _get(result, "id")
        if isinstance(response_id, str):
            attrs[names.GEN_AI_RESPONSE_ID] = response_id
        stop_reason = _get(result, "stop_reason")
        if isinstance(stop_reason, str):
            attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [stop_reason]
        if self._capture():
            attrs[names.GEN_AI_OUTPUT_MESSAGES] = _json(
                [{"role": "assistant", "content": _get(result, "content")}])
        model = _get(result, "model")
        return Outcome(message_usage(usage), model if isinstance(model, str) else None, attrs)


_USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class MessageStreamAccumulator:
    """Message stream events: `message_start` has the model, the id and the input usage (cache counts
    included); each `message_delta` has cumulative usage (output, and in the current API input and cache
    counts), so the largest count reported wins; `message_stop` ends a complete stream."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.model: str | None = None
        self.response_id: str | None = None
        self.counts: dict[str, int] = {}
        self.cache_creation: dict[str, int] = {}
        self.thinking_tokens = 0
        self.stop_reason: str | None = None
        self.delta_seen = False
        self.done = False
        self.output_chars = 0
        self.text: list[str] = []

    def _take(self, usage: Any) -> None:
        for field in _USAGE_COUNTS:
            value = getattr(usage, field, None)
            if isinstance(value, int) and not isinstance(value, bool):
                self.counts[field] = max(value, self.counts.get(field, 0))
        creation = getattr(usage, "cache_creation", None)
        for field in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
            value = getattr(creation, field, None)
            if isinstance(value, int):
                self.cache_creation[field] = max(value, self.cache_creation.get(field, 0))
        thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
        if isinstance(thinking, int):
            self.thinking_tokens = max(thinking, self.thinking_tokens)

    def feed(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            text = getattr(delta, "text", None) or getattr(delta, "thinking", None) \
                or getattr(delta, "partial_json", None)
            if isinstance(text, str):
                self.output_chars += len(text)
                if self.capture and getattr(delta, "type", None) == "text_delta":
                    self.text.append(text)
        elif kind == "message_start":
            message = getattr(event, "message", None)
            model = getattr(message, "model", None)
            self.model = model if isinstance(model, str) else self.model
            response_id = getattr(message, "id", None)
            self.response_id = response_id if isinstance(response_id, str) else self.response_id
            self._take(getattr(message, "usage", None))
        elif kind == "message_delta":
            self.delta_seen = True
            self._take(getattr(event, "usage", None))
            reason = getattr(getattr(event, "delta", None), "stop_reason", None)
            if isinstance(reason, str):
                self.stop_reason = reason
        elif kind == "message_stop":
            self.done = True
        return False

    @property
    def complete(self) -> bool:
        return self.done

    def outcome(self) -> Outcome | None:
        """None before `message_start`: the call happened but nothing says what it cost (unpriced)."""
        if not self.counts:
            return None
        attrs: dict[str, Any] = {}
        if self.response_id:
            attrs[names.GEN_AI_RESPONSE_ID] = self.response_id
        if self.stop_reason:
            attrs[names.GEN_AI_RESPONSE_FINISH_REASONS] = [self.stop_reason]
        if self.capture:
            content = [{"type": "text", "text": "".join(self.text)}] if self.text else []
            attrs[names.GEN_AI_OUTPUT_MESSAGES] = _json([{"role": "assistant", "content": content}])
        raw: dict[str, Any] = dict(self.counts)
        if self.cache_creation:
            raw["cache_creation"] = self.cache_creation
        if self.thinking_tokens:
            raw["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        estimated = False
        if not self.delta_seen:
            # `message_start` holds a placeholder output count; until `message_delta` reports the real one,
            # the text streamed so far is the better measure of what the server generated and bills.
            guess = estimate_tokens(self.output_chars)
            if guess > raw.get("output_tokens", 0):
                raw["output_tokens"] = guess
                estimated = True
        return Outcome(message_usage(raw), self.model, attrs, estimated=estimated)


class BatchLedger:
    """Which batch results this process has priced already: each (batch, custom_id) once, so reading a
    batch's results twice (or again after an interrupted read) never counts a result twice."""

    def __init__(self, max_batches: int = 1024) -> None:
        self._seen: OrderedDict[str, set[str]] = OrderedDict()
        self._max = max_batches
        self._lock = threading.Lock()

    def first_time(self, batch_id: str, custom_id: str) -> bool:
        with self._lock:
            seen = self._seen.get(batch_id)
            if seen is None:
                seen = self._seen[batch_id] = set()
                while len(self._seen) > self._max:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(batch_id)
            if custom_id in seen:
                return False
            seen.add(custom_id)
            return True


batch_ledger = BatchLedger()
"""One per process, whichever instrumentor instance (or re-instrumentation) reads the results."""


class BatchResultsRead:
    """One read of `messages.batches.results(id)`, in the shared stream proxy as its call and accumulator.

    Each succeeded result not priced before is added to its model's usage; when the read ends (read to
    the end, closed, failed or dropped) it becomes one priced call per model, at the batch discount,
    under operation `batch`. A read with nothing new records nothing.
    """

    operation = "batch"

    def __init__(self, telemetry: Telemetry, provider: str, batch_id: str, ledger: BatchLedger,
                 attributes: Mapping[str, Any]) -> None:
        self.telemetry = telemetry
        self.provider = provider
        self.batch_id = batch_id
        self.ledger = ledger
        self.attributes = {**attributes, "llmcost.batch.id": batch_id}
        self.calls: dict[str, Call] = {}
        self.usage: dict[str, Usage] = {}
        self.ended = False
        self.done = False

    # -- accumulator ---------------------------------------------------------------------------
    def feed(self, line: Any) -> bool:
        result = getattr(line, "result", None)
        if getattr(result, "type", None) != "succeeded":
            return False
        message = getattr(result, "message", None)
        usage = getattr(message, "usage", None)
        custom_id = getattr(line, "custom_id", None)
        if usage is None or not isinstance(custom_id, str):
            return False
        if not self.ledger.first_time(self.batch_id, custom_id):
            return False
        model = getattr(message, "model", None)
        model = model if isinstance(model, str) else "unknown"
        normalised = message_usage(usage)
        if model not in self.calls:
            self.calls[model] = self.telemetry.start(self.provider, self.operation, model, self.attributes)
            self.usage[model] = normalised
        else:
            self.usage[model] = self.usage[model] + normalised
        return False

    @property
    def complete(self) -> bool:
        return True  # what was read is priced; the rest is priced when it is read

    def outcome(self) -> Outcome:
        return Outcome(None)

    # -- call ------------------------------------------------------------------------------------
    def chunk_received(self) -> None:
        pass

    def finish(self, usage: Usage | None = None, response_model: str | None = None,
               response_attributes: Mapping[str, Any] | None = None, *, batch: bool = False,
               incomplete: bool = False, estimated: bool = False, unpriced: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        for model, call in self.calls.items():
            finish(call, Outcome(self.usage[model], model, batch=True))

    def fail(self, error: BaseException, usage: Usage | None = None, response_model: str | None = None) -> None:
        """The read broke off: what was read is still billed (at the batch rate); the spans say the read failed."""
        if self.ended:
            return
        self.ended = True
        from opentelemetry.trace import Status, StatusCode

        from ...telemetry import status_description

        error_type = type(error).__qualname__
        for model, call in self.calls.items():
            call.span.set_attribute(names.ERROR_TYPE, error_type)
            call.span.set_status(Status(StatusCode.ERROR, status_description(error)))
            call.finish(self.usage[model], model, batch=True, incomplete=True, error_type=error_type)
