"""Per-request cache control: `with otel_llmcost.cache_control("bypass"):` (kept apart from the cache so
that `import otel_llmcost` stays light)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CACHE_MODES", "cache_control", "current_cache_control"]

CACHE_MODES = ("default", "bypass", "refresh")

_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("llmcost_cache_control", default="default")


@contextmanager
def cache_control(mode: str) -> Iterator[None]:
    """How the response cache treats every LLM call made inside the block.

    - ``"bypass"``: the cache is neither read nor written; the call goes to the provider and its span
      says ``llmcost.cache.status=bypass``.
    - ``"refresh"``: the cache is not read; the provider's answer replaces the stored one (status
      ``miss``).
    - ``"default"``: the usual lookup and store (to undo an outer block).

    The mode follows the code like the attribution does (`contextvars`: asyncio tasks and copied
    contexts inherit it) and nests: the innermost block wins.
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"cache_control mode {mode!r}: use one of {', '.join(CACHE_MODES)}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def current_cache_control() -> str:
    """The cache mode in force here: ``"default"``, ``"bypass"`` or ``"refresh"``."""
    return _MODE.get()
