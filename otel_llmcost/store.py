"""The embedded call store: GenAI spans kept in a local SQLite file when no collector is configured.

It answers the first question a team has ("what did this run cost, and where?") with no server at all,
and it is what `otel-llmcost report` reads. One row per span that carries GenAI usage: ours, and those
other instrumentations or the SDKs themselves made, so a call is recorded whoever traced it. Spans we
made have the cost; another tool's span under one of ours is the same call, and is left out.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import names
from .telemetry import SCOPE, recent_call_spans

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT,
    start_unix_nano INTEGER NOT NULL,
    end_unix_nano INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    provider TEXT,
    operation TEXT,
    request_model TEXT,
    response_model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_write_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_usd REAL,
    price_known INTEGER,
    cache_status TEXT,
    saved_usd REAL,
    user_id TEXT,
    tenant_id TEXT,
    tier TEXT,
    feature TEXT,
    error_type TEXT,
    time_to_first_chunk REAL,
    incomplete INTEGER,
    estimated INTEGER,
    batch INTEGER,
    route_from_model TEXT,
    budget_level TEXT,
    complexity TEXT,
    query_hash TEXT,
    prefix_hashes TEXT,
    cache_similarity REAL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (start_unix_nano);
CREATE INDEX IF NOT EXISTS calls_by_run ON calls (run_id);
"""

_COLUMNS = (
    "run_id", "start_unix_nano", "end_unix_nano", "trace_id", "span_id", "scope", "provider", "operation",
    "request_model", "response_model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_usd", "price_known", "cache_status", "saved_usd",
    "user_id", "tenant_id", "tier", "feature", "error_type", "time_to_first_chunk", "incomplete",
    "estimated", "batch", "route_from_model", "budget_level", "complexity", "query_hash", "prefix_hashes",
    "cache_similarity",
)
# Columns added after the first release, with their types: older store files get them on open.
_ADDED_COLUMNS = {"complexity": "TEXT", "query_hash": "TEXT", "prefix_hashes": "TEXT", "cache_similarity": "REAL"}


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (and create) a store; WAL so a report can read while an app writes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(_SCHEMA)
    present = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in present:
            try:
                connection.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise
    return connection


def _prefix_json(attrs: Any) -> str | None:
    """``[[tokens, hash], ...]`` from the span's two parallel prefix attributes (None when absent)."""
    hashes = attrs.get(names.LLMCOST_PROMPT_PREFIX_HASHES)
    tokens = attrs.get(names.LLMCOST_PROMPT_PREFIX_TOKENS)
    if not hashes or not tokens or len(hashes) != len(tokens):
        return None
    return json.dumps([[int(t), str(h)] for t, h in zip(tokens, hashes, strict=True)], separators=(",", ":"))


def _row(span: ReadableSpan, run_id: str | None) -> tuple[Any, ...] | None:
    attrs = span.attributes or {}
    ours = span.instrumentation_scope is not None and span.instrumentation_scope.name == SCOPE
    if not ours and names.GEN_AI_USAGE_INPUT_TOKENS not in attrs and names.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs:
        return None
    if not ours and span.parent is not None and span.parent.span_id in recent_call_spans:
        return None  # the SDK's own span of a call we already recorded
    context = span.get_span_context()
    if context is None:
        return None
    write = attrs.get(names.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, attrs.get(names.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS))
    known = attrs.get(names.LLMCOST_PRICE_KNOWN)

    def flag(key: str) -> int | None:
        value = attrs.get(key)
        return None if value is None else int(bool(value))

    return (
        run_id, span.start_time, span.end_time, format(context.trace_id, "032x"), format(context.span_id, "016x"),
        span.instrumentation_scope.name if span.instrumentation_scope else "",
        attrs.get(names.GEN_AI_PROVIDER_NAME), attrs.get(names.GEN_AI_OPERATION_NAME),
        attrs.get(names.GEN_AI_REQUEST_MODEL), attrs.get(names.GEN_AI_RESPONSE_MODEL),
        attrs.get(names.GEN_AI_USAGE_INPUT_TOKENS), attrs.get(names.GEN_AI_USAGE_OUTPUT_TOKENS),
        attrs.get(names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), write,
        attrs.get(names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS), attrs.get(names.GEN_AI_USAGE_COST),
        None if known is None else int(bool(known)), attrs.get(names.LLMCOST_CACHE_STATUS),
        attrs.get(names.LLMCOST_COST_SAVED), attrs.get(names.LLMCOST_USER_ID), attrs.get(names.LLMCOST_TENANT_ID),
        attrs.get(names.LLMCOST_USER_TIER), attrs.get(names.LLMCOST_FEATURE), attrs.get(names.ERROR_TYPE),
        attrs.get(names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK), flag(names.LLMCOST_STREAM_INCOMPLETE),
        flag(names.LLMCOST_USAGE_ESTIMATED), flag(names.LLMCOST_BATCH),
        attrs.get(names.LLMCOST_ROUTE_FROM_MODEL), attrs.get(names.LLMCOST_BUDGET_LEVEL),
        attrs.get(names.LLMCOST_ROUTE_COMPLEXITY), attrs.get(names.LLMCOST_QUERY_HASH), _prefix_json(attrs),
        attrs.get(names.LLMCOST_CACHE_SIMILARITY),
    )


class LocalStoreSpanExporter(SpanExporter):
    """A SpanExporter that writes GenAI calls to the SQLite store (use it behind a BatchSpanProcessor)."""

    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._connection = connect(self.path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [row for span in spans if (row := _row(span, self.run_id)) is not None]
        if not rows:
            return SpanExportResult.SUCCESS
        try:
            with self._lock, self._connection:
                self._connection.executemany(
                    f"INSERT OR IGNORE INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    rows,
                )
        except sqlite3.Error:
            _log.exception("otel-llmcost: could not write %d calls to %s", len(rows), self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._connection.close()


@dataclass(frozen=True)
class ModelSummary:
    provider: str
    model: str
    calls: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_calls: int
    saved_usd: float


def summarize(path: str | Path, run_id: str | None = None) -> list[ModelSummary]:
    """Cost by provider and model, for one run or the whole store, most expensive first."""
    connection = connect(path)
    try:
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        rows = connection.execute(
            f"""SELECT coalesce(provider, '?'), coalesce(response_model, request_model, '?'), count(*),
                       coalesce(sum(input_tokens), 0), coalesce(sum(cache_read_tokens), 0),
                       coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0),
                       sum(CASE WHEN price_known = 0 THEN 1 ELSE 0 END), coalesce(sum(saved_usd), 0)
                FROM calls {where} GROUP BY 1, 2 ORDER BY 7 DESC, 3 DESC""",
            params,
        ).fetchall()
    finally:
        connection.close()
    return [ModelSummary(*row) for row in rows]


def format_summary(rows: list[ModelSummary]) -> str:
    """A plain-text table: what a developer wants to see when the program exits."""
    if not rows:
        return "otel-llmcost: no LLM calls were recorded."
    header = ("provider", "model", "calls", "input tok", "cached", "output tok", "USD", "unpriced")
    body = [
        (r.provider, r.model, str(r.calls), f"{r.input_tokens:,}",
         f"{(r.cached_tokens / r.input_tokens if r.input_tokens else 0):.0%}", f"{r.output_tokens:,}",
         "unknown" if r.unpriced_calls == r.calls else f"{r.cost_usd:.6f}",
         str(r.unpriced_calls) if r.unpriced_calls else "")
        for r in rows
    ]
    total_cost = sum(r.cost_usd for r in rows)
    total_calls = sum(r.calls for r in rows)
    unpriced = sum(r.unpriced_calls for r in rows)
    saved = sum(r.saved_usd for r in rows)
    body.append(("total", "", str(total_calls), f"{sum(r.input_tokens for r in rows):,}", "",
                 f"{sum(r.output_tokens for r in rows):,}", f"{total_cost:.6f}", str(unpriced) if unpriced else ""))
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = ["otel-llmcost: cost of this run"]
    for index, row in enumerate((header, *body)):
        cells = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
        if index == 0 or index == len(body) - 1:
            lines.append("  " + "  ".join("-" * w for w in widths))
    if unpriced:
        lines.append(f"  {unpriced} call(s) had no known price (see llmcost.price.known=false); "
                     "add them to a price file (OTEL_LLMCOST_PRICES_FILE).")
    if saved:
        lines.append(f"  cache hits saved ${saved:.6f}")
    return "\n".join(lines)
