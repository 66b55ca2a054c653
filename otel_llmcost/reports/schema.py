"""The calls frame: one pandas DataFrame, whatever the calls were read from.

A row is one call (from the store or from span files) or, from Prometheus, the calls of one label set
in one time step; so everything countable is a column of counts, and a call's row has 1 or 0 there.
Reports and the advisor read only these columns; a source fills what it knows and leaves the rest at
the default (a figure that needs a missing column says "no data" instead of showing 0).

`SCHEMA` lists the columns, their dtypes and meanings; the README's table is generated from it
(`schema_markdown()`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class ReportInputError(ValueError):
    """Input a report cannot use (no calls, a malformed file, an unreachable server): the message says
    what was wrong and what to do."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    default: Any
    meaning: str


SCHEMA: tuple[Column, ...] = (
    Column("time", "datetime64[ns, UTC]", None, "start of the call (Prometheus: start of the step)"),
    Column("source", "object", None, "`store`, `otlp` or `prometheus`"),
    Column("calls", "int64", 1, "calls the row stands for (1 for a span)"),
    Column("provider", "object", None, "`gen_ai.provider.name`"),
    Column("operation", "object", None, "`gen_ai.operation.name`"),
    Column("request_model", "object", None, "`gen_ai.request.model`"),
    Column("model", "object", None, "the model that answered (response model, else request model)"),
    Column("user", "object", None, "`llmcost.user.id` (Prometheus: only if user ids are on metrics)"),
    Column("tenant", "object", None, "`llmcost.tenant.id`"),
    Column("tier", "object", None, "`llmcost.user.tier`"),
    Column("feature", "object", None, "`llmcost.feature`"),
    Column("input_tokens", "int64", 0, "all input tokens, cached ones included"),
    Column("cached_tokens", "int64", 0, "input tokens read from the provider's prompt cache"),
    Column("cache_write_tokens", "int64", 0, "input tokens written to the provider's prompt cache"),
    Column("output_tokens", "int64", 0, "all output tokens, reasoning included"),
    Column("reasoning_tokens", "int64", 0, "reasoning / thinking tokens"),
    Column("cost_usd", "float64", 0.0, "USD of the priced calls (0 for unpriced ones)"),
    Column("unpriced_calls", "int64", 0, "calls with no known price (`llmcost.price.known=false`)"),
    Column("saved_usd", "float64", 0.0, "USD that cache hits avoided (`llmcost.cost.saved`)"),
    Column("cache_lookups", "int64", 0, "calls that went through the response cache (any status)"),
    Column("exact_hits", "int64", 0, "calls answered by the exact cache"),
    Column("semantic_hits", "int64", 0, "calls answered by the semantic cache"),
    Column("errors", "int64", 0, "calls that failed (`error.type` set)"),
    Column("batch", "bool", False, "priced at the provider's batch rate"),
    Column("duration_s", "float64", float("nan"), "call duration in seconds (spans only)"),
    Column("cache_similarity", "float64", float("nan"), "similarity of a semantic hit or nearest miss"),
    Column("complexity", "object", None, "`llmcost.route.complexity`: simple / medium / complex"),
    Column("query_hash", "object", None, "`llmcost.query.hash`: keyed hash of the whole request"),
    Column("prefix_hashes", "object", None, "((tokens, keyed hash), ...) of the prompt's prefixes"),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA)
GROUP_KEYS: dict[str, str] = {
    "provider": "provider", "model": "model", "user": "user", "tier": "tier", "feature": "feature",
    "day": "day", "tenant": "tenant", "operation": "operation",
}
"""`--group-by` names → frame columns (`day` is derived from `time`)."""


def empty_frame() -> pd.DataFrame:
    """A frame with every column and no rows."""
    return conform([])


def conform(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A frame in the schema from row mappings: missing columns get their defaults, dtypes are set."""
    import pandas as pd

    frame = pd.DataFrame.from_records(list(rows), columns=list(COLUMNS))
    for column in SCHEMA:
        series = frame[column.name]
        if column.dtype.startswith("datetime"):
            frame[column.name] = pd.to_datetime(series, utc=True)
        elif column.dtype == "object":
            frame[column.name] = series.astype(object).where(series.notna(), None)
        elif column.dtype == "bool":
            frame[column.name] = series.astype(object).where(series.notna(), column.default).astype(bool)
        else:
            frame[column.name] = series.fillna(column.default).astype(column.dtype)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def schema_markdown() -> str:
    """The schema as a Markdown table (for the README)."""
    lines = ["| column | dtype | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.dtype} | {c.meaning} |" for c in SCHEMA]
    return "\n".join(lines)
