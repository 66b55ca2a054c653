"""Where calls are read from: the embedded store, OTLP JSON(L) span files, a Prometheus server.

`load(source, since, until)` picks the reader from the source's shape (an ``http(s)://`` URL is a
Prometheus server, a ``.json`` / ``.jsonl`` file or a directory of them is span files, anything else
an SQLite store) and returns the calls frame of `otel_llmcost.reports.schema`, or raises
`ReportInputError` saying what was wrong and what to do.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..schema import ReportInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load", "source_kind"]


def source_kind(source: str) -> str:
    """`prometheus`, `otlp` or `store`, from what `source` looks like."""
    if source.startswith(("http://", "https://")):
        return "prometheus"
    path = Path(source)
    if path.is_dir() or path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        return "otlp"
    return "store"


def load(
    source: str,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    step: timedelta = timedelta(hours=1),
    progress: bool = False,
) -> pd.DataFrame:
    """The calls in [since, until) from `source` (see the module docstring); never an empty frame."""
    kind = source_kind(source)
    if kind == "prometheus":
        from .prometheus import read_prometheus

        frame = read_prometheus(source, since, until, step=step, progress=progress)
    elif kind == "otlp":
        from .otlp import read_otlp

        frame = read_otlp(source, since, until, progress=progress)
    else:
        from .store import read_store

        frame = read_store(source, since, until, progress=progress)
    if frame.empty:
        window = ""
        if since is not None or until is not None:
            window = f" between {since.isoformat() if since else 'the start'} and {until.isoformat() if until else 'now'}"
        raise ReportInputError(
            f"no LLM calls in {source}{window}; check the path and the --since/--until window "
            "(the embedded store fills when an app runs under `otel-llmcost run`)"
        )
    return frame
