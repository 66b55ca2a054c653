"""google-genai: one Gemini request (`Models._generate_content` / `_generate_content_stream`, sync and
async, which every public generate method and `client.chats` go through).

Stored form: the final `GenerateContentResponse` JSON (the SDK's HTTP headers, automatic function calling
history and `parsed` value left out). A stream's chunks are merged into it (texts joined, the last
chunk's finish reasons and usage kept); a cached response is replayed as chunks of a few words each,
the last one carrying the finish reasons and the usage, as Gemini streams them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ...instrumentation.google_genai.patch import model_name
from ...pricing import Usage
from ...pricing import usage as usage_mod
from ._common import RequestView, pieces, plain

_EXCLUDE = {"sdk_http_response", "automatic_function_calling_history", "parsed"}
# Client-side options and billing labels: they never change the answer.
_NOT_IN_KEY = ("http_options", "automatic_function_calling", "automatic_continuation",
               "should_return_http_response", "labels", "store")
_FORMAT = ("response_schema", "response_json_schema", "response_mime_type")
_FINISHED = ("STOP", "MAX_TOKENS")
_REFUSED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR", "LANGUAGE"})
_TOOL_PARTS = ("function_call", "executable_code", "code_execution_result", "tool_call", "tool_response")
_TEXT_KEYS = frozenset({"text", "thought"})


def _contents(contents: Any) -> list[Any]:
    """The request's contents as a list of `Content` JSON, however the app gave them (a string, parts,
    dicts): the SDK's own conversion, so equal prompts get equal keys."""
    if isinstance(contents, str):
        return [{"role": "user", "parts": [{"text": contents}]}]
    from google.genai import _transformers

    converted = _transformers.t_contents(contents)
    return [plain(content) for content in converted]


def _dump(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = response.model_dump(mode="json", exclude_none=True, exclude=_EXCLUDE)
    return data


def _mergeable(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (isinstance(a.get("text"), str) and isinstance(b.get("text"), str) and set(a) <= _TEXT_KEYS
            and set(b) <= _TEXT_KEYS and bool(a.get("thought")) == bool(b.get("thought")))


class GenerateContentCodec:
    """One `generate_content` request, streamed (`stream=True`) or not."""

    api = "google.generate_content"

    def __init__(self, stream: bool = False) -> None:
        self.stream = stream

    # -- request -----------------------------------------------------------------------------
    def view(self, kwargs: Mapping[str, Any]) -> RequestView | None:
        config = kwargs.get("config")
        settings = plain(config) if config is not None else {}
        if not isinstance(settings, dict) or settings.get("should_return_http_response"):
            return None  # the app asked for the raw HTTP response: nothing we could give back
        system = settings.pop("system_instruction", None)
        tools = settings.pop("tools", None)
        response_format = {key: settings.pop(key, None) for key in _FORMAT}
        for key in _NOT_IN_KEY:
            settings.pop(key, None)
        return RequestView(
            model=model_name(kwargs.get("model")),
            messages=_contents(kwargs.get("contents")),
            system=system,
            tools=tools,
            response_format=response_format,
            params={"config": settings},
            sampling={"config": config} if config is not None else {},
            stream=self.stream,
        )

    # -- storing -------------------------------------------------------------------------------
    def encode(self, response: Any) -> dict[str, Any] | None:
        from google.genai import types

        if not isinstance(response, types.GenerateContentResponse):
            return None
        return _dump(response)

    def assemble(self, chunks: Sequence[Any]) -> dict[str, Any] | None:
        """The response a stream amounts to; None unless every candidate finished."""
        body: dict[str, Any] = {}
        candidates: dict[int, dict[str, Any]] = {}
        for chunk in chunks:
            encoded = self.encode(chunk)
            if encoded is None:
                return None
            for key, value in encoded.items():
                if key != "candidates":
                    body[key] = value
            for position, candidate in enumerate(encoded.get("candidates") or ()):
                index = candidate.get("index", position)
                slot = candidates.setdefault(index, {"content": {"parts": []}})
                content = candidate.get("content") or {}
                if content.get("role"):
                    slot["content"]["role"] = content["role"]
                parts = slot["content"]["parts"]
                for part in content.get("parts") or ():
                    if parts and _mergeable(parts[-1], part):
                        parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                    else:
                        parts.append(dict(part))
                for key, value in candidate.items():
                    if key != "content":
                        slot[key] = value
        if not candidates or any("finish_reason" not in c for c in candidates.values()):
            return None
        body["candidates"] = [candidates[i] for i in sorted(candidates)]
        return body

    def refuse(self, body: Mapping[str, Any], cache_all: bool) -> str | None:
        if (body.get("prompt_feedback") or {}).get("block_reason"):
            return "refusal"
        candidates = body.get("candidates") or ()
        if not candidates:
            return "no candidates"
        for candidate in candidates:
            reason = candidate.get("finish_reason")
            if reason in _REFUSED:
                return "refusal"
            if reason not in _FINISHED:
                return f"finish reason {reason}"
            parts = (candidate.get("content") or {}).get("parts") or ()
            if not cache_all and any(key in part for part in parts for key in _TOOL_PARTS):
                return "tool call"
        return None

    def usage(self, body: Mapping[str, Any]) -> Usage | None:
        usage = body.get("usage_metadata")
        return usage_mod.from_google(usage) if isinstance(usage, Mapping) else None

    def model(self, body: Mapping[str, Any]) -> str | None:
        model = body.get("model_version")
        return model if isinstance(model, str) and model else None

    # -- serving -------------------------------------------------------------------------------
    @staticmethod
    def _response(data: Mapping[str, Any]) -> Any:
        from google.genai import types

        response = types.GenerateContentResponse.model_validate_json(json.dumps(data))
        response.sdk_http_response = types.HttpResponse(headers={})
        return response

    def rebuild(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        response = self._response(body)
        config = kwargs.get("config")
        schema = {key: getattr(config, key, None) if not isinstance(config, Mapping) else config.get(key)
                  for key in ("response_schema", "response_json_schema")}
        if any(value is not None for value in schema.values()):
            # `parsed`, as the SDK fills it from the text and the request's schema.
            from google.genai import types

            parsed = types.GenerateContentResponse._from_response(
                response=json.loads(json.dumps(body)), kwargs={"config": schema})
            response.parsed = parsed.parsed
        return response

    def replay(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """Chunks of a few words; each candidate's last chunk has its finish reason and metadata, the
        very last one the usage."""
        head = {key: body[key] for key in ("model_version", "response_id", "create_time") if key in body}
        out: list[dict[str, Any]] = []
        for position, candidate in enumerate(body.get("candidates") or ()):
            index = candidate.get("index", position)
            content = candidate.get("content") or {}
            role = content.get("role") or "model"
            parts: list[dict[str, Any]] = []
            for part in content.get("parts") or ():
                if set(part) <= _TEXT_KEYS and isinstance(part.get("text"), str):
                    parts.extend({**part, "text": piece} for piece in pieces(part["text"], words=6) or [""])
                else:
                    parts.append(part)
            for part in parts[:-1]:
                out.append({**head, "candidates": [{"content": {"role": role, "parts": [part]}, "index": index}]})
            last = {"role": role, "parts": parts[-1:]}
            out.append({**head, "candidates": [{**candidate, "content": last}]})
        if not out:
            out.append(dict(head))
        for key in ("usage_metadata", "prompt_feedback", "model_status"):
            if key in body:
                out[-1][key] = body[key]
        return [self._response(data) for data in out]
