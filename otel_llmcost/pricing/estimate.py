"""Usage estimated from a request before it is sent: what a budget reserves and a rate limit debits.

The estimate is an upper bound for the output (the request's own max tokens, or a default cap) and a
character count for the input (~4 characters a token for English text), so that a reservation covers
the real call in all but odd cases; the real usage replaces it when the call settles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .usage import Usage

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""Output tokens assumed when a request sets no maximum."""

_PROMPT_KEYS = ("messages", "input", "system", "contents", "instructions", "prompt", "tools")
_MAX_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _chars(value: Any, depth: int = 0) -> int:
    if depth > 12:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_chars(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v, depth + 1) for v in value)
    dump = getattr(value, "model_dump", None)  # SDK types passed as parameters (google-genai Content)
    if callable(dump):
        try:
            return _chars(dump(exclude_none=True), depth + 1)
        except Exception:
            return 0
    return 0


def estimate_tokens(characters: int) -> int:
    """~4 characters a token: the usual rule of thumb for English text."""
    return max(1, (characters + 3) // 4) if characters else 0


def max_output_tokens(kwargs: Mapping[str, Any]) -> int | None:
    """The request's own output cap, wherever this SDK puts it (top level or `config`)."""
    for key in _MAX_KEYS:
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    config = kwargs.get("config")
    value = config.get("max_output_tokens") if isinstance(config, Mapping) else getattr(config, "max_output_tokens", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def estimate_request(kwargs: Mapping[str, Any], default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS) -> Usage:
    """Input tokens from the prompt's text, output tokens at the request's cap (or the default)."""
    chars = sum(_chars(kwargs.get(key)) for key in _PROMPT_KEYS)
    return Usage(input_tokens=estimate_tokens(chars), output_tokens=max_output_tokens(kwargs) or default_max_output)
