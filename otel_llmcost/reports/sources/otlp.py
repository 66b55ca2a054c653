"""Calls from OTLP JSON span files: what the Collector's file exporter writes (one JSON export request
per line, `.jsonl`), or single exports saved as `.json`.

The same selection as the embedded store: our spans, plus GenAI spans other instrumentations made that
carry usage, except those inside one of our calls (the SDK's own span of the same call, counted once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import names
from ...telemetry import SCOPE
from ..schema import ReportInputError, conform
from ._progress import progress_bar
from ._rows import call_row

if TYPE_CHECKING:
    import pandas as pd

_SUFFIXES = (".json", ".jsonl", ".ndjson")


def _value(value: Any) -> Any:
    """An OTLP JSON AnyValue as a Python value (intValue is a string in OTLP JSON)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return tuple(_value(v) for v in (value["arrayValue"] or {}).get("values", []))
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {item["key"]: _value(item.get("value")) for item in items if isinstance(item, dict) and "key" in item}


def files_of(source: str | Path) -> list[Path]:
    """The span files of `source`: the file itself, or the JSON(L) files of a directory, sorted."""
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
        if not found:
            raise ReportInputError(f"{path}: no .json or .jsonl span files in this directory")
        return found
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file; give an OTLP JSON(L) span file or a directory of them")
    return [path]


def _exports(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, export request) of one file: JSON lines, or one JSON document."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot read the file ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # perhaps JSON lines with a .json name: read line by line
        if document is not None:
            if not isinstance(document, dict):
                raise ReportInputError(f"{path}: expected an OTLP export object with resourceSpans")
            yield 1, document
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                   "span files hold one OTLP JSON export per line") from None
        if not isinstance(document, dict):
            raise ReportInputError(f"{path}:{number}: expected an OTLP export object with resourceSpans")
        yield number, document


def read_otlp(source: str | Path, since: datetime | None, until: datetime | None, *,
              progress: bool = False) -> pd.DataFrame:
    """The calls in [since, until) of the span files of `source`."""
    files = files_of(source)
    low = int(since.timestamp() * 1e9) if since is not None else None
    high = int(until.timestamp() * 1e9) if until is not None else None
    ours: set[str] = set()
    candidates: list[tuple[str, str, dict[str, Any]]] = []  # (span id, parent id, row)
    seen: set[tuple[str, str]] = set()
    traces_found = False
    with progress_bar("reading span files", len(files), progress and len(files) > 1) as bar:
        for path in files:
            for number, export in _exports(path):
                if "resourceMetrics" in export or "resourceLogs" in export:
                    continue  # the file exporter may share a file between signals
                resource_spans = export.get("resourceSpans")
                if not isinstance(resource_spans, list):
                    raise ReportInputError(f"{path}:{number}: no resourceSpans: not an OTLP traces export "
                                           "(write spans with the Collector's file exporter, JSON format)")
                traces_found = True
                for resource in resource_spans:
                    for scope_spans in resource.get("scopeSpans") or []:
                        scope = (scope_spans.get("scope") or {}).get("name", "")
                        for span in scope_spans.get("spans") or []:
                            row = _span_row(path, number, scope, span, low, high, seen)
                            if row is None:
                                continue
                            span_id, parent, is_ours, call = row
                            if is_ours:
                                ours.add(span_id)
                            candidates.append((span_id if is_ours else "", parent, call))
            bar.advance(1)
    if not traces_found:
        raise ReportInputError(f"{source}: no span exports found (only metrics or logs?)")
    rows = [call for own_id, parent, call in candidates if own_id or parent not in ours]
    return conform(rows)


def _span_row(path: Path, number: int, scope: str, span: Any, low: int | None, high: int | None,
              seen: set[tuple[str, str]]) -> tuple[str, str, bool, dict[str, Any]] | None:
    if not isinstance(span, dict):
        raise ReportInputError(f"{path}:{number}: a span is not a JSON object")
    attrs = _attributes(span.get("attributes"))
    is_ours = scope == SCOPE
    if not is_ours and names.GEN_AI_USAGE_INPUT_TOKENS not in attrs and names.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs:
        return None
    try:
        start = int(span["startTimeUnixNano"])
        end = int(span.get("endTimeUnixNano") or 0) or None
    except (KeyError, TypeError, ValueError):
        raise ReportInputError(f"{path}:{number}: span {span.get('spanId', '?')} has no valid startTimeUnixNano") from None
    if (low is not None and start < low) or (high is not None and start >= high):
        return None
    key = (str(span.get("traceId", "")), str(span.get("spanId", "")))
    if key in seen:
        return None  # the same span exported twice (a retry): counted once
    seen.add(key)
    hashes = attrs.get(names.LLMCOST_PROMPT_PREFIX_HASHES)
    tokens = attrs.get(names.LLMCOST_PROMPT_PREFIX_TOKENS)
    prefixes = None
    if hashes and tokens and len(hashes) == len(tokens):
        prefixes = tuple((int(t), str(h)) for t, h in zip(tokens, hashes, strict=True))
    row = call_row(start_ns=start, end_ns=end, source="otlp", get=attrs, prefix_hashes=prefixes)
    return key[1], str(span.get("parentSpanId", "")), is_ours, row
