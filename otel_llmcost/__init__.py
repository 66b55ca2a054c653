"""otel-llmcost: the cost of every LLM call, as OpenTelemetry spans and metrics.

    import otel_llmcost
    otel_llmcost.instrument()                     # every installed SDK: openai, anthropic, google-genai
    with otel_llmcost.attributes(user_id="u1", tier="pro", feature="search"):
        client.chat.completions.create(...)       # a priced span and cost metrics, attributed to u1
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from ._control import cache_control
from ._version import __version__
from .context import attributes
from .context import current as current_attributes
from .pricing import Cost, PriceCatalog, UnknownPriceError, Usage, load_catalog
from .telemetry import CallResult, Telemetry

__all__ = [
    "CallResult",
    "Cost",
    "PriceCatalog",
    "Telemetry",
    "UnknownPriceError",
    "Usage",
    "__version__",
    "attributes",
    "cache_control",
    "current_attributes",
    "instrument",
    "instrumentors",
    "load_catalog",
    "uninstrument",
]

_log = logging.getLogger(__name__)

# (SDK import name, instrumentor module, class)
_SDKS = (
    ("openai", "otel_llmcost.instrumentation.openai", "OpenAIInstrumentor"),
    ("anthropic", "otel_llmcost.instrumentation.anthropic", "AnthropicInstrumentor"),
    ("google.genai", "otel_llmcost.instrumentation.google_genai", "GoogleGenAIInstrumentor"),
)
_active: list[Any] = []


def instrumentors() -> list[Any]:
    """Instrumentors for the SDKs installed here (an SDK that is missing is skipped, with a log line)."""
    found = []
    for sdk, module, name in _SDKS:
        try:
            installed = importlib.util.find_spec(sdk) is not None
        except ModuleNotFoundError:
            installed = False
        if not installed:
            _log.info("otel-llmcost: %s is not installed; its instrumentor is skipped", sdk)
            continue
        found.append(getattr(importlib.import_module(module), name)())
    return found


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    prices_file: str | None = None,
    capture_content: bool | None = None,
    metrics_include_user: bool | None = None,
) -> Telemetry:
    """Instrument every installed LLM SDK with one shared telemetry (one catalog, one set of meters).

    Returns the `Telemetry`, to which budget engines and other cost listeners attach.
    """
    from .instrumentation._base import build_telemetry

    uninstrument()
    telemetry = build_telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prices_file=prices_file,
        capture_content=capture_content,
        metrics_include_user=metrics_include_user,
    )
    for instrumentor in instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(telemetry=telemetry)
        if instrumentor.is_instrumented_by_opentelemetry:
            _active.append(instrumentor)
    return telemetry


def uninstrument() -> None:
    """Restore every SDK method `instrument()` wrapped."""
    from .telemetry import set_current_telemetry

    while _active:
        _active.pop().uninstrument()
    set_current_telemetry(None)
