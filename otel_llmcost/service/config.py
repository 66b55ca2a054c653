"""The processor's config: the budget config file, plus an optional `processor:` section.

    ledger: sqlite:///var/lib/llmcost/ledger.db   # default sqlite:///llmcost-processor.db; redis:// for replicas
    budgets: [...]                                # as for the SDK (otel_llmcost/budget/config.py)
    processor:
      host: 127.0.0.1
      port: 4319
      max_body: 8MiB            # compressed request body; larger → 413
      max_decompressed: 64MiB   # after gzip; larger → 413 (gzip bombs)
      span_accounting: off      # off | foreign | all (see otel_llmcost/service/spans.py)
      retention: 7d             # how long cumulative stream state is kept after last use
      dedup_window: 1h          # how long a delta point or span is remembered; older ones are refused
      max_future: 10m           # clock skew allowed on timestamps; points further ahead are rejected
      request_timeout: 5s       # a request (headers and body) must arrive within this; idle keep-alive too
      token_env: OTEL_LLMCOST_PROCESSOR_TOKEN   # env variable holding the /v1/hints bearer token

The budget part is read by `load_budget_config` (which leaves `processor:` alone); this module reads the
rest with the same care: a wrong value names the file, the field and what to write instead.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..budget import BudgetConfig, load_budget_config
from ..budget.errors import ConfigError
from ..budget.windows import parse_duration
from .spans import SPAN_ACCOUNTING_MODES

TOKEN_ENV = "OTEL_LLMCOST_PROCESSOR_TOKEN"
DEFAULT_LEDGER = "sqlite:///llmcost-processor.db"
_KEYS = ("host", "port", "max_body", "max_decompressed", "span_accounting", "retention", "dedup_window",
         "max_future", "request_timeout", "token_env")
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|mib|mb|gib|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


@dataclass(frozen=True)
class ProcessorConfig:
    """Settings of the processor service (see the module doc for their meaning and defaults)."""

    host: str = "127.0.0.1"
    port: int = 4319
    max_body: int = 8 * 2**20
    max_decompressed: int = 64 * 2**20
    span_accounting: str = "off"
    retention: float = 7 * 86400.0
    dedup_window: float = 3600.0
    max_future: float = 600.0
    request_timeout: float = 5.0
    token_env: str = TOKEN_ENV


def _size(value: Any, field: str, source: str | None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise ConfigError(f"{value!r} is not a size; write bytes or e.g. 512KiB, 8MiB", field=field, source=source)
    return int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]


def parse_processor_section(section: Any, source: str | None = None) -> ProcessorConfig:
    """A `ProcessorConfig` from the `processor:` mapping (None: defaults)."""
    if section is None:
        return ProcessorConfig()
    if not isinstance(section, dict):
        raise ConfigError(f"expected a mapping, got {type(section).__name__}", field="processor", source=source)
    for key in section:
        if key not in _KEYS:
            hint = difflib.get_close_matches(str(key), _KEYS, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(_KEYS)}"
            raise ConfigError(f"unknown key {key!r}{tail}", field=f"processor.{key}", source=source)
    values: dict[str, Any] = {}
    if "host" in section:
        if not isinstance(section["host"], str) or not section["host"].strip():
            raise ConfigError("expected a host name or address", field="processor.host", source=source)
        values["host"] = section["host"].strip()
    if "port" in section:
        port = section["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"{port!r} is not a TCP port (0-65535)", field="processor.port", source=source)
        values["port"] = port
    for key in ("max_body", "max_decompressed"):
        if key in section:
            values[key] = _size(section[key], f"processor.{key}", source)
    if "span_accounting" in section:
        mode = section["span_accounting"]
        mode = "off" if mode is False else "all" if mode is True else mode
        if mode not in SPAN_ACCOUNTING_MODES:
            raise ConfigError(f"{mode!r} is not one of {', '.join(SPAN_ACCOUNTING_MODES)}",
                              field="processor.span_accounting", source=source)
        values["span_accounting"] = mode
    if "retention" in section:
        try:
            seconds = parse_duration(str(section["retention"])).total_seconds()
        except ValueError as exc:
            raise ConfigError(str(exc), field="processor.retention", source=source) from None
        if seconds < 3600:
            raise ConfigError("keep stream state at least 1h (the Collector retries for minutes, apps "
                              "export every minute or so)", field="processor.retention", source=source)
        values["retention"] = seconds
    if "dedup_window" in section:
        try:
            seconds = parse_duration(str(section["dedup_window"])).total_seconds()
        except ValueError as exc:
            raise ConfigError(str(exc), field="processor.dedup_window", source=source) from None
        if seconds < 300:
            raise ConfigError("remember points and spans at least 5m: the Collector retries a failed export for "
                              "minutes (otlphttp: max_elapsed_time)", field="processor.dedup_window", source=source)
        values["dedup_window"] = seconds
    for key, low in (("max_future", 0.0), ("request_timeout", 0.1)):
        if key in section:
            raw = section[key]
            try:
                seconds = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) \
                    else parse_duration(str(raw)).total_seconds()
            except ValueError as exc:
                raise ConfigError(str(exc), field=f"processor.{key}", source=source) from None
            if not seconds >= low:
                raise ConfigError(f"{raw!r} is too short", field=f"processor.{key}", source=source)
            values[key] = seconds
    if "token_env" in section:
        if not isinstance(section["token_env"], str) or not section["token_env"]:
            raise ConfigError("expected an environment variable name", field="processor.token_env",
                              source=source)
        values["token_env"] = section["token_env"]
    return ProcessorConfig(**values)


def load_processor_config(path: str | os.PathLike[str]) -> tuple[BudgetConfig, ProcessorConfig]:
    """The budget config and processor settings of one file; `ConfigError` naming what is wrong."""
    budgets = load_budget_config(path)
    source = str(path)
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    section = data.get("processor") if isinstance(data, dict) else None
    return budgets, parse_processor_section(section, source)
