"""Budget alerts as OpenTelemetry signals: a log record (an event) and a span, through the user's pipeline.

Teams route OpenTelemetry logs and traces already; an alert that travels the same way reaches their
backend, their alerting and their trace view without another integration.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber, get_logger
from opentelemetry.trace import SpanKind, TracerProvider

from .alerts import Alert

_log = logging.getLogger(__name__)

EVENT_NAME = "llmcost.budget.alert"
_SEVERITY = {"warn": SeverityNumber.WARN, "forecast": SeverityNumber.WARN, "throttle": SeverityNumber.ERROR,
             "stop": SeverityNumber.FATAL}


def alert_attributes(alert: Alert) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "llmcost.budget.name": alert.budget,
        "llmcost.budget.scope": alert.scope_key,
        "llmcost.budget.level": alert.level,
        "llmcost.budget.spend": float(alert.spend),
        "llmcost.budget.limit": float(alert.limit),
        "llmcost.budget.threshold": float(alert.threshold),
        "llmcost.budget.window.start": alert.window_start.isoformat(),
        "llmcost.budget.window.end": alert.window_end.isoformat(),
    }
    if alert.forecast is not None:
        attributes["llmcost.budget.forecast"] = float(alert.forecast)
    return attributes


class OpenTelemetrySink:
    """Sends each alert as an OpenTelemetry log record (event `llmcost.budget.alert`) and a span."""

    def __init__(self, *, logger_provider: LoggerProvider | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self._logger = get_logger("otel_llmcost.budget", logger_provider=logger_provider)
        self._tracer = trace.get_tracer("otel_llmcost.budget", tracer_provider=tracer_provider)

    def send(self, alert: Alert) -> None:
        attributes = alert_attributes(alert)
        try:
            self._logger.emit(body=alert.text(), attributes=attributes, event_name=EVENT_NAME,
                              severity_number=_SEVERITY.get(alert.level, SeverityNumber.WARN),
                              severity_text=alert.level.upper())
            with self._tracer.start_as_current_span(EVENT_NAME, kind=SpanKind.INTERNAL, attributes=attributes) as span:
                span.add_event(EVENT_NAME, attributes)
        except Exception:
            _log.exception("budget alert could not be sent as OpenTelemetry signals")
