"""Anthropic: `messages.create` / `parse` / the `messages.stream` helper, stable and beta.

Stored form: the final `Message` JSON. A stream is put together from its raw events (`message_start`,
the content blocks and their deltas, `message_delta`, `message_stop`); a cached message is replayed
as that same sequence of raw events, so the SDK's `MessageStream` (the `messages.stream()` helper, with
`text_stream`, `get_final_message()` ...) runs on top of it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ...instrumentation.anthropic.patch import message_usage
from ...pricing import Usage
from ._common import RequestView, build, by_type, pieces, plain, sdk_sentinel

_APART = frozenset({"messages", "model", "system", "tools", "output_config", "output_format", "stream"})
_FINISHED = ("end_turn", "max_tokens", "stop_sequence")
_ANSWER_BLOCKS = ("text", "thinking", "redacted_thinking")
_TOOL_INPUT_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")
_USAGE_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens",
                 "server_tool_use", "output_tokens_details")


def _given(kwargs: Mapping[str, Any], name: str) -> Any:
    value = kwargs.get(name)
    return None if sdk_sentinel(value) else value


class MessagesCodec:
    """One Messages endpoint (see the module doc); `beta` picks the `Beta*` types, `parse` the parsed ones."""

    api = "anthropic.messages"

    def __init__(self, beta: bool = False, parse: bool = False) -> None:
        self.beta = beta
        self.parse = parse
        self._events: dict[str, type] | None = None

    def _message_class(self) -> Any:
        if self.beta:
            from anthropic.types.beta import BetaMessage

            return BetaMessage
        from anthropic.types import Message

        return Message

    # -- request -----------------------------------------------------------------------------
    def view(self, kwargs: Mapping[str, Any]) -> RequestView | None:
        messages = kwargs.get("messages")
        if not isinstance(messages, (list, tuple)):
            return None
        extra = kwargs.get("extra_body")
        sampling = dict(extra) if isinstance(extra, Mapping) else {}
        return RequestView(
            model=str(kwargs.get("model")),
            messages=plain(list(messages)),
            system=plain(_given(kwargs, "system")),
            tools=plain(_given(kwargs, "tools")),
            response_format=plain({"output_config": _given(kwargs, "output_config"),
                                   "output_format": _given(kwargs, "output_format")}),
            params={k: plain(v) for k, v in kwargs.items() if k not in _APART and not sdk_sentinel(v)},
            sampling=sampling,
            stream=kwargs.get("stream") is True,
        )

    # -- storing -------------------------------------------------------------------------------
    def encode(self, response: Any) -> dict[str, Any] | None:
        if not isinstance(response, self._message_class()) or not hasattr(response, "model_dump"):
            return None
        body: dict[str, Any] = response.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
        body.pop("parsed_output", None)
        for block in body.get("content") or ():
            block.pop("parsed_output", None)
        return body

    def assemble(self, events: Sequence[Any]) -> dict[str, Any] | None:
        """The `Message` JSON a stream read to `message_stop` amounts to; None otherwise."""
        message: dict[str, Any] | None = None
        blocks: dict[int, dict[str, Any]] = {}
        inputs: dict[int, str] = {}
        done = False
        for event in events:
            if not hasattr(event, "model_dump"):
                return None
            data = event.model_dump(mode="json", by_alias=True, exclude_unset=True)
            kind = data.get("type")
            if kind == "message_start":
                message = dict(data["message"])
                message["usage"] = dict(message.get("usage") or {})
            elif kind == "content_block_start":
                block = blocks[int(data["index"])] = dict(data["content_block"])
                if block.get("type") in _TOOL_INPUT_BLOCKS:
                    inputs[int(data["index"])] = ""
            elif kind == "content_block_delta":
                index = int(data["index"])
                block, delta = blocks[index], data["delta"]
                change = delta.get("type")
                if change == "text_delta":
                    block["text"] = (block.get("text") or "") + delta["text"]
                elif change == "input_json_delta":
                    inputs[index] = inputs.get(index, "") + delta["partial_json"]
                elif change == "thinking_delta":
                    block["thinking"] = (block.get("thinking") or "") + delta["thinking"]
                elif change == "signature_delta":
                    block["signature"] = delta["signature"]
                elif change == "citations_delta":
                    block["citations"] = [*(block.get("citations") or ()), delta["citation"]]
                else:
                    return None  # a delta we do not know how to put together: not stored
            elif kind == "content_block_stop":
                index = int(data["index"])
                if inputs.get(index):
                    blocks[index]["input"] = json.loads(inputs[index])
            elif kind == "message_delta" and message is not None:
                message.update({k: v for k, v in (data.get("delta") or {}).items()
                                if v is not None or k in ("stop_reason", "stop_sequence")})
                for key, value in (data.get("usage") or {}).items():
                    if value is not None:
                        message["usage"][key] = value
            elif kind == "message_stop":
                done = True
        if not done or message is None:
            return None
        message["content"] = [blocks[i] for i in sorted(blocks)]
        return message

    def refuse(self, body: Mapping[str, Any], cache_all: bool) -> str | None:
        reason = body.get("stop_reason")
        if reason == "refusal":
            return "refusal"
        uses_tools = reason == "tool_use" or any(
            block.get("type") not in _ANSWER_BLOCKS for block in body.get("content") or ())
        if uses_tools and not cache_all:
            return "tool call"
        if reason not in _FINISHED and reason != "tool_use":
            return f"stop reason {reason}"
        return None

    def usage(self, body: Mapping[str, Any]) -> Usage | None:
        usage = body.get("usage")
        return message_usage(usage) if isinstance(usage, Mapping) else None

    def model(self, body: Mapping[str, Any]) -> str | None:
        model = body.get("model")
        return model if isinstance(model, str) else None

    # -- serving -------------------------------------------------------------------------------
    def rebuild(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        message = build(self._message_class(), body)
        if not self.parse:
            return message
        import anthropic
        from anthropic.lib._parse import _response

        output_format = kwargs.get("output_format", anthropic.NOT_GIVEN)
        if output_format is None or sdk_sentinel(output_format):
            output_format = anthropic.NOT_GIVEN
        parse = _response.parse_beta_response if self.beta else _response.parse_response
        return parse(output_format=output_format, response=message)

    def replay(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The raw stream events of `body`, in the order the API sends them."""
        if self._events is None:
            if self.beta:
                from anthropic.types.beta import BetaRawMessageStreamEvent as events
            else:
                from anthropic.types import RawMessageStreamEvent as events
            self._events = by_type(events)
        classes = self._events
        out: list[Any] = []

        def event(kind: str, **data: Any) -> None:
            out.append(build(classes[kind], {"type": kind, **data}))

        usage = dict(body.get("usage") or {})
        output_tokens = usage.get("output_tokens") or 0
        started = {**body, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {**usage, "output_tokens": min(1, output_tokens)}}
        started.pop("stop_details", None)
        event("message_start", message=started)
        for index, block in enumerate(body.get("content") or ()):
            kind = block.get("type")
            if kind == "text":
                event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                for citation in block.get("citations") or ():
                    event("content_block_delta", index=index, delta={"type": "citations_delta", "citation": citation})
                for piece in pieces(block.get("text") or ""):
                    event("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
            elif kind == "thinking":
                event("content_block_start", index=index,
                      content_block={"type": "thinking", "thinking": "", "signature": ""})
                for piece in pieces(block.get("thinking") or ""):
                    event("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": piece})
                event("content_block_delta", index=index,
                      delta={"type": "signature_delta", "signature": block.get("signature") or ""})
            elif kind in _TOOL_INPUT_BLOCKS:
                event("content_block_start", index=index, content_block={**block, "input": {}})
                for piece in pieces(json.dumps(block.get("input") or {}), words=8):
                    event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
            else:
                event("content_block_start", index=index, content_block=block)
            event("content_block_stop", index=index)
        delta = {key: body.get(key) for key in ("stop_reason", "stop_sequence")}
        for key in ("stop_details", "container"):
            if body.get(key) is not None:
                delta[key] = body[key]
        event("message_delta", delta=delta,
              usage={key: usage[key] for key in _USAGE_COUNTS if usage.get(key) is not None}
              | {"output_tokens": output_tokens})
        event("message_stop")
        return out
