"""What the three instrumentors share: building the telemetry and (un)patching SDK methods."""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from ..environment_variables import (
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
    OTEL_LLMCOST_METRICS_INCLUDE_USER,
    env_bool,
)
from ..fingerprint import OTEL_LLMCOST_FINGERPRINTS
from ..pricing import PriceCatalog, load_catalog
from ..telemetry import Telemetry, current_telemetry, set_current_telemetry
from ._wrappers import Instrumentation

_log = logging.getLogger("otel_llmcost.instrumentation")


@dataclass(frozen=True)
class Patch:
    """One SDK method to wrap: module path, `Class.method`, and the wrapper factory's output."""

    module: str
    target: str
    wrapper: Callable[..., Any]


_CONFIG_KEYS = ("tracer_provider", "meter_provider", "catalog", "prices_file", "capture_content",
                "metrics_include_user")


def build_telemetry(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    catalog: PriceCatalog | None = None,
    prices_file: str | None = None,
    capture_content: bool | None = None,
    metrics_include_user: bool | None = None,
    **_: Any,
) -> Telemetry:
    """Telemetry from arguments, falling back to the environment; arguments win."""
    telemetry = Telemetry(
        catalog=catalog or load_catalog(prices_file),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=env_bool(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, False)
        if capture_content is None else capture_content,
        metrics_include_user=env_bool(OTEL_LLMCOST_METRICS_INCLUDE_USER, False)
        if metrics_include_user is None else metrics_include_user,
        fingerprints=env_bool(OTEL_LLMCOST_FINGERPRINTS, True),
    )
    set_current_telemetry(telemetry)
    return telemetry


class LLMCostInstrumentor(BaseInstrumentor):
    """Base of our instrumentors; subclasses list their patches in `_patches()`.

    `instrument()` accepts `tracer_provider`, `meter_provider`, `prices_file`, `capture_content`,
    `metrics_include_user`, or a ready `telemetry` shared with other instrumentors.
    """

    _instruments: tuple[str, ...] = ()
    state: Instrumentation

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.state = Instrumentation()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    @property
    def telemetry(self) -> Telemetry | None:
        return self.state.telemetry

    def _patches(self) -> Iterable[Patch]:
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def _instrument(self, **kwargs: Any) -> None:
        # An SDK's own warnings (a deprecated model, say) point `stacklevel` frames up, which is now our
        # wrapper instead of the app; Python would then hide a DeprecationWarning that it shows for the
        # app's own code. Show those once per place, as the app would have seen them.
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"otel_llmcost\.instrumentation\.")
        telemetry = kwargs.get("telemetry")
        if telemetry is None:
            # Instrumentors started one by one with no settings (opentelemetry-instrument) share one
            # telemetry, so budgets and listeners see every SDK's calls.
            shared = current_telemetry()
            configured = any(kwargs.get(key) is not None for key in _CONFIG_KEYS)
            telemetry = shared if shared is not None and not configured else build_telemetry(**kwargs)
        self.state.telemetry = telemetry
        self._applied: list[tuple[str, str]] = []
        for patch in self._patches():
            try:
                wrapt.wrap_function_wrapper(patch.module, patch.target, patch.wrapper)
                self._applied.append((patch.module, patch.target))
            except (ImportError, AttributeError) as exc:
                # An SDK version without this method: instrument what exists, say what does not.
                _log.info("otel-llmcost: %s.%s not found (%s); not instrumented", patch.module, patch.target, exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        for module_name, target in getattr(self, "_applied", []):
            owner_name, _, method = target.rpartition(".")
            owner: Any = importlib.import_module(module_name)
            for part in owner_name.split("."):
                owner = getattr(owner, part)
            unwrap(owner, method)
        self._applied = []
        self.state.telemetry = None
