"""OpenAI: Chat Completions (`ChatCompletion`, streamed as `ChatCompletionChunk`s) and the Responses API
(`Response`, streamed as `ResponseStreamEvent`s), `create` and `parse`.

The stored form is the final response's JSON, whichever way it came: a stream's chunks (or events)
are put together into the response it amounts to, and a response is cut into chunks when a stream asks
for it. `parse` results are stored as the plain response (the parsed fields left out) and parsed again,
with the SDK's own parser and the request's format, when served.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from ...instrumentation.openai.patch import AddedStreamOptions
from ...pricing import Usage
from ...pricing import usage as usage_mod
from ._common import RequestView, build, by_type, pieces, plain, sdk_sentinel

_CHAT_APART = frozenset({"messages", "model", "tools", "response_format", "stream", "stream_options"})
_RESPONSES_APART = frozenset({"input", "model", "instructions", "tools", "text", "text_format", "stream",
                              "stream_options"})
_CHAT_FINISHED = ("stop", "length")
_CHAT_TOOL_CALL = ("tool_calls", "function_call")


def _given(kwargs: Mapping[str, Any], name: str) -> Any:
    value = kwargs.get(name)
    return None if sdk_sentinel(value) else value


def _sampling(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    extra = kwargs.get("extra_body")
    found: dict[str, Any] = dict(extra) if isinstance(extra, Mapping) else {}
    for name in ("temperature", "seed"):
        value = _given(kwargs, name)
        if value is not None:
            found[name] = value
    return found


def _params(kwargs: Mapping[str, Any], apart: frozenset[str]) -> dict[str, Any]:
    return {k: plain(v) for k, v in kwargs.items() if k not in apart and not sdk_sentinel(v)}


def _dump(obj: Any) -> dict[str, Any]:
    # (parsed results hold the app's own classes, which pydantic warns about but dumps; they are dropped)
    data: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
    return data


def _omit() -> Any:
    import openai

    return openai.omit


class ChatCodec:
    """`chat.completions.create` / `parse` (and the `stream` helper, which calls `create`)."""

    api = "openai.chat"

    def __init__(self, parse: bool = False) -> None:
        self.parse = parse

    # -- request -----------------------------------------------------------------------------
    def view(self, kwargs: Mapping[str, Any]) -> RequestView | None:
        messages = kwargs.get("messages")
        if not isinstance(messages, (list, tuple)):
            return None  # an iterator the SDK consumes once: not ours to read
        return RequestView(
            model=str(kwargs.get("model")),
            messages=plain(list(messages)),
            tools=plain(_given(kwargs, "tools")),
            response_format=plain(_given(kwargs, "response_format")),
            params=_params(kwargs, _CHAT_APART),
            sampling=_sampling(kwargs),
            stream=kwargs.get("stream") is True,
        )

    # -- storing -------------------------------------------------------------------------------
    def encode(self, response: Any) -> dict[str, Any] | None:
        from openai.types.chat import ChatCompletion

        if not isinstance(response, ChatCompletion):
            return None
        body = _dump(response)
        for choice in body.get("choices") or ():
            message = choice.get("message") or {}
            message.pop("parsed", None)
            for call in message.get("tool_calls") or ():
                (call.get("function") or {}).pop("parsed_arguments", None)
        return body

    def assemble(self, chunks: Sequence[Any]) -> dict[str, Any] | None:
        """The `ChatCompletion` JSON a complete stream amounts to; None for a stream cut short."""
        head: dict[str, Any] = {}
        usage: Any = None
        states: dict[int, dict[str, Any]] = {}
        for chunk in chunks:
            if not hasattr(chunk, "model_dump"):
                return None
            data = _dump(chunk)
            for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
                if data.get(key) is not None:
                    head.setdefault(key, data[key])
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or ():
                state = states.setdefault(int(choice.get("index") or 0), {
                    "role": None, "content": [], "refusal": [], "tools": {}, "function": None,
                    "finish": None, "logprobs": None})
                delta = choice.get("delta") or {}
                state["role"] = delta.get("role") or state["role"]
                if isinstance(delta.get("content"), str):
                    state["content"].append(delta["content"])
                if isinstance(delta.get("refusal"), str):
                    state["refusal"].append(delta["refusal"])
                for call in delta.get("tool_calls") or ():
                    slot = state["tools"].setdefault(int(call.get("index") or 0), {
                        "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                    slot["id"] = call.get("id") or slot["id"]
                    slot["type"] = call.get("type") or slot["type"]
                    function = call.get("function") or {}
                    slot["function"]["name"] += function.get("name") or ""
                    slot["function"]["arguments"] += function.get("arguments") or ""
                if delta.get("function_call"):
                    legacy = state["function"] = state["function"] or {"name": "", "arguments": ""}
                    legacy["name"] += delta["function_call"].get("name") or ""
                    legacy["arguments"] += delta["function_call"].get("arguments") or ""
                if choice.get("finish_reason"):
                    state["finish"] = choice["finish_reason"]
                logprobs = choice.get("logprobs")
                if logprobs:
                    kept = state["logprobs"] = state["logprobs"] or {"content": None, "refusal": None}
                    for kind in ("content", "refusal"):
                        if logprobs.get(kind):
                            kept[kind] = (kept[kind] or []) + list(logprobs[kind])
        if not states or any(state["finish"] is None for state in states.values()) or "id" not in head:
            return None
        choices = []
        for index in sorted(states):
            state = states[index]
            text = "".join(state["content"])
            message: dict[str, Any] = {
                "role": state["role"] or "assistant",
                "content": text if (text or not (state["tools"] or state["function"])) else None,
                "refusal": "".join(state["refusal"]) or None,
            }
            if state["tools"]:
                message["tool_calls"] = [state["tools"][i] for i in sorted(state["tools"])]
            if state["function"]:
                message["function_call"] = state["function"]
            choices.append({"index": index, "message": message, "finish_reason": state["finish"],
                            "logprobs": state["logprobs"]})
        body = {"object": "chat.completion", **head, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body

    def refuse(self, body: Mapping[str, Any], cache_all: bool) -> str | None:
        """Why this response must not be stored (a refusal, a tool call, an unfinished answer), or None."""
        choices = body.get("choices") or ()
        if not choices:
            return "no choices"
        for choice in choices:
            reason = choice.get("finish_reason")
            message = choice.get("message") or {}
            if reason == "content_filter" or message.get("refusal"):
                return "refusal"
            if reason in _CHAT_TOOL_CALL or message.get("tool_calls") or message.get("function_call"):
                if not cache_all:
                    return "tool call"
                continue
            if reason not in _CHAT_FINISHED:
                return f"finish reason {reason}"
        return None

    def usage(self, body: Mapping[str, Any]) -> Usage | None:
        usage = body.get("usage")
        return usage_mod.from_openai(usage) if isinstance(usage, Mapping) else None

    def model(self, body: Mapping[str, Any]) -> str | None:
        model = body.get("model")
        return model if isinstance(model, str) else None

    # -- serving -------------------------------------------------------------------------------
    def rebuild(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        from openai.types.chat import ChatCompletion

        completion = build(ChatCompletion, body)
        if not self.parse:
            return completion
        from openai.lib._parsing._completions import parse_chat_completion

        omit = _omit()
        return parse_chat_completion(response_format=kwargs.get("response_format", omit),
                                     input_tools=kwargs.get("tools", omit), chat_completion=completion)

    def replay(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The `ChatCompletionChunk`s of `body` as the API streams them: a role chunk, content pieces, tool
        call pieces, a finish chunk per choice, and the usage chunk when the app asked for it."""
        from openai.types.chat import ChatCompletionChunk

        options = kwargs.get("stream_options")
        include_usage = (isinstance(options, Mapping) and bool(options.get("include_usage"))
                         and not isinstance(options, AddedStreamOptions))
        head = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created"),
                "model": body.get("model")}
        for key in ("service_tier", "system_fingerprint"):
            if key in body:
                head[key] = body[key]
        if include_usage:
            head["usage"] = None
        out: list[dict[str, Any]] = []

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> None:
            out.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                                             "logprobs": logprobs}]})

        for choice in body.get("choices") or ():
            index = int(choice.get("index") or 0)
            message = choice.get("message") or {}
            chunk(index, {"role": message.get("role") or "assistant", "content": "", "refusal": None})
            logprobs = choice.get("logprobs")
            for n, piece in enumerate(pieces(message.get("content") or "")):
                chunk(index, {"content": piece}, logprobs=logprobs if n == 0 else None)
            for position, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                chunk(index, {"tool_calls": [{"index": position, "id": call.get("id"), "type": call.get("type"),
                                              "function": {"name": function.get("name"), "arguments": ""}}]})
                for piece in pieces(function.get("arguments") or "", words=8):
                    chunk(index, {"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
            legacy = message.get("function_call")
            if legacy:
                chunk(index, {"function_call": dict(legacy)})
            chunk(index, {}, choice.get("finish_reason"))
        if include_usage and body.get("usage") is not None:
            out.append({**head, "choices": [], "usage": body["usage"]})
        return [build(ChatCompletionChunk, data) for data in out]


class ResponsesCodec:
    """`responses.create` / `parse` (and the `stream` helper, which calls `create`).

    Calls that keep state at OpenAI beyond the answer (`conversation`, `background`) are not cached: a
    cached answer would not be added to the conversation.
    """

    api = "openai.responses"

    def __init__(self, parse: bool = False) -> None:
        self.parse = parse
        self._events: dict[str, type] | None = None

    def view(self, kwargs: Mapping[str, Any]) -> RequestView | None:
        if _given(kwargs, "conversation") is not None or _given(kwargs, "background"):
            return None
        given = _given(kwargs, "input")
        if isinstance(given, str):
            messages: list[Any] = [{"role": "user", "content": given}]
        elif isinstance(given, (list, tuple)):
            messages = plain(list(given))
        elif given is None:
            messages = []
        else:
            return None
        return RequestView(
            model=str(kwargs.get("model")),
            messages=messages,
            system=plain(_given(kwargs, "instructions")),
            tools=plain(_given(kwargs, "tools")),
            response_format=plain({"text": _given(kwargs, "text"), "text_format": _given(kwargs, "text_format")}),
            params=_params(kwargs, _RESPONSES_APART),
            sampling=_sampling(kwargs),
            stream=kwargs.get("stream") is True,
        )

    def encode(self, response: Any) -> dict[str, Any] | None:
        from openai.types.responses import Response

        if not isinstance(response, Response):
            return None
        body = _dump(response)
        for item in body.get("output") or ():
            item.pop("parsed_arguments", None)
            for part in item.get("content") or () if item.get("type") == "message" else ():
                part.pop("parsed", None)
        return body

    def assemble(self, events: Sequence[Any]) -> dict[str, Any] | None:
        """The final `Response` of a stream that completed (its `response.completed` event)."""
        for event in reversed(events):
            if getattr(event, "type", None) == "response.completed":
                return self.encode(getattr(event, "response", None))
        return None

    def refuse(self, body: Mapping[str, Any], cache_all: bool) -> str | None:
        if body.get("status") != "completed":
            return f"status {body.get('status')}"
        output = body.get("output") or ()
        if not output:
            return "no output"
        for item in output:
            kind = item.get("type")
            if kind == "message":
                if any(part.get("type") == "refusal" for part in item.get("content") or ()):
                    return "refusal"
            elif kind != "reasoning" and not cache_all:
                return "tool call"
        return None

    def usage(self, body: Mapping[str, Any]) -> Usage | None:
        usage = body.get("usage")
        return usage_mod.from_openai_responses(usage) if isinstance(usage, Mapping) else None

    def model(self, body: Mapping[str, Any]) -> str | None:
        model = body.get("model")
        return model if isinstance(model, str) else None

    def rebuild(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        from openai.types.responses import Response

        response = build(Response, body)
        if not self.parse:
            return response
        from openai.lib._parsing._responses import parse_response

        omit = _omit()
        return parse_response(text_format=kwargs.get("text_format", omit), input_tools=kwargs.get("tools", omit),
                              response=response)

    def replay(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The `ResponseStreamEvent`s of `body`: created, in_progress, each output item added, its text
        (or arguments) in pieces and done, then `response.completed` with the whole response."""
        if self._events is None:
            from openai.types.responses import ResponseStreamEvent

            self._events = by_type(ResponseStreamEvent)
        classes = self._events
        sequence = itertools.count()
        out: list[Any] = []

        def event(kind: str, **data: Any) -> None:
            out.append(build(classes[kind], {"type": kind, **data, "sequence_number": next(sequence)}))

        started = {**body, "status": "in_progress", "output": [], "usage": None}
        for key in ("completed_at", "incomplete_details", "error"):
            if key in started:
                started[key] = None
        event("response.created", response=started)
        event("response.in_progress", response=started)
        for i, item in enumerate(body.get("output") or ()):
            kind, item_id = item.get("type"), item.get("id")
            if kind == "message":
                event("response.output_item.added", output_index=i,
                      item={**item, "status": "in_progress", "content": []})
                for j, part in enumerate(item.get("content") or ()):
                    ids = {"item_id": item_id, "output_index": i, "content_index": j}
                    if part.get("type") != "output_text":
                        event("response.content_part.added", **ids, part=part)
                        event("response.content_part.done", **ids, part=part)
                        continue
                    text = part.get("text") or ""
                    event("response.content_part.added", **ids,
                          part={**part, "text": "", "annotations": [], **({"logprobs": []} if "logprobs" in part else {})})
                    for piece in pieces(text):
                        event("response.output_text.delta", **ids, delta=piece, logprobs=[])
                    for k, annotation in enumerate(part.get("annotations") or ()):
                        event("response.output_text.annotation_added", **ids, annotation_index=k, annotation=annotation)
                    event("response.output_text.done", **ids, text=text, logprobs=part.get("logprobs") or [])
                    event("response.content_part.done", **ids, part=part)
            elif kind == "function_call":
                arguments = item.get("arguments") or ""
                event("response.output_item.added", output_index=i,
                      item={**item, "arguments": "", "status": "in_progress"})
                for piece in pieces(arguments, words=8):
                    event("response.function_call_arguments.delta", item_id=item_id, output_index=i, delta=piece)
                event("response.function_call_arguments.done", item_id=item_id, output_index=i, arguments=arguments)
            else:
                event("response.output_item.added", output_index=i, item=item)
            event("response.output_item.done", output_index=i, item=item)
        event("response.completed", response=dict(body))
        return out
