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


class ModelNotAllowedError(CallRefused):
    """The caller's tier (or budget) may not use the requested model, and no allowed model of the same
    provider can take the call. Attributes: `model`, `tier`, `reason`."""

    def __init__(self, model: str, tier: str | None, reason: str) -> None:
        self.model = model
        self.tier = tier
        self.reason = reason
        super().__init__(f"model {model!r} is not allowed for tier {tier!r} and no allowed model of its "
                         f"provider can take the call ({reason}); change the tier's allowed models or the call")
