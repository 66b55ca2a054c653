"""Reading calls: the store, OTLP JSON(L) files and a real Prometheus give one frame; bad input says why."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from otel_llmcost.reports.schema import COLUMNS, ReportInputError
from otel_llmcost.reports.sources import load, source_kind
from otel_llmcost.reports.synthetic import write_openmetrics
from otel_llmcost.testing.processes import PrometheusServer, require

UTC = timezone.utc


def totals(frame):
    return {
        "calls": int(frame["calls"].sum()),
        "cost": round(float(frame["cost_usd"].sum()), 9),
        "input": int(frame["input_tokens"].sum()),
        "output": int(frame["output_tokens"].sum()),
        "semantic_hits": int(frame["semantic_hits"].sum()),
        "lookups": int(frame["cache_lookups"].sum()),
        "hashed": int(frame["query_hash"].notna().sum()),
        "prefixed": int(frame["prefix_hashes"].notna().sum()),
    }


def test_store_frame_has_the_schema_and_the_workload(store_path, workload):
    """Every schema column, one row per call, and the workload's exact totals."""
    frame = load(str(store_path))
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == len(workload)
    assert totals(frame)["cost"] == round(float(sum(c.cost for c in workload)), 9)
    assert totals(frame)["prefixed"] == sum(1 for c in workload if c.session_index >= 0)
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"


def test_otlp_files_give_the_same_frame_as_the_store(store_path, otlp_dir):
    """The same spans exported as OTLP JSON lines read back to the same totals as the store."""
    assert source_kind(str(otlp_dir)) == "otlp"
    assert totals(load(str(otlp_dir))) == totals(load(str(store_path)))
    first = load(str(otlp_dir)).iloc[0]
    assert isinstance(first["prefix_hashes"], tuple) or first["prefix_hashes"] is None


def test_since_until_window(store_path, workload):
    """--since/--until keep calls that start in [since, until)."""
    since = datetime(2026, 11, 2, tzinfo=UTC)
    until = datetime(2026, 11, 9, tzinfo=UTC)
    frame = load(str(store_path), since, until)
    assert len(frame) == sum(1 for c in workload if since <= c.start < until)
    assert frame["time"].min() >= since and frame["time"].max() < until


def test_span_files_count_a_retried_export_once(otlp_dir, tmp_path, store_path):
    """The same export written twice (a retry) is counted once; an SDK's own span inside ours is left out."""
    line = (otlp_dir / "part-1.jsonl").read_text().splitlines()[0]
    body = json.loads(line)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    child = dict(span, spanId="ab" * 8, parentSpanId=span["spanId"])
    body["resourceSpans"][0]["scopeSpans"].append({"scope": {"name": "com.anthropic.sdk.python"}, "spans": [child]})
    (tmp_path / "a.jsonl").write_text(line + "\n" + json.dumps(body) + "\n")
    frame = load(str(tmp_path / "a.jsonl"))
    assert len(frame) == len(body["resourceSpans"][0]["scopeSpans"][0]["spans"])


@pytest.mark.parametrize("content, message", [
    ('{"resourceSpans": []}\n{not json\n', r"bad\.jsonl:2: not valid JSON"),
    ('[1, 2]\n', r"bad\.jsonl:1: expected an OTLP export object"),
    ('{"resourceMetrics": []}\n', "no span exports found"),
    ('{"something": 1}\n', r"bad\.jsonl:1: no resourceSpans"),
    ('{"resourceSpans": [{"scopeSpans": [{"scope": {"name": "otel_llmcost"}, "spans": [{"spanId": "01"}]}]}]}\n',
     "has no valid startTimeUnixNano"),
])
def test_malformed_span_files_name_file_and_line(tmp_path, content, message):
    """A malformed span file is an error naming the file, the line and what was expected."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ReportInputError, match=message):
        load(str(path))


def test_empty_and_missing_inputs_are_clear_errors(tmp_path):
    """No file, not a store, an empty store, an empty directory: each says what was wrong and what to do."""
    with pytest.raises(ReportInputError, match="no such store file"):
        load(str(tmp_path / "missing.db"))
    (tmp_path / "notes.db").write_text("hello, this is not SQLite " * 40)
    with pytest.raises(ReportInputError, match="not a readable SQLite store"):
        load(str(tmp_path / "notes.db"))
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ReportInputError, match="not an otel-llmcost store"):
        load(str(tmp_path / "other.db"))
    from otel_llmcost.store import connect

    connect(tmp_path / "empty.db").close()
    with pytest.raises(ReportInputError, match="no LLM calls in .*empty.db.*otel-llmcost run"):
        load(str(tmp_path / "empty.db"))
    (tmp_path / "spans").mkdir()
    with pytest.raises(ReportInputError, match="no .json or .jsonl span files"):
        load(str(tmp_path / "spans"))


def test_old_store_files_are_migrated(tmp_path):
    """A store written before the fingerprint columns existed opens, gains them, and keeps its rows."""
    from otel_llmcost.store import _COLUMNS, _SCHEMA, connect

    old_schema = _SCHEMA
    for column in ("complexity TEXT,", "query_hash TEXT,", "prefix_hashes TEXT,", "cache_similarity REAL,"):
        old_schema = old_schema.replace(f"    {column}\n", "")
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    old_columns = [c for c in _COLUMNS if c not in ("complexity", "query_hash", "prefix_hashes", "cache_similarity")]
    values = {c: None for c in old_columns}
    values.update(start_unix_nano=1_700_000_000 * 10**9, end_unix_nano=1_700_000_001 * 10**9, trace_id="1" * 32,
                  span_id="2" * 16, scope="otel_llmcost", provider="openai", request_model="gpt-5.4",
                  input_tokens=10, output_tokens=5, cost_usd=0.25, price_known=1)
    db.execute(f"INSERT INTO calls ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
               [values[c] for c in old_columns])
    db.commit()
    db.close()
    frame = load(str(path))  # read-only, before migration: the new columns read as empty
    assert frame["cost_usd"].sum() == 0.25 and frame["query_hash"].isna().all()
    connect(path).close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(calls)")}
    assert {"complexity", "query_hash", "prefix_hashes", "cache_similarity"} <= columns
    assert len(load(str(path))) == 1


PROM_SINCE = datetime(2026, 11, 10, tzinfo=UTC)
PROM_UNTIL = datetime(2026, 11, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def prometheus(workload, tmp_path_factory):
    """A real Prometheus whose TSDB holds two days of the workload's counters, backfilled with promtool
    (promtool writes one block per 2 hours: two days keep the backfill to seconds)."""
    workdir = tmp_path_factory.mktemp("prometheus")
    metrics = write_openmetrics([c for c in workload if PROM_SINCE <= c.start < PROM_UNTIL], workdir / "metrics.om")
    subprocess.run([require("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(metrics),
                    str(workdir / "data")], check=True, capture_output=True, timeout=120)
    with PrometheusServer({"global": {"scrape_interval": "15s"}}, workdir=workdir,
                          extra_args=["--storage.tsdb.retention.time=3650d"]) as server:
        yield server


def test_prometheus_counters_give_the_workload_per_day(prometheus, workload):
    """From Prometheus: calls, cost and tokens per day equal the workload's, by increases of real counters."""
    frame = load(prometheus.url, PROM_SINCE, PROM_UNTIL, step=timedelta(hours=1))
    assert set(frame["source"]) == {"prometheus"}
    in_window = [c for c in workload if PROM_SINCE <= c.start < PROM_UNTIL]
    assert int(frame["calls"].sum()) == len(in_window)
    assert float(frame["cost_usd"].sum()) == pytest.approx(float(sum(c.cost for c in in_window)), rel=1e-9)
    assert int(frame["input_tokens"].sum()) == sum(c.usage.input_tokens for c in in_window)
    by_day = frame.groupby(frame["time"].dt.date)["cost_usd"].sum()
    for day in (datetime(2026, 11, 10).date(), datetime(2026, 11, 11).date()):
        expected = sum(float(c.cost) for c in in_window if c.start.date() == day)
        assert by_day[day] == pytest.approx(expected, rel=1e-9)
    by_model = frame.groupby("model")["calls"].sum()
    assert by_model["claude-sonnet-4-6"] == sum(1 for c in in_window if c.model == "claude-sonnet-4-6")
    assert frame["duration_s"].isna().all()


def test_prometheus_errors_are_clear(prometheus):
    """An unreachable server and a refused query are errors that say so."""
    with pytest.raises(ReportInputError, match="cannot reach Prometheus at http://127.0.0.1:9"):
        load("http://127.0.0.1:9", PROM_SINCE, PROM_UNTIL)
    with pytest.raises(ReportInputError, match="more than 11000 points"):
        load(prometheus.url, datetime(2020, 1, 1, tzinfo=UTC), PROM_UNTIL, step=timedelta(minutes=1))
    with pytest.raises(ReportInputError, match="no LLM calls"):
        load(prometheus.url, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
