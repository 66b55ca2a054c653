"""OpenAI instrumentation: every Chat Completions, Responses and Embeddings call priced.

Usage::

    from otel_llmcost.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=..., meter_provider=...)

or `otel_llmcost.instrument()` for every installed SDK, or `opentelemetry-instrument` (entry point
`llmcost_openai`). Covered: `chat.completions.create` / `parse` / `stream` (the stream helper calls
`create`), `responses.create` / `parse` / `stream`, `embeddings.create`, sync and async, and
`batches.retrieve`, which prices a completed batch once at the batch discount.

Streams: when the app did not ask a Chat Completions stream for usage, we add
`stream_options.include_usage` to the request and drop the one extra usage-only chunk before the app
sees it, so the app's stream is what it would have been. Set `OTEL_LLMCOST_OPENAI_STREAM_USAGE=estimate`
to leave requests untouched; tokens are then estimated from text (~4 characters a token) and the span
says `llmcost.usage.estimated=true`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .._base import LLMCostInstrumentor, Patch
from .._wrappers import Instrumentation, Outcome, async_wrapper, finish, sync_wrapper
from .package import _instruments
from .patch import BatchEndpoint, OpenAIEndpoint

_log = logging.getLogger("otel_llmcost.instrumentation")

_CHAT = "openai.resources.chat.completions.completions"
_RESPONSES = "openai.resources.responses.responses"
_EMBEDDINGS = "openai.resources.embeddings"
_BATCHES = "openai.resources.batches"


class OpenAIInstrumentor(LLMCostInstrumentor):
    """Instruments the `openai` SDK (see the module docstring)."""

    _instruments = _instruments

    def _patches(self) -> Iterable[Patch]:
        state = self.state
        capture = self._capture
        chat = OpenAIEndpoint("chat", capture)
        chat_parse = OpenAIEndpoint("chat", capture, method="parse")
        responses = OpenAIEndpoint("responses", capture)
        responses_parse = OpenAIEndpoint("responses", capture, method="parse")
        embeddings = OpenAIEndpoint("embeddings", capture)
        batches = BatchEndpoint()
        for cls, make in (("", sync_wrapper), ("Async", async_wrapper)):
            yield Patch(_CHAT, f"{cls}Completions.create", make(state, chat))
            yield Patch(_CHAT, f"{cls}Completions.parse", make(state, chat_parse))
            yield Patch(_RESPONSES, f"{cls}Responses.create", make(state, responses))
            yield Patch(_RESPONSES, f"{cls}Responses.parse", make(state, responses_parse))
            yield Patch(_EMBEDDINGS, f"{cls}Embeddings.create", make(state, embeddings))
        yield Patch(_BATCHES, "Batches.retrieve", _batch_wrapper(state, batches, asynchronous=False))
        yield Patch(_BATCHES, "AsyncBatches.retrieve", _batch_wrapper(state, batches, asynchronous=True))

    def _capture(self) -> bool:
        telemetry = self.state.telemetry
        return bool(telemetry and telemetry.capture_content)


def _record_batch(state: Instrumentation, batches: BatchEndpoint, batch: Any) -> None:
    telemetry = state.telemetry
    if telemetry is None or not batches.first_completion(batch):
        return
    from ...pricing import usage as usage_mod

    model = getattr(batch, "model", None) or "unknown"
    call = telemetry.start("openai", "batch", model, {"llmcost.batch.id": batch.id})
    finish(call, Outcome(usage_mod.from_openai_responses(batch.usage), model, batch=True))


def _batch_wrapper(state: Instrumentation, batches: BatchEndpoint, *, asynchronous: bool) -> Callable[..., Any]:
    if asynchronous:
        async def async_retrieve(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            batch = await wrapped(*args, **kwargs)
            try:
                _record_batch(state, batches, batch)
            except Exception:
                _log.debug("otel-llmcost: pricing a batch failed", exc_info=True)
            return batch

        return async_retrieve

    def retrieve(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        batch = wrapped(*args, **kwargs)
        try:
            _record_batch(state, batches, batch)
        except Exception:
            _log.debug("otel-llmcost: pricing a batch failed", exc_info=True)
        return batch

    return retrieve


__all__ = ["OpenAIInstrumentor"]
