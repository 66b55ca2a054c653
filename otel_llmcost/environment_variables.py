"""Environment variables we read, in one place.

They are read when `instrument()` or the CLI runs, never at import; an argument passed in code wins.
OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_*, OTEL_TRACES_EXPORTER, ...) keep their meaning.
"""

from __future__ import annotations

import logging
import os
from typing import Final

_log = logging.getLogger(__name__)

OTEL_LLMCOST_PRICES_FILE: Final = "OTEL_LLMCOST_PRICES_FILE"
"""Path of a YAML or JSON price file with overrides and aliases."""

OTEL_LLMCOST_CONFIG: Final = "OTEL_LLMCOST_CONFIG"
"""Path of the YAML config (budgets, guard)."""

OTEL_LLMCOST_METRICS_INCLUDE_USER: Final = "OTEL_LLMCOST_METRICS_INCLUDE_USER"
"""`true` adds user and tenant ids to metric attributes (high cardinality: off by default)."""

OTEL_LLMCOST_STORE: Final = "OTEL_LLMCOST_STORE"
"""Path of the local SQLite call store used in the embedded mode (default ./llmcost.db)."""

OTEL_LLMCOST_SUMMARY: Final = "OTEL_LLMCOST_SUMMARY"
"""`false` turns off the cost summary printed at exit in the embedded mode."""

OTEL_LLMCOST_OPENAI_STREAM_USAGE: Final = "OTEL_LLMCOST_OPENAI_STREAM_USAGE"
"""`request` (default): ask OpenAI streams for usage and hide the extra chunk; `estimate`: never change
the request, estimate tokens from text and mark the span."""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI conventions' switch for recording prompt and response text (off by default)."""


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean variable; a value we do not understand is logged and the default is used."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    _log.warning("%s=%r is not a boolean (true/false); using %s", name, raw, default)
    return default


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """Read a variable with a fixed set of values; anything else is logged and the default is used."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in choices:
        return value
    _log.warning("%s=%r is not one of %s; using %r", name, raw, ", ".join(choices), default)
    return default
