"""Cache keys and namespaces: what makes two calls "the same call".

Exact cache: `exact_key(...)` is the sha256 of the canonical JSON of everything that can change the
answer: tenant, provider, model, the whole conversation, system prompt, tools, response format and
every request parameter (sampling and otherwise) except transport options (`TRANSPORT_PARAMS`).
Canonical JSON: keys sorted, no whitespace, floats normalised (``0`` and ``0.0`` are one value,
``0.1`` printed by ``repr``), ``None`` values dropped (the SDKs treat an explicit ``None`` as "not
given"), tuples as lists, SDK objects through ``model_dump()``.

Semantic cache: a `Namespace` fixes everything except the last user message, whose text is what gets
embedded. An entry is served only inside its namespace: the same tenant, provider, model, system prompt,
tools, response format, request parameters and conversation before the last user message. The
namespace's `id` hashes the canonical JSON of its fields, so no crafted tenant id (separators, quotes,
another tenant's name plus a suffix) can reach another namespace.

`cacheable(params, cache_all)`: by default only deterministic calls are cached (temperature 0, or a
seed given); ``cache_all=True`` caches every call.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "KEY_VERSION",
    "TRANSPORT_PARAMS",
    "Namespace",
    "cacheable",
    "canonical_json",
    "exact_key",
    "split_conversation",
    "stable_hash",
]

KEY_VERSION = 1
"""Part of every hash: bump it when what goes into a key changes, so old entries stop matching."""

TRANSPORT_PARAMS = frozenset(
    {
        "timeout",
        "request_timeout",
        "max_retries",
        "extra_headers",
        "extra_query",
        "api_key",
        "base_url",
        "http_client",
        "metadata",
        "store",
    }
)
"""Request options that never change the answer, left out of keys and namespaces.

``extra_body`` is not here: it can carry sampling options the SDK does not know yet."""


def _normalise(value: Any) -> Any:
    """A JSON-ready value with one spelling per meaning (see the module doc)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            return {"$float": repr(f)}
        if f.is_integer() and abs(f) < 2**53:
            return int(f)
        return f
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if v is None:
                continue
            if not isinstance(k, str):
                k = str(k)
            out[k] = _normalise(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_normalise(v) for v in value]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True, separators=(",", ":")))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    dump = getattr(value, "model_dump", None)  # pydantic models: the SDKs' request types
    if callable(dump):
        return _normalise(dump(exclude_none=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _normalise(dataclasses.asdict(value))
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _normalise(to_dict())
    raise TypeError(
        f"cannot put a {type(value).__name__} into a cache key: pass JSON-like values "
        "(dict, list, str, numbers, bool, None, bytes) or objects with model_dump()"
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON of `value`: sorted keys, no whitespace, normalised numbers, no ``None`` values."""
    return json.dumps(
        _normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def stable_hash(value: Any) -> str:
    """sha256 hex digest of `canonical_json(value)`, the same on every machine and Python version."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _answer_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    if not params:
        return {}
    return {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and v is not None}


def exact_key(
    *,
    tenant: str | None,
    provider: str,
    model: str,
    messages: Sequence[Any],
    system: Any = None,
    tools: Any = None,
    response_format: Any = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The exact cache's key of one request: sha256 hex of its canonical JSON (see the module doc).

    `tenant` is the user or tenant the answer belongs to (``None``: one shared space for calls that
    carry no tenant). `messages` is the whole conversation; `params` every other request argument.
    """
    return stable_hash(
        {
            "v": KEY_VERSION,
            "kind": "exact",
            "tenant": tenant,
            "provider": provider,
            "model": model,
            "messages": list(messages),
            "system": system,
            "tools": tools,
            "response_format": response_format,
            "params": _answer_params(params),
        }
    )


def _role(message: Any) -> str | None:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
    return role if isinstance(role, str) else None


def _content(message: Any) -> Any:
    if isinstance(message, Mapping):
        if "content" in message:
            return message["content"]
        return message.get("parts")
    content = getattr(message, "content", None)
    return content if content is not None else getattr(message, "parts", None)


def _split_parts(content: Any) -> tuple[str, list[Any]]:
    """(text of the text parts joined by newlines, the other parts) of one message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if isinstance(content, Mapping) or not isinstance(content, Sequence):
        content = [content]
    texts: list[str] = []
    others: list[Any] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        normal = _normalise(part)
        if isinstance(normal, dict):
            kind = normal.get("type")
            text = normal.get("text")
            rest = {k: v for k, v in normal.items() if k not in ("type", "text")}
            if isinstance(text, str) and kind in (None, "text", "input_text") and not rest:
                texts.append(text)
                continue
        others.append(normal)
    return "\n".join(texts), others


def split_conversation(messages: Sequence[Any]) -> tuple[list[Any], str, list[Any]]:
    """(conversation before the last user message, that message's text, its non-text parts).

    Works with OpenAI/Anthropic messages (``role``, ``content`` as a string or a list of parts) and
    google-genai contents (``role`` "user", ``parts``). Images and other non-text parts of the last
    user message are returned apart: they belong in the namespace, since the embedded text alone
    does not show them. With no user message, the text is empty and the whole list is context.
    """
    items = list(messages)
    for i in range(len(items) - 1, -1, -1):
        if _role(items[i]) == "user":
            text, others = _split_parts(_content(items[i]))
            return items[:i], text, others
    return items, "", []


def _system_of(messages: Sequence[Any], system: Any) -> list[Any]:
    """The system prompt wherever it sits: the `system` argument and system/developer messages."""
    found: list[Any] = [] if system is None else [system]
    found.extend(m for m in messages if _role(m) in ("system", "developer"))
    return found


def cacheable(params: Mapping[str, Any] | None, cache_all: bool) -> bool:
    """Whether a call with these request parameters may be cached.

    With `cache_all` every call may. Otherwise only deterministic ones: temperature 0 or a seed given,
    read from the top level or from a ``config`` / ``generation_config`` (google-genai) mapping or
    object. A call that sets neither samples at the provider's default temperature: not cached.
    """
    if cache_all:
        return True
    if not params:
        return False
    scopes: list[Any] = [params]
    for name in ("config", "generation_config"):
        nested = params.get(name)
        if nested is not None:
            scopes.append(nested)

    def read(scope: Any, name: str) -> Any:
        if isinstance(scope, Mapping):
            return scope.get(name)
        return getattr(scope, name, None)

    for scope in scopes:
        seed = read(scope, "seed")
        if seed is not None and not isinstance(seed, bool):
            return True
        temperature = read(scope, "temperature")
        is_number = isinstance(temperature, (int, float, Decimal)) and not isinstance(temperature, bool)
        if is_number and float(temperature) == 0.0:
            return True
    return False


@dataclass(frozen=True)
class Namespace:
    """Where a semantic-cache entry may be served: only to requests with an equal namespace.

    Build one with `Namespace.for_request(...)`; `id` is what the storage and the index are keyed by.
    The fields are hashes (except tenant, provider and model) so a namespace can be logged without
    leaking prompts.
    """

    tenant: str
    provider: str
    model: str
    system_hash: str
    tools_hash: str
    context_hash: str
    params_hash: str

    @property
    def id(self) -> str:
        """sha256 hex of all fields' canonical JSON: equal ids only for equal namespaces."""
        return stable_hash({"v": KEY_VERSION, "kind": "namespace", **dataclasses.asdict(self)})

    @classmethod
    def for_request(
        cls,
        *,
        tenant: str | None,
        provider: str,
        model: str,
        messages: Sequence[Any],
        system: Any = None,
        tools: Any = None,
        response_format: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Namespace:
        """The namespace of a request (same arguments as `exact_key`).

        Context = the conversation before the last user message plus that message's non-text parts
        (images, files); params = every request parameter but transport options, and the response
        format (a JSON-schema answer never serves a prose one).
        """
        context, _, others = split_conversation(messages)
        return cls(
            tenant="" if tenant is None else tenant,
            provider=provider,
            model=model,
            system_hash=stable_hash(_system_of(messages, system)),
            tools_hash=stable_hash(tools),
            context_hash=stable_hash({"before": context, "parts": others}),
            params_hash=stable_hash({"params": _answer_params(params), "response_format": response_format}),
        )
