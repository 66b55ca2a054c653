"""What the limiter asks of a storage: a few primitives, each atomic for one key."""

from __future__ import annotations

from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ..bucket import BucketPlan, Rejection


@runtime_checkable
class RateLimitStorage(Protocol):
    """Token buckets per key. Every method is atomic for its key across threads, tasks and, for
    shared storages, processes and hosts. Backend failures raise `RateLimitStorageError`.

    The storage owns time: the memory storage reads the clock it was given; Redis reads the
    server's ``TIME`` so that clients whose clocks disagree still agree on every bucket.
    """

    uri: str

    def acquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        """Refill, then take 1 request and `tokens` tokens from every bucket of `plan`, or nothing.

        None when taken; else (slot of the limit that frees up last, seconds until all have room).
        """
        ...

    def settle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        """Charge `delta_tokens` more on the token buckets (negative: refund, capped at capacity)."""
        ...

    def peek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        """The levels now, per slot (infinite where the plan sets no limit); nothing changes."""
        ...

    def reset(self, key: str) -> None:
        """Forget the key: its buckets are full again."""
        ...

    def close(self) -> None:
        """Release connections; the storage is not used afterwards."""
        ...

    async def aacquire(self, key: str, plan: BucketPlan, tokens: float) -> Rejection | None:
        """`acquire` for asyncio."""
        ...

    async def asettle(self, key: str, plan: BucketPlan, delta_tokens: float) -> None:
        """`settle` for asyncio."""
        ...

    async def apeek(self, key: str, plan: BucketPlan) -> tuple[float, float, float]:
        """`peek` for asyncio."""
        ...

    async def areset(self, key: str) -> None:
        """`reset` for asyncio."""
        ...

    async def aclose(self) -> None:
        """`close` for asyncio."""
        ...


def redact(uri: str) -> str:
    """`uri` without its password, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
