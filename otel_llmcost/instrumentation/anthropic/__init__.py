"""Anthropic instrumentation: every Messages call priced, streamed or not, and batch results at the batch rate.

Usage::

    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
    AnthropicInstrumentor().instrument(tracer_provider=..., meter_provider=...)

or `otel_llmcost.instrument()` for every installed SDK, or `opentelemetry-instrument` (entry point
`llmcost_anthropic`). See `AnthropicInstrumentor` for what is covered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .._base import LLMCostInstrumentor, Patch
from .._wrappers import AsyncStreamProxy, Instrumentation, StreamProxy, async_wrapper, sync_wrapper
from .package import _instruments
from .patch import BatchLedger, BatchResultsRead, MessagesEndpoint, batch_ledger, client_attributes

_log = logging.getLogger("otel_llmcost.instrumentation")

_MESSAGES = "anthropic.resources.messages.messages"
_BATCHES = "anthropic.resources.messages.batches"
_BETA_MESSAGES = "anthropic.resources.beta.messages.messages"
_BETA_BATCHES = "anthropic.resources.beta.messages.batches"


class AnthropicInstrumentor(LLMCostInstrumentor):
    """Instruments the `anthropic` SDK: one priced CLIENT span (`gen_ai.provider.name=anthropic`,
    operation `chat`) and the token and cost metrics for every call.

    Covered, sync and async, stable and beta (`client.beta.messages`):

    - `messages.create` and `messages.parse`. Usage is normalised: Anthropic's `input_tokens` leave out
      cache reads and writes; our `gen_ai.usage.input_tokens` includes them, and cache reads, 5-minute
      and 1-hour cache writes and thinking tokens are each priced at their own rate.
    - `messages.create(stream=True)`: the app gets the SDK's `Stream` / `AsyncStream` behind a
      transparent proxy. Usage comes from `message_start` and the cumulative `message_delta` counts;
      the span ends when the stream is read to `message_stop`, closed, left as a context manager,
      fails, or is garbage-collected. A stream closed early is priced with what the server reported
      (output estimated from the text seen if no `message_delta` came, marked
      `llmcost.usage.estimated`) and marked `llmcost.stream.incomplete`; a stream that breaks
      ends the span with ERROR and the tokens seen so far.
    - `messages.stream(...)`: the app gets the SDK's own `MessageStreamManager` and `MessageStream`
      (`text_stream`, `get_final_message()`, `until_done()`, ... unchanged); only the request the
      manager sends on `__enter__` goes through our wrapper, so the raw event stream under the
      `MessageStream` is the same proxy as above and the span ends once however the app ends it.
    - `messages.batches.results(id)`: each succeeded result read is priced at the batch discount, as
      one call per model per read (operation `batch`, `llmcost.batch=true`, `llmcost.batch.id`). A result
      is counted once per process, so reading a batch's results again records nothing new.

    The `anthropic` 2.x SDK traces itself (scope `com.anthropic.sdk.python`, one CLIENT span per API
    call with GenAI usage). Our span is current while the SDK runs, so its span is a child of ours; ours
    alone carries `gen_ai.usage.cost`, the metrics are recorded once, and the embedded store and the
    processor skip the SDK's span under ours. Turn the SDK's spans off with the client option
    `open_telemetry=False` or `ANTHROPIC_OPEN_TELEMETRY=false`, or point them at a provider with
    `open_telemetry={"tracer_provider": provider}`.

    Bedrock and Vertex clients of the same SDK are priced under their own provider names
    (`aws.bedrock`, `gcp.vertex_ai`), as the SDK names them. Request attributes: `max_tokens`, `stream`,
    and `temperature` / `top_p` / `top_k` when sent (in 2.x through `extra_body`). Prompt and response
    text are recorded only with `capture_content=True` or
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.

    Not priced: `with_streaming_response` bodies the app reads itself (the span is marked
    `llmcost.price.known=false`), `count_tokens` (free), and price modifiers the catalog does not know
    (fast mode, priority tier, regional inference).
    """

    _instruments = _instruments

    def _patches(self) -> Iterable[Patch]:
        state = self.state
        ledger = batch_ledger
        for module, batches, beta in ((_MESSAGES, _BATCHES, False), (_BETA_MESSAGES, _BETA_BATCHES, True)):
            messages = MessagesEndpoint(self._capture, beta=beta)
            parse = MessagesEndpoint(self._capture, beta=beta, method="parse")
            for cls, make, asynchronous in (("", sync_wrapper, False), ("Async", async_wrapper, True)):
                call = make(state, messages)
                yield Patch(module, f"{cls}Messages.create", call)
                yield Patch(module, f"{cls}Messages.parse", make(state, parse))
                yield Patch(module, f"{cls}Messages.stream", _stream_helper_wrapper(state, call, asynchronous))
                yield Patch(batches, f"{cls}Batches.results", _results_wrapper(state, ledger, asynchronous))

    def _capture(self) -> bool:
        telemetry = self.state.telemetry
        return bool(telemetry and telemetry.capture_content)


def _request_attribute(manager: Any) -> str | None:
    """The attribute where a stream manager keeps the request it sends on enter (a private, mangled name)."""
    fields = vars(manager)
    for cls in type(manager).__mro__:
        name = f"_{cls.__name__.lstrip('_')}__api_request"
        if name in fields:
            return name
    return None


class _OnAwait:
    """An awaitable that makes its coroutine only when awaited: a manager that is never entered leaves
    no coroutine of ours un-awaited (the SDK's own request coroutine warns as it would without us)."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    def __await__(self) -> Any:
        return self._make().__await__()


def _close(coroutine: Any) -> None:
    close = getattr(coroutine, "close", None)
    if callable(close):
        close()


def _stream_helper_wrapper(state: Instrumentation, call: Callable[..., Any], asynchronous: bool) -> Callable[..., Any]:
    """`messages.stream()` posts by itself rather than through `create`: route the request its manager
    sends on enter through the same call wrapper, and give the app the SDK's manager, unchanged otherwise."""

    def stream(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        manager = wrapped(*args, **kwargs)
        if state.telemetry is None:
            return manager
        try:
            attribute = _request_attribute(manager)
            if attribute is None:
                _log.info("otel-llmcost: %s keeps its request where we do not look; its calls are not "
                          "instrumented (the SDK's own span still has their usage)", type(manager).__name__)
                return manager
            request = getattr(manager, attribute)
            request_kwargs = {**kwargs, "stream": True}

            def rebuilt(call_kwargs: dict[str, Any]) -> Any:
                """The SDK's request for changed arguments (a guard rerouted the call): a fresh manager's."""
                fresh = wrapped(*args, **{k: v for k, v in call_kwargs.items() if k != "stream"})
                return getattr(fresh, attribute)

            if asynchronous:
                sent = False

                def send_async(*_: Any, **call_kwargs: Any) -> Any:
                    nonlocal sent
                    sent = True
                    if call_kwargs == request_kwargs:
                        return request  # the SDK's coroutine, awaited by the wrapper on __aenter__
                    _close(request)  # a coroutine never to be awaited: silence it
                    return rebuilt(call_kwargs)

                async def enter() -> Any:
                    try:
                        return await call(send_async, instance, (), request_kwargs)
                    finally:
                        if not sent:  # a guard answered (a cache hit): the SDK's request is never sent
                            _close(request)

                setattr(manager, attribute, _OnAwait(enter))
            else:
                def send(*_: Any, **call_kwargs: Any) -> Any:
                    return request() if call_kwargs == request_kwargs else rebuilt(call_kwargs)()

                setattr(manager, attribute, lambda: call(send, instance, (), request_kwargs))
        except Exception:
            _log.debug("otel-llmcost: wrapping a message stream manager failed; it runs uninstrumented",
                       exc_info=True)
        return manager

    return stream


def _batch_read(state: Instrumentation, ledger: BatchLedger, instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any], decoder: Any, asynchronous: bool) -> Any:
    telemetry = state.telemetry
    batch_id = args[0] if args else kwargs.get("message_batch_id")
    if telemetry is None or not isinstance(batch_id, str):
        return decoder
    try:
        provider, attrs = client_attributes(instance)
        read = BatchResultsRead(telemetry, provider, batch_id, ledger, attrs)
        return (AsyncStreamProxy if asynchronous else StreamProxy)(decoder, read, read)
    except Exception:
        _log.debug("otel-llmcost: wrapping batch results failed; they are not priced", exc_info=True)
        return decoder


def _results_wrapper(state: Instrumentation, ledger: BatchLedger, asynchronous: bool) -> Callable[..., Any]:
    if asynchronous:
        async def async_results(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                                kwargs: dict[str, Any]) -> Any:
            decoder = await wrapped(*args, **kwargs)
            return _batch_read(state, ledger, instance, args, kwargs, decoder, True)

        return async_results

    def results(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _batch_read(state, ledger, instance, args, kwargs, wrapped(*args, **kwargs), False)

    return results


__all__ = ["AnthropicInstrumentor"]
