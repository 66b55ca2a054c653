"""The reliability suite's plumbing: the `reliability` marker, recorded numbers, and RELIABILITY.md.

Each test of the suite says what fault it injects and what it checks::

    @pytest.mark.reliability("Redis paused (SIGSTOP)", "rate limit fails open within the socket timeout",
                             covered_by=["tests/ratelimit/test_storage_failures.py::test_fail_open..."])
    def test_x(record_number): ...
        record_number("added latency p100 (s)", 0.52)

When the run ends and ``OTEL_LLMCOST_RELIABILITY_REPORT`` names a file (``RELIABILITY.md``), the table
between the ``<!-- reliability:begin -->`` / ``<!-- reliability:end -->`` markers of that file (for a
soak run: ``reliability-soak:``) is rewritten from the outcomes of this run: the published table is what
the suite measured, not what someone typed. A parametrized test is one row, with each case's numbers.
`covered_by` names tests elsewhere that check the same point; their outcomes join the row when they ran
in the same session.

``OTEL_LLMCOST_SOAK=1`` runs the long variants: more load, minute-long fuzz runs, fresh random hypothesis
examples (the default run is derandomized, so CI sees the same examples every time); a test marked
``soak`` runs only then.

Environment variables, not command-line options: pytest reads options only from the conftest files it
loads at start-up, and this one is loaded only when the suite is collected.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from .helpers import ManagedRedis

REPORT_ENV = "OTEL_LLMCOST_RELIABILITY_REPORT"
SOAK_ENV = "OTEL_LLMCOST_SOAK"
BEGIN = "<!-- reliability:begin -->"
END = "<!-- reliability:end -->"
_NUMBER_PREFIX = "reliability:"


def soak_enabled() -> bool:
    """True when the long soak variants run (``OTEL_LLMCOST_SOAK=1``)."""
    return os.environ.get(SOAK_ENV, "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability(fault, checked, covered_by=()): a row of the RELIABILITY.md table"
    )
    config.addinivalue_line("markers", f"soak: a long variant, run only with {SOAK_ENV}=1")


@dataclass
class _Row:
    """One table row: a test function, with every parametrized case of it that was collected."""

    fault: str
    checked: str
    name: str
    covered_by: tuple[str, ...] = ()
    cases: list[tuple[str, str]] = field(default_factory=list)  # (node id, case id or "")


_ROWS: dict[str, _Row] = {}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = soak_enabled()
    for item in items:
        if item.get_closest_marker("soak") is not None and not soak:
            item.add_marker(pytest.mark.skip(reason=f"soak variant: set {SOAK_ENV}=1"))
        marker = item.get_closest_marker("reliability")
        if marker is None:
            continue
        if len(marker.args) != 2:
            raise pytest.UsageError(f"{item.nodeid}: @reliability takes (fault, what is checked)")
        base = item.nodeid.split("[", 1)[0]
        row = _ROWS.get(base)
        if row is None:
            row = _ROWS[base] = _Row(marker.args[0], marker.args[1], base,
                                     tuple(marker.kwargs.get("covered_by", ())))
        case = item.callspec.id if hasattr(item, "callspec") else ""
        row.cases.append((item.nodeid, case))


@pytest.fixture
def record_number(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """Record a measured number (overshoot in USD, drops counted, latency) for this test's table row."""

    def record(name: str, value: Any) -> None:
        if isinstance(value, float):
            value = round(value, 6)
        request.node.user_properties.append((_NUMBER_PREFIX + name, value))

    return record


Outcome = tuple[str, float, str, list[tuple[str, Any]]]


def _outcome(reports: list[Any]) -> Outcome:
    """One test case's outcome from its setup/call/teardown reports."""
    outcome, detail, duration = "pass", "", 0.0
    numbers: list[tuple[str, Any]] = []
    for report in reports:
        duration += getattr(report, "duration", 0.0)
        for name, value in getattr(report, "user_properties", ()):
            if isinstance(name, str) and name.startswith(_NUMBER_PREFIX):
                entry = (name[len(_NUMBER_PREFIX):], value)
                if entry not in numbers:
                    numbers.append(entry)
        if hasattr(report, "wasxfail"):
            outcome = "known gap (xfail)" if report.skipped else "FIXED (xpass)"
            detail = str(report.wasxfail)
        elif report.failed:
            outcome = "FAIL"
        elif report.skipped and outcome == "pass":
            outcome = "skip"
            longrepr = report.longrepr
            detail = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return outcome, duration, detail.removeprefix("Skipped: "), numbers


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_SEVERITY = ("FAIL", "FIXED (xpass)", "known gap (xfail)", "skip", "not run", "pass")


def _row_result(row: _Row, outcomes: dict[str, Outcome]) -> tuple[str, str]:
    """The row's result cell and numbers cell, over all its cases."""
    results = [(case, outcomes.get(node, ("not run", 0.0, "", []))) for node, case in row.cases]
    worst = min((o[0] for _, o in results), key=_SEVERITY.index)
    duration = sum(o[1] for _, o in results)
    same = sum(o[0] == worst for _, o in results)
    result = worst if len(results) == 1 else f"{worst} ({same}/{len(results)})"
    if worst != "not run":
        result += f", {duration:.1f} s"
    odd = [(case, o) for case, o in results if o[0] != "pass"]
    if odd and len(results) > 1:
        result += ": " + "; ".join(f"[{case}] {o[0]}" for case, o in odd)
    details = sorted({o[2] for _, o in results if o[2] and o[0] != "pass"})
    if details:
        result += " — " + " / ".join(details)
    numbers = []
    for case, o in results:
        shown = "; ".join(f"{name} = {value}" for name, value in o[3])
        if shown:
            numbers.append(f"[{case}] {shown}" if case else shown)
    return result, "<br>".join(numbers)


def _render(rows: list[_Row], outcomes: dict[str, Outcome]) -> str:
    lines = [
        "| fault | what is checked | result | numbers | test |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        result, numbers = _row_result(row, outcomes)
        test = f"`{row.name.removeprefix('tests/reliability/')}`"
        for other in row.covered_by:
            ran = [o[0] for node, o in outcomes.items() if node == other or node.startswith(other + "[")]
            state = (min(ran, key=_SEVERITY.index) if ran else "not run in this session")
            test += f"<br>also `{other}` ({state})"
        lines.append(f"| {_cell(row.fault)} | {_cell(row.checked)} | {_cell(result)} | {_cell(numbers)} | {test} |")
    return "\n".join(lines)


def _markers() -> tuple[str, str]:
    """The markers of the block this run rewrites: the default run's table, or the soak run's."""
    if soak_enabled():
        return BEGIN.replace("reliability:", "reliability-soak:"), END.replace("reliability:", "reliability-soak:")
    return BEGIN, END


def _write_report(path: Path, table: str, summary: str) -> None:
    begin, end = _markers()
    block = f"{begin}\n{summary}\n\n{table}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Reliability\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get(REPORT_ENV, "").strip()
    if not target or not _ROWS:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    by_node: dict[str, list[Any]] = {}
    for reports in (reporter.stats.values() if reporter is not None else ()):
        for report in reports:
            nodeid = getattr(report, "nodeid", None)
            if nodeid and hasattr(report, "when"):
                by_node.setdefault(nodeid, []).append(report)
    outcomes = {node: _outcome(reports) for node, reports in by_node.items()}
    rows = list(_ROWS.values())  # collection order: file by file, as the tests are written
    results = [_row_result(row, outcomes)[0] for row in rows]
    cases = [outcomes[node][0] for row in rows for node, _ in row.cases if node in outcomes]
    summary = (
        f"Generated by the suite ({REPORT_ENV}={target}) on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores{', soak variants on' if soak_enabled() else ''}: {len(rows)} rows "
        f"({len(cases)} test cases), {sum(r.startswith('pass') for r in results)} pass, "
        f"{sum(r.startswith('FAIL') or r.startswith('FIXED') for r in results)} fail, "
        f"{sum(r.startswith('known gap') for r in results)} known gaps, "
        f"{sum(r.startswith('skip') or r.startswith('not run') for r in results)} not run."
    )
    path = Path(target)
    if not path.is_absolute():
        path = Path(session.config.rootpath) / path
    _write_report(path, _render(rows, outcomes), summary)


# -- shared fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[ManagedRedis]:
    """A redis-server of this test's own (no persistence), which it may kill, restart, pause and resume."""
    server = ManagedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[ManagedRedis]:
    """A redis-server with an append-only file fsynced on every write: what a ledger should run on."""
    server = ManagedRedis(tmp_path / "redis-aof", appendonly=True)
    server.start()
    yield server
    server.close()
