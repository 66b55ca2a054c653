"""Errors the cache raises on purpose: each says what failed and what the caller does about it."""

from __future__ import annotations

from ..errors import LLMCostError


class CacheStorageError(LLMCostError, RuntimeError):
    """A cache backend could not be read or written (server down, disk full, corrupt file).

    The message names the backend's URI and the operation. The caller treats the lookup as a miss and
    calls the provider; a failed write only loses that entry. The backend's own exception is chained
    (``__cause__``).
    """

    def __init__(self, uri: str, operation: str, cause: BaseException | None = None) -> None:
        from .storage.base import redact_uri  # the message is logged: a URI's password stays out of it

        self.uri = uri
        self.operation = operation
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(
            f"cache storage {redact_uri(uri)} failed during {operation}{detail}; "
            "the call goes to the provider uncached until the storage is back"
        )


class CacheConfigError(LLMCostError, ValueError):
    """A cache URI or setting that cannot be used; the message says which and how to fix it."""
