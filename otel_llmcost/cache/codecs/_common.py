"""What the per-SDK codecs share: request values as plain JSON, text cut into stream pieces, SDK objects
rebuilt from JSON, and the replayed streams."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import inspect
import re
import typing
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "AsyncReplayStream",
    "ReplayStream",
    "RequestView",
    "build",
    "by_type",
    "pieces",
    "plain",
    "sdk_sentinel",
]


@dataclass(frozen=True)
class RequestView:
    """One request as the cache keys it: every part in plain JSON (see `keys.exact_key`).

    `messages` is the whole conversation (system messages included where the API puts them there),
    `params` every other argument that can change the answer, `sampling` where temperature and seed
    are read to tell a deterministic call (`keys.cacheable`).
    """

    model: str
    messages: list[Any]
    system: Any = None
    tools: Any = None
    response_format: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    sampling: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


def sdk_sentinel(value: Any) -> bool:
    """The SDKs' "not given" markers (`omit`, `NOT_GIVEN`): an argument left out."""
    return type(value).__name__ in ("Omit", "NotGiven")


_SKIP = object()


def _schema_of(cls: type) -> Any:
    schema = getattr(cls, "model_json_schema", None)
    if callable(schema):
        try:
            return schema()
        except Exception:  # noqa: BLE001 - a schema we cannot make: the class name stands for it
            return None
    return None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, Decimal, bytes, bytearray)):
        return value
    if sdk_sentinel(value):
        return _SKIP
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            converted = _plain(item)
            if converted is not _SKIP:
                out[str(key)] = converted
        return out
    if isinstance(value, (list, tuple)):
        return [v for v in (_plain(item) for item in value) if v is not _SKIP]
    if isinstance(value, type):
        # A response format or tool given as a class (Pydantic, dataclass, enum): its schema and name.
        return {"$type": f"{value.__module__}.{value.__qualname__}", "schema": _schema_of(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return _plain(dump(mode="json", exclude_none=True))
        except Exception:  # noqa: BLE001 - a field pydantic cannot put in JSON (a function given as a tool)
            return _plain(dump(exclude_none=True))
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if callable(value):
        # A Python function given as a tool (google-genai): what the model is told about it.
        try:
            signature = str(inspect.signature(value))
        except (TypeError, ValueError):
            signature = None
        name = getattr(value, "__qualname__", None) or type(value).__qualname__
        return {"$callable": f"{getattr(value, '__module__', '')}.{name}", "signature": signature,
                "doc": inspect.getdoc(value)}
    raise TypeError(f"a {type(value).__name__} in the request cannot be part of a cache key")


def plain(value: Any) -> Any:
    """`value` as JSON-like data for a cache key: SDK objects dumped, classes by schema, functions by
    signature, "not given" markers dropped. Raises TypeError for what has no stable form (an iterator)."""
    converted = _plain(value)
    return None if converted is _SKIP else converted


_PIECE = re.compile(r"\S*\s*")


def pieces(text: str, words: int = 3) -> list[str]:
    """`text` cut into stream deltas of a few words each; joined, they give `text` back exactly."""
    found = [p for p in _PIECE.findall(text) if p]
    return ["".join(found[i:i + words]) for i in range(0, len(found), words)]


def by_type(union: Any) -> dict[str, type]:
    """The classes of a discriminated union of SDK types (stream events, content blocks) by their
    `type` literal."""
    out: dict[str, type] = {}
    stack = [union]
    while stack:
        item = stack.pop()
        args = typing.get_args(item)
        if typing.get_origin(item) is typing.Annotated:
            stack.append(args[0])
            continue
        if args:
            stack.extend(args)
            continue
        fields = getattr(item, "model_fields", None)
        if not isinstance(item, type) or not fields or "type" not in fields:
            continue
        for literal in typing.get_args(fields["type"].annotation):
            if isinstance(literal, str):
                out.setdefault(literal, item)
    return out


def build(cls: Any, data: Mapping[str, Any]) -> Any:
    """An SDK model from its JSON: validated, or built leniently (as the SDK itself builds responses)
    when the JSON has what this SDK version does not expect."""
    try:
        return cls.model_validate(data)
    except Exception:  # noqa: BLE001 - pydantic's ValidationError and friends
        construct = getattr(cls, "construct", None) or cls.model_construct
        return construct(**data)


def _request_headers(kwargs: Mapping[str, Any]) -> dict[str, str]:
    headers = {str(k): v for k, v in (kwargs.get("extra_headers") or {}).items() if isinstance(v, str)}
    betas = kwargs.get("betas")
    if isinstance(betas, (list, tuple)) and betas:
        headers.setdefault("anthropic-beta", ",".join(str(b) for b in betas))
    return headers


def http_response(status: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """A stand-in for the HTTP response of a stream answered from the cache (the SDKs' stream helpers
    read `stream.response` and its request's headers): status 200, header `x-llmcost-cache: <status>`,
    no body; its request carries the headers the app gave (`extra_headers`, Anthropic `betas`)."""
    import importlib

    for name in ("httpx2", "httpx"):  # the SDKs' HTTP library: httpx2 now, httpx before
        try:
            http = importlib.import_module(name)
        except ImportError:
            continue
        request = http.Request("POST", "https://cache.llmcost.invalid/", headers=_request_headers(kwargs or {}))
        return http.Response(200, headers={"x-llmcost-cache": status}, request=request)
    return None


class _Replay:
    def __init__(self, items: Sequence[Any], status: str = "exact_hit",
                 request: Mapping[str, Any] | None = None) -> None:
        self._items = list(items)
        self._iterator: Iterator[Any] = iter(self._items)
        self._status = status
        self._request = request
        self._response: Any = None

    @property
    def response(self) -> Any:
        """The HTTP response stand-in (see `http_response`)."""
        if self._response is None:
            self._response = http_response(self._status, self._request)
        return self._response

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self._items)} cached chunks>"


class ReplayStream(_Replay):
    """A stream answered from the cache: the SDK's chunk (or event) objects, iterated like the SDK's
    stream (`for`, `next`, `close()`, `with`), with nothing left to close."""

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def close(self) -> None:
        self._iterator = iter(())

    def __enter__(self) -> ReplayStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncReplayStream(_Replay):
    """The asyncio twin of `ReplayStream` (`async for`, `aclose()` / `close()`, `async with`)."""

    def __aiter__(self) -> AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        self._iterator = iter(())

    async def aclose(self) -> None:
        self._iterator = iter(())

    async def __aenter__(self) -> AsyncReplayStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
