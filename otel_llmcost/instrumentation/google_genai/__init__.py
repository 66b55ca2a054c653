"""Google GenAI instrumentation: every Gemini request priced, on the Gemini API and on Vertex AI.

Usage::

    from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor
    GoogleGenAIInstrumentor().instrument(tracer_provider=..., meter_provider=...)

or `otel_llmcost.instrument()` for every installed SDK, or `opentelemetry-instrument` (entry point
`llmcost_google_genai`). Covered, sync (`client.models`) and async (`client.aio.models`):
`generate_content`, `generate_content_stream` and `embed_content`, and so everything built on them
(`client.chats`, automatic function calling).

One span per model request. `generate_content` may send several requests for one call: automatic
function calling (on by default when Python functions are passed as tools) asks the model again with each
function's result, and automatic continuation follows `continuation_token`s. The response the app gets
carries the usage of the last request only (function calling) or a sum over requests (continuation),
which would lose tokens or price a sum at a tier no single request reached. So we wrap the per-request
methods the public ones call (`Models._generate_content` / `_generate_content_stream`, present since
google-genai 1.0): each request becomes a `generate_content {model}` span priced once from its own
`usage_metadata`; the requests of one call are siblings under the app's current span. An SDK without
these methods gets the public methods wrapped instead (one span per call, priced from the usage the
returned response reports).

Spans: `gen_ai.provider.name` is `gcp.gemini` for the Gemini Developer API and `gcp.vertex_ai` for a
client in Vertex AI mode (`genai.Client(vertexai=True, ...)`); `gen_ai.operation.name` is
`generate_content` or `embeddings`. Request attributes come from `config` (`GenerateContentConfig` or
dict): temperature, top_p, top_k, max_output_tokens, seed. The response gives `gen_ai.response.model`
(`model_version`), `gen_ai.response.id` and the candidates' finish reasons (`stop`, `max_tokens`, ...;
a blocked prompt gives its block reason). `models/...` and Vertex resource names
(`projects/.../publishers/google/models/...`) are reduced to the model id.

Usage: `prompt_token_count` (cached tokens included; `cached_content_token_count` of them are priced at
the cache-read rate), output = `candidates_token_count` + `thoughts_token_count` (thinking is billed as
output; the thinking share is on the span as `gen_ai.usage.reasoning.output_tokens`). Tiered prices
(gemini-2.5-pro above 200k prompt tokens) use the request's own prompt size. Prompt tokens by modality
(audio costs more on some models) are priced at the text rate.

Streams: every chunk carries the request's running usage; the last one seen is priced when the stream
is exhausted, closed, fails or is garbage-collected. A stream that ends before any candidate has a
finish reason is marked `llmcost.stream.incomplete=true`; one that fails is an ERROR span that keeps the
tokens already reported. An async stream that the app closes (`aclose()`) is closed by the SDK's own
generators a loop turn later, so its span ends then.

Embeddings: priced from `usage_metadata.prompt_token_count` when the response has it, else from the
per-embedding `statistics.token_count` (Vertex AI), else estimated at ~4 characters a token and marked
`llmcost.usage.estimated=true`.

Content: prompts (`gen_ai.input.messages`, `gen_ai.system_instructions`) and answers
(`gen_ai.output.messages`) are recorded only with `capture_content=True` or
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`; inline bytes never are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._base import LLMCostInstrumentor, Patch
from .._wrappers import async_wrapper, sync_wrapper
from .package import _instruments
from .patch import EmbedContentEndpoint, GenerateContentEndpoint

_MODELS = "google.genai.models"
_PER_REQUEST = ("_generate_content", "_generate_content_stream")
_PUBLIC = ("generate_content", "generate_content_stream")


def generate_targets(models_class: Any) -> tuple[str, str]:
    """The methods to wrap for (one response, a stream): per request when the SDK has them."""
    if all(callable(getattr(models_class, name, None)) for name in _PER_REQUEST):
        return _PER_REQUEST
    return _PUBLIC


class GoogleGenAIInstrumentor(LLMCostInstrumentor):
    """Instruments the `google-genai` SDK (see the module docstring)."""

    _instruments = _instruments

    def _patches(self) -> Iterable[Patch]:
        from google.genai import models

        state = self.state
        generate = GenerateContentEndpoint(False, self._capture)
        generate_stream = GenerateContentEndpoint(True, self._capture)
        embed = EmbedContentEndpoint()
        for cls, make in (("Models", sync_wrapper), ("AsyncModels", async_wrapper)):
            plain, streamed = generate_targets(getattr(models, cls))
            yield Patch(_MODELS, f"{cls}.{plain}", make(state, generate))
            yield Patch(_MODELS, f"{cls}.{streamed}", make(state, generate_stream))
            yield Patch(_MODELS, f"{cls}.embed_content", make(state, embed))

    def _capture(self) -> bool:
        telemetry = self.state.telemetry
        return bool(telemetry and telemetry.capture_content)


__all__ = ["GoogleGenAIInstrumentor"]
