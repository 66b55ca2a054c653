"""Errors we raise to the user: each says what happened and what to do."""

from __future__ import annotations


class LLMCostError(Exception):
    """Base of every error this package raises on purpose."""


class PriceFileError(LLMCostError, ValueError):
    """A price file could not be used; the message names the file, the line or field, and the fix."""


class UsageError(LLMCostError, ValueError):
    """Token counts that cannot be priced (negative, not a number); never priced as zero."""


class CallRefused(LLMCostError):
    """A cost control refused an LLM call on purpose (budget stop, rate limit).

    The only kind of exception our instrumentation raises into an app, and only where the app turned
    that control on; every other failure of ours is logged and the call goes ahead.
    """
