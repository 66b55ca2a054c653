"""Token usage in one shape, whatever the provider reported.

Providers count differently, and pricing must not care: OpenAI's `prompt_tokens` already include the
cached ones, Anthropic's `input_tokens` exclude cache reads and writes, Google reports thoughts apart
from candidates. `Usage` is always: all input tokens (cached ones included), all output tokens
(reasoning included), and the cached / cache-written / reasoning shares of those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call, normalised; see the module docstring for what each count includes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        values = (self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens,
                  self.cache_write_1h_tokens, self.reasoning_tokens)
        # Every priced call builds a Usage: plain ints pass on one identity test (bool is not int here).
        for field, value in zip(self.__slots__, values, strict=True):
            if value.__class__ is not int and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"usage {field}={value!r} is not a whole number of tokens")
            if value < 0:
                raise UsageError(f"usage {field}={value} is negative; token counts cannot be priced below zero")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageError(
                f"usage has {self.cache_read_tokens} cache-read + {self.cache_write_tokens} cache-write tokens "
                f"but only {self.input_tokens} input tokens; input_tokens must include the cached ones"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise UsageError("usage cache_write_1h_tokens exceeds cache_write_tokens, which must include them")
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError("usage reasoning_tokens exceeds output_tokens, which must include them")

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


_MISSING = object()


def _get(obj: Any, *path: str) -> Any:
    """Walk attributes or mapping keys; SDK objects and plain JSON dicts both work.

    Attributes first: SDK objects are the common case, and a Mapping check is a slow ABC check.
    """
    for key in path:
        if obj is None:
            return None
        value = getattr(obj, key, _MISSING)
        if value is _MISSING:
            value = obj.get(key) if isinstance(obj, Mapping) else None
        obj = value
    return obj


def _count(obj: Any, *path: str) -> int:
    """A token count from a usage payload: missing is 0, anything that is not a count is an error."""
    value = _get(obj, *path)
    if value.__class__ is int and value >= 0:  # what SDKs send: skip the checks below on the call path
        return value
    if value is None:
        return 0
    if isinstance(value, bool):
        raise UsageError(f"usage field {'.'.join(path)}={value!r} is not a token count")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UsageError(f"usage field {'.'.join(path)}={value!r} is not a whole number of tokens")
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"usage field {'.'.join(path)}={value!r} is not a token count")
    if value < 0:
        raise UsageError(f"usage field {'.'.join(path)}={value} is negative")
    return value


def from_openai(usage: Any) -> Usage:
    """OpenAI Chat Completions and Embeddings: `prompt_tokens` include the cached ones."""
    return Usage(
        input_tokens=_count(usage, "prompt_tokens"),
        output_tokens=_count(usage, "completion_tokens"),
        cache_read_tokens=_count(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_count(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def from_openai_responses(usage: Any) -> Usage:
    """OpenAI Responses API and batch usage: `input_tokens` include the cached ones."""
    return Usage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        cache_read_tokens=_count(usage, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=_count(usage, "output_tokens_details", "reasoning_tokens"),
    )


def from_anthropic(usage: Any) -> Usage:
    """Anthropic: `input_tokens` exclude cache reads and writes; 5m and 1h writes under `cache_creation`."""
    read = _count(usage, "cache_read_input_tokens")
    write = _count(usage, "cache_creation_input_tokens")
    write_1h = _count(usage, "cache_creation", "ephemeral_1h_input_tokens")
    write_5m = _count(usage, "cache_creation", "ephemeral_5m_input_tokens")
    write = max(write, write_1h + write_5m)
    return Usage(
        input_tokens=_count(usage, "input_tokens") + read + write,
        output_tokens=_count(usage, "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
    )


def from_google(usage: Any) -> Usage:
    """Google GenAI `usage_metadata`: thoughts are billed as output but counted apart from candidates."""
    candidates = _count(usage, "candidates_token_count")
    thoughts = _count(usage, "thoughts_token_count")
    prompt = _count(usage, "prompt_token_count") + _count(usage, "tool_use_prompt_token_count")
    cached = min(_count(usage, "cached_content_token_count"), prompt)
    return Usage(
        input_tokens=prompt,
        output_tokens=candidates + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


def from_genai_attributes(attrs: Mapping[str, Any]) -> Usage | None:
    """Usage from GenAI span attributes written by any instrumentation (ours, the SDK's own, peers').

    `gen_ai.usage.input_tokens` includes cached tokens by the conventions; the cache-write count is read
    under its new name and the older `cache_creation` name. None when the span carries no usage.
    """
    if "gen_ai.usage.input_tokens" not in attrs and "gen_ai.usage.output_tokens" not in attrs:
        return None
    write = _count(attrs, "gen_ai.usage.cache_write.input_tokens") or _count(
        attrs, "gen_ai.usage.cache_creation.input_tokens"
    )
    return Usage(
        input_tokens=_count(attrs, "gen_ai.usage.input_tokens"),
        output_tokens=_count(attrs, "gen_ai.usage.output_tokens"),
        cache_read_tokens=_count(attrs, "gen_ai.usage.cache_read.input_tokens"),
        cache_write_tokens=write,
        reasoning_tokens=_count(attrs, "gen_ai.usage.reasoning.output_tokens"),
    )
