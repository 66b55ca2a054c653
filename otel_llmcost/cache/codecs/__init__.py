"""Per-SDK codecs of the response cache: what a request is keyed by, what of a response is stored, and
how a stored response becomes the SDK's own objects again (a response, or a stream of chunks/events).

One stored form per API (the final response's JSON), whichever way it came (a response or a stream),
so an answer cached from a plain call serves a stream and the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ...pricing import Usage
from ._common import AsyncReplayStream, ReplayStream, RequestView

__all__ = ["AsyncReplayStream", "Codec", "ReplayStream", "RequestView", "codec_for"]


class Codec(Protocol):
    """One SDK method's request and response shapes (see the module doc)."""

    api: str
    """Names the stored form (`openai.chat`, `anthropic.messages`, ...); part of every key."""

    def view(self, kwargs: Mapping[str, Any]) -> RequestView | None:
        """The request as keys see it; None when it cannot be cached (its shape says so)."""

    def encode(self, response: Any) -> dict[str, Any] | None:
        """The stored JSON of a response; None when it is not the SDK's response type."""

    def assemble(self, chunks: Sequence[Any]) -> dict[str, Any] | None:
        """The stored JSON of a complete stream's chunks; None for a stream cut short."""

    def refuse(self, body: Mapping[str, Any], cache_all: bool) -> str | None:
        """Why the response must not be stored (refusal, tool call, unfinished), or None."""

    def usage(self, body: Mapping[str, Any]) -> Usage | None: ...

    def model(self, body: Mapping[str, Any]) -> str | None: ...

    def rebuild(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        """The SDK's response object (parsed, for a `parse` call)."""

    def replay(self, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """The SDK's chunk or event objects of a stream that says the same."""


_codecs: dict[tuple[str, bool, bool], Codec] = {}


def codec_for(endpoint: Any) -> Codec | None:
    """The codec of an instrumentation endpoint (the SDK method being called), or None for one the cache
    does not serve (embeddings, batches)."""
    from ...instrumentation.anthropic.patch import MessagesEndpoint
    from ...instrumentation.google_genai.patch import GenerateContentEndpoint
    from ...instrumentation.openai.patch import OpenAIEndpoint

    parse = getattr(endpoint, "method", "create") == "parse"
    key: tuple[str, bool, bool]
    if isinstance(endpoint, OpenAIEndpoint) and endpoint.kind in ("chat", "responses"):
        key = (f"openai.{endpoint.kind}", parse, False)
    elif isinstance(endpoint, MessagesEndpoint):
        key = ("anthropic", parse, bool(getattr(endpoint, "beta", False)))
    elif isinstance(endpoint, GenerateContentEndpoint):
        key = ("google", False, bool(endpoint.stream))
    else:
        return None
    codec = _codecs.get(key)
    if codec is None:
        codec = _codecs[key] = _make(*key)
    return codec


def _make(kind: str, parse: bool, flag: bool) -> Codec:
    if kind == "openai.chat":
        from .openai import ChatCodec

        return ChatCodec(parse)
    if kind == "openai.responses":
        from .openai import ResponsesCodec

        return ResponsesCodec(parse)
    if kind == "anthropic":
        from .anthropic import MessagesCodec

        return MessagesCodec(beta=flag, parse=parse)
    from .google import GenerateContentCodec

    return GenerateContentCodec(stream=flag)
