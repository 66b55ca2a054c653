"""The wrapper every instrumented SDK method goes through, and the stream proxies.

The rule: the app gets exactly what the SDK returned and sees exactly what it raised. Our work is
fenced off: a failure inside it is logged at debug level and the call goes on untouched. Streams are
returned inside a transparent proxy that ends the span when the stream is exhausted, closed, left as a
context manager, raises, or is garbage-collected unread.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import wrapt

from .. import fingerprint
from ..errors import CallRefused
from ..names import GEN_AI_PROVIDER_NAME, LLMCOST_USAGE_ESTIMATED
from ..pricing import Usage
from ..telemetry import Call, Served, Telemetry

_log = logging.getLogger("otel_llmcost.instrumentation")

# Set while one of our wrappers runs, so an SDK method that calls another wrapped method (a stream
# helper calling `create`) is counted once, by the outermost wrapper.
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("llmcost_in_call", default=False)


@dataclass(slots=True)
class Outcome:
    """What a response says about the call: usage, the model that answered, extra span attributes."""

    usage: Usage | None
    model: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    batch: bool = False
    estimated: bool = False


class Accumulator(Protocol):
    """Watches a stream's chunks; `feed` returns True for a chunk the app must not see."""

    def feed(self, chunk: Any) -> bool: ...

    def outcome(self) -> Outcome: ...

    @property
    def complete(self) -> bool: ...


class StreamCall(Protocol):
    """What a stream proxy ends: a `Call`, or a stand-in that ends several calls as one stream ends
    (the Anthropic batch results reader prices one call per model it reads)."""

    ended: bool

    def chunk_received(self) -> None: ...

    def finish(self, usage: Usage | None, response_model: str | None = None,
               response_attributes: Mapping[str, Any] | None = None, *, batch: bool = False,
               incomplete: bool = False, estimated: bool = False, unpriced: bool = False) -> Any: ...

    def fail(self, error: BaseException, usage: Usage | None = None, response_model: str | None = None) -> None: ...


class Endpoint(Protocol):
    """How one SDK method maps onto GenAI telemetry."""

    provider: str
    operation: str

    def request(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(request model, span attributes known before the call).

        A `gen_ai.provider.name` among the attributes overrides `provider` for this call only: one SDK
        class may serve two providers (google-genai's `Models` talks to Gemini or Vertex AI per client).
        """

    def prepare(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Accumulator | None]:
        """The kwargs to call with (usually the same object) and, for a stream, its accumulator."""

    def response(self, result: Any, kwargs: dict[str, Any]) -> Outcome | None:
        """Usage of a finished response, or None when the result is a stream (see `is_stream`)."""

    def is_stream(self, result: Any) -> bool: ...


class Instrumentation:
    """State shared by the wrappers of one instrumentor: swapped, never rebound, by instrument()."""

    telemetry: Telemetry | None = None
    guard: Any = None  # the cost guard (rate limit, budget, cache, routing), when configured


def _debug(what: str) -> None:
    _log.debug("otel-llmcost: %s failed; the call goes on uninstrumented", what, exc_info=True)


def sync_wrapper(state: Instrumentation, endpoint: Endpoint) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        telemetry = state.telemetry
        if telemetry is None or _IN_CALL.get():
            return wrapped(*args, **kwargs)
        try:
            model, request_attrs = endpoint.request(instance, args, kwargs)
            provider = request_attrs.pop(GEN_AI_PROVIDER_NAME, None) or endpoint.provider
            call = telemetry.start(provider, endpoint.operation, model, request_attrs)
            if telemetry.fingerprints:
                fingerprint.record(call.span, call.extra, provider, endpoint.operation, model, kwargs)
            call_kwargs, accumulator = endpoint.prepare(kwargs)
            call.activate()
        except Exception:
            _debug("starting the span")
            return wrapped(*args, **kwargs)
        if telemetry.guard is not None:
            decision = _guard(telemetry, call, call_kwargs, endpoint, False)
            if isinstance(decision, Served):
                return decision.result
            call_kwargs = decision
        flag = _IN_CALL.set(True)
        try:
            result = wrapped(*args, **call_kwargs)
        except BaseException as exc:
            _IN_CALL.reset(flag)
            _fail(call, exc)
            raise
        _IN_CALL.reset(flag)
        return _handle(call, endpoint, result, call_kwargs, accumulator, asynchronous=False)

    return wrapper


def async_wrapper(state: Instrumentation, endpoint: Endpoint) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        telemetry = state.telemetry
        if telemetry is None or _IN_CALL.get():
            return await wrapped(*args, **kwargs)
        try:
            model, request_attrs = endpoint.request(instance, args, kwargs)
            provider = request_attrs.pop(GEN_AI_PROVIDER_NAME, None) or endpoint.provider
            call = telemetry.start(provider, endpoint.operation, model, request_attrs)
            if telemetry.fingerprints:
                fingerprint.record(call.span, call.extra, provider, endpoint.operation, model, kwargs)
            call_kwargs, accumulator = endpoint.prepare(kwargs)
            call.activate()
        except Exception:
            _debug("starting the span")
            return await wrapped(*args, **kwargs)
        if telemetry.guard is not None:
            decision = _guard(telemetry, call, call_kwargs, endpoint, True)
            if isinstance(decision, Served):
                return decision.result
            call_kwargs = decision
        flag = _IN_CALL.set(True)
        try:
            result = await wrapped(*args, **call_kwargs)
        except BaseException as exc:
            _IN_CALL.reset(flag)
            _fail(call, exc)
            raise
        _IN_CALL.reset(flag)
        return _handle(call, endpoint, result, call_kwargs, accumulator, asynchronous=True)

    return wrapper


def _guard(telemetry: Telemetry, call: Call, kwargs: dict[str, Any], endpoint: Endpoint,
           asynchronous: bool) -> dict[str, Any] | Served:
    """Run the guard: a deliberate refusal reaches the app; a failure of the guard itself does not."""
    guard = telemetry.guard
    try:
        decision = guard.before(call, kwargs, endpoint, asynchronous) if guard is not None else kwargs
    except CallRefused as refusal:
        _fail(call, refusal)
        raise
    except Exception:
        _debug("the cost guard")
        return kwargs
    if isinstance(decision, Served):
        try:
            call.serve(decision)
        except Exception:
            _debug("recording a served answer")
    return decision


def _fail(call: Call, exc: BaseException) -> None:
    try:
        call.fail(exc)
    except Exception:
        _debug("recording the error")


def _handle(call: Call, endpoint: Endpoint, result: Any, kwargs: dict[str, Any],
            accumulator: Accumulator | None, *, asynchronous: bool) -> Any:
    try:
        if accumulator is not None and endpoint.is_stream(result):
            call.deactivate()
            proxy = AsyncStreamProxy if asynchronous else StreamProxy
            return proxy(result, call, accumulator)
        call.response = result
        outcome = endpoint.response(result, kwargs)
        finish(call, outcome)
    except Exception:
        _debug("reading the response")
        try:
            call.finish(None, unpriced=True)
        except Exception:
            _debug("ending the span")
    return result


def finish(call: StreamCall, outcome: Outcome | None, *, incomplete: bool = False) -> None:
    if outcome is None:
        call.finish(None, unpriced=True, incomplete=incomplete)
        return
    call.finish(outcome.usage, outcome.model, outcome.attributes, batch=outcome.batch,
                incomplete=incomplete, estimated=outcome.estimated)


class _StreamProxyBase(wrapt.ObjectProxy):
    def __init__(self, wrapped: Any, call: StreamCall, accumulator: Accumulator) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_accumulator = accumulator

    def _self_feed(self, chunk: Any) -> bool:
        try:
            call = self._self_call
            call.chunk_received()
            chunks = getattr(call, "chunks", None)
            if chunks is not None:
                chunks.append(chunk)
            return self._self_accumulator.feed(chunk)
        except Exception:
            _debug("reading a stream chunk")
            return False

    def _self_end(self, error: BaseException | None = None) -> None:
        call = self._self_call
        if call.ended:
            return
        try:
            accumulator = self._self_accumulator
            outcome = accumulator.outcome()
            if error is not None:
                usage = outcome.usage if outcome else None
                if usage is not None and isinstance(call, Call):
                    # A failed stream keeps what its chunks said, and says when its tokens are estimated.
                    call.extra.update(outcome.attributes)
                    if outcome.estimated:
                        call.extra[LLMCOST_USAGE_ESTIMATED] = True
                call.fail(error, usage, outcome.model if outcome else None)
            else:
                finish(call, outcome, incomplete=not accumulator.complete)
        except Exception:
            _debug("ending the stream's span")

    def __del__(self) -> None:
        self._self_end()


class StreamProxy(_StreamProxyBase):
    """A sync stream, unchanged for the app, that ends its call's span however the stream ends."""

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                chunk = self.__wrapped__.__next__()
            except StopIteration:
                self._self_end()
                raise
            except BaseException as exc:
                self._self_end(exc)
                raise
            if not self._self_feed(chunk):
                return chunk

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_end()

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_end()


class AsyncStreamProxy(_StreamProxyBase):
    """The asyncio twin of `StreamProxy`."""

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                self._self_end()
                raise
            except BaseException as exc:
                self._self_end(exc)
                raise
            if not self._self_feed(chunk):
                return chunk

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_end()

    async def aclose(self) -> Any:
        try:
            return await self.__wrapped__.aclose()
        finally:
            self._self_end()

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_end()


def request_attributes(kwargs: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Copy plain request parameters (temperature, max_tokens, ...) to span attributes by name."""
    out: dict[str, Any] = {}
    for param, attribute in mapping.items():
        value = kwargs.get(param)
        if isinstance(value, (bool, int, float, str)):
            out[attribute] = value
    return out
