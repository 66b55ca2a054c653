"""Calls from the embedded SQLite store (`otel_llmcost.store`), read in chunks with a progress bar."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import names
from ..schema import ReportInputError, conform
from ._progress import progress_bar
from ._rows import call_row

if TYPE_CHECKING:
    import pandas as pd

_CHUNK = 5000
# Store column → the attribute it holds, so store rows and spans become frame rows the same way.
_ATTRIBUTES = {
    "provider": names.GEN_AI_PROVIDER_NAME, "operation": names.GEN_AI_OPERATION_NAME,
    "request_model": names.GEN_AI_REQUEST_MODEL, "response_model": names.GEN_AI_RESPONSE_MODEL,
    "input_tokens": names.GEN_AI_USAGE_INPUT_TOKENS, "output_tokens": names.GEN_AI_USAGE_OUTPUT_TOKENS,
    "cache_read_tokens": names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "cache_write_tokens": names.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    "reasoning_tokens": names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, "cost_usd": names.GEN_AI_USAGE_COST,
    "price_known": names.LLMCOST_PRICE_KNOWN, "cache_status": names.LLMCOST_CACHE_STATUS,
    "saved_usd": names.LLMCOST_COST_SAVED, "user_id": names.LLMCOST_USER_ID,
    "tenant_id": names.LLMCOST_TENANT_ID, "tier": names.LLMCOST_USER_TIER, "feature": names.LLMCOST_FEATURE,
    "error_type": names.ERROR_TYPE, "batch": names.LLMCOST_BATCH, "complexity": names.LLMCOST_ROUTE_COMPLEXITY,
    "query_hash": names.LLMCOST_QUERY_HASH, "cache_similarity": names.LLMCOST_CACHE_SIMILARITY,
}


def _prefixes(text: Any) -> tuple[tuple[int, str], ...] | None:
    if not text:
        return None
    try:
        return tuple((int(tokens), str(digest)) for tokens, digest in json.loads(text))
    except (ValueError, TypeError):
        return None  # a damaged value: this call simply has no prefix data


def read_store(path: str | Path, since: datetime | None, until: datetime | None, *,
               progress: bool = False) -> pd.DataFrame:
    """The calls in [since, until) of the store at `path`."""
    file = Path(path)
    if not file.is_file():
        raise ReportInputError(f"{file}: no such store file; give the SQLite store an app wrote "
                               "(default ./llmcost.db, or $OTEL_LLMCOST_STORE), span files, or a Prometheus URL")
    try:
        connection = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise ReportInputError(f"{file}: cannot open the store: {exc}") from exc
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
        if not columns:
            raise ReportInputError(f"{file}: not an otel-llmcost store (no `calls` table)")
        wanted = ["start_unix_nano", "end_unix_nano", "prefix_hashes", *_ATTRIBUTES]
        select = ", ".join(c if c in columns else f"NULL AS {c}" for c in wanted)  # older store files
        where, params = [], []
        if since is not None:
            where.append("start_unix_nano >= ?")
            params.append(int(since.timestamp() * 1e9))
        if until is not None:
            where.append("start_unix_nano < ?")
            params.append(int(until.timestamp() * 1e9))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = connection.execute(f"SELECT count(*) FROM calls{clause}", params).fetchone()[0]
        rows: list[dict[str, Any]] = []
        cursor = connection.execute(f"SELECT {select} FROM calls{clause} ORDER BY start_unix_nano", params)
        with progress_bar(f"reading {file.name}", total, progress and total > _CHUNK) as bar:
            while batch := cursor.fetchmany(_CHUNK):
                for record in batch:
                    start, end, prefixes, *values = record
                    attrs = {_ATTRIBUTES[c]: v for c, v in zip(_ATTRIBUTES, values, strict=True) if v is not None}
                    rows.append(call_row(start_ns=start, end_ns=end, source="store", get=attrs,
                                         prefix_hashes=_prefixes(prefixes)))
                bar.advance(len(batch))
    except sqlite3.DatabaseError as exc:
        raise ReportInputError(f"{file}: not a readable SQLite store ({exc})") from exc
    finally:
        connection.close()
    return conform(rows)
