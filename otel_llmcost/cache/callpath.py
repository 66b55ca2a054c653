"""The response cache in the call path: answers LLM calls from the exact and semantic caches, in the
SDK's own types, streams replayed as streams.

    from otel_llmcost.cache import ExactCache, SemanticCache
    from otel_llmcost.cache.callpath import ResponseCache
    from otel_llmcost.cache.embedders import MiniLMEmbedder
    from otel_llmcost.cache.policy import GuardedPolicy

    otel_llmcost.instrument()
    install_guard(cache=ResponseCache(
        ExactCache("redis://cache:6379/0"),
        SemanticCache(MiniLMEmbedder(), GuardedPolicy(), "redis://cache:6379/0?prefix=llmcost:sem"),
    ))
    with otel_llmcost.attributes(tenant_id="acme", user_id="u1"):
        client.chat.completions.create(model=..., messages=..., temperature=0)   # cached from now on

What is served. Chat Completions (`create`, `parse`, the `stream` helper), the Responses API (the same;
not `conversation` or `background` calls, whose state lives at OpenAI), Anthropic Messages (`create`,
`parse`, `messages.stream()`, stable and beta) and Gemini `generate_content` (every public generate
method and `client.chats`; each model request is one lookup). Embeddings and batches are not cached.
A hit returns the SDK's own object: `ChatCompletion` (`ParsedChatCompletion` for `parse`), `Response`,
`Message`, `GenerateContentResponse`. A stream call gets a stream of the SDK's chunk or event types
(`ChatCompletionChunk`; Responses events; Anthropic raw events from `message_start` to `message_stop`,
so the `messages.stream()` helper's `MessageStream` works on top; Gemini `GenerateContentResponse`
chunks), iterable like the SDK's (`for` / `async for`, `close()` / `aclose()`, `with` / `async with`).
One JSON form per API is stored, the final response (a stream's chunks are put together into it), so a
response cached from a plain call serves a stream and the other way round.

Keys. Exact: tenant, provider, model, the whole conversation, system prompt, tools, response format
and every other argument that can change the answer (sampling, limits, `extra_body` ...; not transport
options, not `stream`), see `keys.exact_key`. The tenant is the call's attribution
(`otel_llmcost.attributes`) under `tenant_attributes` (default: tenant id and user id, so one user never
gets another's answer; pass `("llmcost.tenant.id",)` to share answers inside a tenant). Semantic: the
namespace is the same minus the last user message, whose text is the query (`keys.Namespace`); only a
conversation that ends with a user message is looked up or stored semantically. By default only
deterministic calls are cached (temperature 0 or a seed; Anthropic takes sampling parameters in
`extra_body`); `cache_all=True` caches every call. A `with_raw_response` / `with_streaming_response`
call, or a Gemini call asking for the raw HTTP response, is never cached.

Per request: `with otel_llmcost.cache_control("bypass"):` neither reads nor writes (status `bypass`);
`"refresh"` skips the read and stores the fresh answer (status `miss`). Nothing is sent to the provider
for it, and it works the same for every SDK, sync or async.

Telemetry. Every lookup is counted in `llmcost.cache.lookups` by `llmcost.cache.status` (`miss`,
`exact_hit`, `semantic_hit`, `bypass`) and `gen_ai.provider.name`, and the span says the status.
A hit costs $0; `llmcost.cost.saved` (span and metric) is the cached response's usage priced now
(`catalog.cost(usage, model, provider)`), unknown when the model has no price. A semantic hit also has
`llmcost.cache.tier` (`high`, or `medium` when the policy rates it so and `medium_hits=True`; medium
hits are misses otherwise) and `llmcost.cache.similarity`. A miss whose close match a false-hit guard of
`GuardedPolicy` refused is also counted in `llmcost.cache.semantic.refusals` (by provider) and marked
`llmcost.cache.semantic.refused=true` on the span; the guard's reason is not recorded (it quotes the prompt).

Stored when the call ended well: never an error, a stream cut short, a refusal (OpenAI
`content_filter` or `refusal`, Anthropic `refusal`, Gemini safety finishes or a blocked prompt), an
unfinished answer (Anthropic `pause_turn`, Responses `incomplete`), or, unless `cache_all`, an answer
that calls tools. Storing happens when the call ends, in the app's thread.

Failures. A cache that fails (Redis gone or frozen, a full disk, an embedder that will not load) is a
miss: the provider is called and nothing is raised into the app. The failure opens an outage of that
storage (caches on one Redis server share it; a semantic cache's embedder and index have their own):
for `retry_interval` seconds (default 2) the storage is not asked at all (a lookup that had no cache
left to ask is counted as `bypass`; stores are dropped), then one operation probes it; a success ends
the outage, a failed probe doubles the wait up to `max_retry_interval` (default 30). So a frozen Redis
costs one socket timeout per interval, not four per call (see `otel_llmcost.cache.outage`). The first
failure of an outage is logged as a warning, the recovery as info with the operations skipped, the
failures between at debug level; `outage_stats()` counts them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import names
from .._control import cache_control, current_cache_control
from ..pricing import Usage
from .codecs import AsyncReplayStream, Codec, ReplayStream, RequestView, codec_for
from .errors import CacheStorageError
from .keys import Namespace, cacheable, canonical_json, exact_key, split_conversation
from .outage import DEFAULT_MAX_RETRY_INTERVAL, DEFAULT_RETRY_INTERVAL, Outage, OutageStats, check_intervals
from .storage.base import redact_uri

if TYPE_CHECKING:
    from ..pricing import PriceCatalog
    from ..telemetry import Call, CallResult, Served
    from .exact import ExactCache
    from .semantic import SemanticCache

__all__ = ["DEFAULT_TENANT_ATTRIBUTES", "ResponseCache", "cache_control"]

_log = logging.getLogger(__name__)

DEFAULT_TENANT_ATTRIBUTES = (names.LLMCOST_TENANT_ID, names.LLMCOST_USER_ID)
_FORMAT_VERSION = 1
_RAW_RESPONSE_HEADER = "x-stainless-raw-response"


@dataclass(frozen=True)
class _Request:
    """One cacheable request: its codec, its view and where it is stored."""

    codec: Codec
    view: RequestView
    key: str | None
    namespace: Namespace | None
    query: str | None


@dataclass(frozen=True)
class _Gates:
    """The outage states an operation of one cache depends on: its storage's, and what else can fail
    (a semantic cache's embedder and index; for the exact cache, the storage's again)."""

    storage: Outage
    other: Outage

    def allow(self) -> bool:
        return self.storage.allow() and (self.other is self.storage or self.other.allow())

    def ok(self) -> None:
        self.storage.ok()
        self.other.ok()

    def failed(self, what: str, error: BaseException) -> None:
        (self.storage if isinstance(error, CacheStorageError) or self.other is self.storage
         else self.other).failed(what, error)


def _place(storage: Any) -> tuple[tuple[str, object], str]:
    """Where a storage's outages happen (a key shared by storages on one server) and its name for logs."""
    server = getattr(storage, "server", None)
    if isinstance(server, str) and server:
        return ("server", server), server
    return ("storage", id(storage)), redact_uri(str(getattr(storage, "uri", type(storage).__name__)))


def _raw_response(kwargs: Mapping[str, Any]) -> bool:
    """A `with_raw_response` / `with_streaming_response` call: the app wants the HTTP response itself."""
    headers = kwargs.get("extra_headers")
    return isinstance(headers, Mapping) and any(
        isinstance(name, str) and name.lower() == _RAW_RESPONSE_HEADER for name in headers)


def _guard_refused(decision: Any) -> bool:
    """A policy decision that refused a candidate above the threshold (`GuardedPolicy` says "refused: ...");
    a candidate merely below the threshold is an ordinary miss."""
    reason = getattr(decision, "reason", "")
    return isinstance(reason, str) and reason.startswith("refused")


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else None


class ResponseCache:
    """The guard's `CallCache` over an exact and/or a semantic cache (see the module doc).

    `exact`, `semantic`: the caches to use (either may be None, not both). `cache_all`: cache calls that
    sample too, and answers that call tools. `tenant_attributes`: the attribution keys whose values scope
    every entry. `medium_hits`: serve semantic hits the policy rates `medium`. `catalog`: prices for
    `llmcost.cost.saved` (default: the instrumentation's). `retry_interval`, `max_retry_interval`:
    seconds a failed storage (or embedder) is left alone before one operation probes it, the wait
    doubling after each failed probe up to the maximum (see `otel_llmcost.cache.outage`; 0: ask again
    at every operation). `clock`: monotonic seconds for those waits (tests).
    """

    def __init__(
        self,
        exact: ExactCache | None,
        semantic: SemanticCache | None = None,
        *,
        cache_all: bool = False,
        tenant_attributes: Sequence[str] = DEFAULT_TENANT_ATTRIBUTES,
        medium_hits: bool = False,
        catalog: PriceCatalog | None = None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_retry_interval: float = DEFAULT_MAX_RETRY_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.retry_interval, self.max_retry_interval = check_intervals(retry_interval, max_retry_interval)
        if exact is None and semantic is None:
            raise ValueError("ResponseCache needs an exact cache, a semantic cache or both")
        if isinstance(tenant_attributes, str):
            raise ValueError("tenant_attributes is a sequence of attribute names, e.g. ('llmcost.tenant.id',)")
        self.exact = exact
        self.semantic = semantic
        self.cache_all = cache_all
        self.tenant_attributes = tuple(tenant_attributes)
        self.medium_hits = medium_hits
        self.catalog = catalog
        self._clock = clock
        self._outages: dict[tuple[str, object], Outage] = {}
        self._exact_gates: _Gates | None = None
        self._semantic_gates: _Gates | None = None
        if exact is not None:
            storage = self._outage_of(exact.storage)
            self._exact_gates = _Gates(storage, storage)
        if semantic is not None:
            self._semantic_gates = _Gates(self._outage_of(semantic.storage),
                                          self._outage_of(None, ("semantic", id(semantic)),
                                                          "semantic cache embedder and index"))

    def _outage_of(self, storage: Any, key: tuple[str, object] | None = None, name: str = "") -> Outage:
        """The outage state of a storage's server (one per server, shared by the caches on it)."""
        if key is None:
            key, name = _place(storage)
        outage = self._outages.get(key)
        if outage is None:
            outage = self._outages[key] = Outage(name, _log, self.retry_interval, self.max_retry_interval,
                                                 self._clock)
        return outage

    def outage_stats(self) -> OutageStats:
        """Outages begun, operations failed, skipped during outages and probes, summed over the storages."""
        totals = [o.stats() for o in self._outages.values()]
        return OutageStats(*(sum(getattr(t, f) for t in totals) for f in OutageStats.__dataclass_fields__))

    @property
    def down(self) -> bool:
        """Whether a storage (or the semantic cache's embedder) is in an outage now."""
        return any(o.down for o in self._outages.values())

    # -- the guard's protocol ------------------------------------------------------------------
    def lookup(self, call: Call, kwargs: dict[str, Any], endpoint: Any, asynchronous: bool) -> Served | None:
        """A cached answer for this call in the SDK's own type, or None (the provider is called)."""
        codec = codec_for(endpoint)
        if codec is None or _raw_response(kwargs):
            return None
        mode = current_cache_control()
        if mode == "bypass":
            self._count(call, names.CACHE_BYPASS)
            return None
        request = self._request(call, kwargs, codec)
        if request is None:
            return None
        served = None
        skipped = False
        if mode != "refresh":
            try:
                served, skipped = self._find(call, kwargs, request, asynchronous)
            except Exception:  # a bug of ours must not cost the app its call
                _log.debug("otel-llmcost: cache lookup failed; calling the provider", exc_info=True)
        if served is None:
            # Every cache this call could use was left alone for an outage: nothing was looked up.
            self._count(call, names.CACHE_BYPASS if skipped else names.CACHE_MISS)
        return served

    def prepare_store(self, call: Call, kwargs: dict[str, Any], endpoint: Any) -> None:
        """Store the call's answer when it ends well (for a stream: once it was read to its end)."""
        codec = codec_for(endpoint)
        if codec is None or _raw_response(kwargs) or current_cache_control() == "bypass":
            return
        request = self._request(call, kwargs, codec)
        if request is None:
            return
        if request.view.stream:
            call.chunks = []
        call.on_end(lambda result, error: self._store(call, request, result, error))

    # -- keys ------------------------------------------------------------------------------------
    def _tenant(self, who: Mapping[str, str]) -> str | None:
        found = {name: who[name] for name in self.tenant_attributes if who.get(name)}
        return canonical_json(found) if found else None

    def _request(self, call: Call, kwargs: Mapping[str, Any], codec: Codec) -> _Request | None:
        """The request's keys, or None when it is not to be cached (shape, sampling, unkeyable values)."""
        try:
            view = codec.view(kwargs)
            if view is None or not cacheable(view.sampling, self.cache_all):
                return None
            parts: dict[str, Any] = {
                "tenant": self._tenant(call.who), "provider": call.provider, "model": view.model,
                "messages": view.messages, "system": view.system, "tools": view.tools,
                "response_format": view.response_format, "params": {**view.params, "$api": codec.api},
            }
            key = exact_key(**parts) if self.exact is not None else None
            namespace = query = None
            if self.semantic is not None and view.messages and _role(view.messages[-1]) == "user":
                _, text, _ = split_conversation(view.messages)
                if text.strip():
                    namespace, query = Namespace.for_request(**parts), text
            return _Request(codec, view, key, namespace, query)
        except Exception:
            _log.debug("otel-llmcost: this request cannot be keyed; it is not cached", exc_info=True)
            return None

    # -- lookup ------------------------------------------------------------------------------------
    def _find(self, call: Call, kwargs: Mapping[str, Any], request: _Request,
              asynchronous: bool) -> tuple[Served | None, bool]:
        """The answer served, and whether every cache that applied was skipped for an outage."""
        applied = skipped = 0
        exact, gates = self.exact, self._exact_gates
        if exact is not None and gates is not None and request.key is not None:
            applied += 1
            if not gates.allow():
                skipped += 1
            else:
                payload = None
                try:
                    payload = exact.get(request.key)
                    gates.ok()
                except Exception as exc:
                    gates.failed("exact cache lookup", exc)
                if payload is not None:
                    served = self._serve(call, kwargs, request, payload, names.CACHE_EXACT_HIT, asynchronous)
                    if served is not None:
                        return served, False
        semantic, gates = self.semantic, self._semantic_gates
        if semantic is not None and gates is not None and request.namespace is not None and request.query is not None:
            applied += 1
            if not gates.allow():
                skipped += 1
            else:
                hit = None
                refusals: list[Any] = []
                try:
                    hit = semantic.lookup(request.namespace, request.query, on_reject=refusals.append)
                    gates.ok()
                except Exception as exc:
                    gates.failed("semantic cache lookup", exc)
                if hit is None and any(_guard_refused(decision) for decision in refusals):
                    self._count_refusal(call)
                if hit is not None and (hit.tier != "medium" or self.medium_hits):
                    served = self._serve(call, kwargs, request, hit.payload, names.CACHE_SEMANTIC_HIT, asynchronous)
                    if served is not None:
                        call.extra[names.LLMCOST_CACHE_TIER] = hit.tier
                        call.extra[names.LLMCOST_CACHE_SIMILARITY] = round(hit.similarity, 4)
                        return served, False
        return None, applied > 0 and skipped == applied

    def _serve(self, call: Call, kwargs: Mapping[str, Any], request: _Request, payload: bytes, status: str,
               asynchronous: bool) -> Served | None:
        """The stored answer as the SDK's objects, priced for the saving; None if it cannot be rebuilt."""
        from ..telemetry import Served

        codec = request.codec
        try:
            stored = json.loads(payload)
            if stored.get("v") != _FORMAT_VERSION or stored.get("api") != codec.api:
                return None
            body = stored["body"]
            result: Any
            if request.view.stream:
                items = codec.replay(body, kwargs)
                result = (AsyncReplayStream if asynchronous else ReplayStream)(items, status, kwargs)
            else:
                result = codec.rebuild(body, kwargs)
            model = codec.model(body)
            usage = codec.usage(body)
        except Exception:
            _log.debug("otel-llmcost: a cached %s answer could not be rebuilt; calling the provider", codec.api,
                       exc_info=True)
            return None
        self._count(call, status)
        return Served(result, status, self._saved(call, usage, model), model)

    def _saved(self, call: Call, usage: Usage | None, model: str | None) -> Decimal | None:
        """What the cached answer costs at today's prices: the saving of not asking again."""
        if usage is None:
            return None
        from ..pricing import UnknownPriceError

        catalog = self.catalog if self.catalog is not None else call.telemetry.catalog
        for name in dict.fromkeys(m for m in (model, call.request_model) if m):
            try:
                return catalog.cost(usage, name, call.provider).total
            except UnknownPriceError:
                continue
        return None

    def _count(self, call: Call, status: str) -> None:
        call.cache_status = status
        call.telemetry.cache_lookups.add(1, {names.LLMCOST_CACHE_STATUS: status,
                                             names.GEN_AI_PROVIDER_NAME: call.provider})

    def _count_refusal(self, call: Call) -> None:
        """A close match that a false-hit guard refused: the lookup stays a miss, counted apart so that the
        false hits avoided show. The refusal's reason stays off telemetry: it quotes words of the prompt."""
        call.extra[names.LLMCOST_CACHE_SEMANTIC_REFUSED] = True
        call.telemetry.cache_semantic_refusals.add(1, {names.GEN_AI_PROVIDER_NAME: call.provider})

    # -- store -------------------------------------------------------------------------------------
    def _store(self, call: Call, request: _Request, result: CallResult | None, error: BaseException | None) -> None:
        if error is not None or result is None or result.attributes.get(names.ERROR_TYPE):
            return
        codec = request.codec
        try:
            if request.view.stream:
                chunks, call.chunks = call.chunks, None
                body = codec.assemble(chunks) if chunks else None
            else:
                body = codec.encode(call.response)
            if body is None:
                _log.debug("otel-llmcost: %s answer not stored: incomplete or not the SDK's type", codec.api)
                return
            reason = codec.refuse(body, self.cache_all)
            if reason is not None:
                _log.debug("otel-llmcost: %s answer not stored: %s", codec.api, reason)
                return
            payload = json.dumps({"v": _FORMAT_VERSION, "api": codec.api, "body": body},
                                 separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except Exception:
            _log.debug("otel-llmcost: a %s answer could not be encoded; not stored", codec.api, exc_info=True)
            return
        exact, gates = self.exact, self._exact_gates
        if exact is not None and gates is not None and request.key is not None and gates.allow():
            try:
                exact.put(request.key, payload)
                gates.ok()
            except Exception as exc:
                gates.failed("exact cache store", exc)
        semantic, gates = self.semantic, self._semantic_gates
        if (semantic is not None and gates is not None and request.namespace is not None
                and request.query is not None and gates.allow()):
            try:
                semantic.store(request.namespace, request.query, payload)
                gates.ok()
            except Exception as exc:
                gates.failed("semantic cache store", exc)
