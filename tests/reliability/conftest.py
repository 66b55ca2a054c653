"""The reliability suite's plumbing: the `reliability` marker, recorded numbers, and RELIABILITY.md.

Each test of the suite says what fault it injects and what it checks::

    @pytest.mark.reliability("Redis paused (SIGSTOP)", "rate limit fails open within the socket timeout",
                             covered_by=["tests/ratelimit/test_storage_failures.py::test_fail_open..."])
    def test_x(record_number): ...
        record_number("added latency p100 (s)", 0.52)

When the run ends and ``OTEL_LLMCOST_RELIABILITY_REPORT`` names a file (``RELIABILITY.md``), the table
between the ``<!-- reliability:begin -->`` / ``<!-- reliability:end -->`` markers of that file is
rewritten from the outcomes of this run: the published table is what the suite measured, not what
someone typed. `covered_by` names tests elsewhere that check the same point; their outcomes join the
row when they ran in the same session. ``OTEL_LLMCOST_SOAK=1`` turns on the long soak variants
(marker ``soak``), skipped otherwise so the default suite stays fast.

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
    fault: str
    checked: str
    nodeid: str
    covered_by: tuple[str, ...] = ()
    outcome: str = "not run"
    duration: float = 0.0
    numbers: list[tuple[str, Any]] = field(default_factory=list)
    detail: str = ""


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
        covered = tuple(marker.kwargs.get("covered_by", ()))
        _ROWS[item.nodeid] = _Row(marker.args[0], marker.args[1], item.nodeid, covered)


@pytest.fixture
def record_number(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """Record a measured number (overshoot in USD, drops counted, latency) for this test's table row."""

    def record(name: str, value: Any) -> None:
        if isinstance(value, float):
            value = round(value, 6)
        request.node.user_properties.append((_NUMBER_PREFIX + name, value))

    return record


def _outcome(reports: list[Any]) -> tuple[str, float, str, list[tuple[str, Any]]]:
    """One test's outcome from its setup/call/teardown reports."""
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
    return outcome, duration, detail, numbers


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render(rows: list[_Row], outcomes: dict[str, tuple[str, float, str, list[tuple[str, Any]]]]) -> str:
    lines = [
        "| fault | what is checked | result | numbers | test |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        outcome, duration, detail, numbers = outcomes.get(row.nodeid, ("not run", 0.0, "", []))
        result = outcome if outcome != "pass" else "pass"
        if outcome not in ("not run",):
            result += f" ({duration:.1f} s)"
        if detail and outcome != "pass":
            result += f": {detail.removeprefix('Skipped: ')}"
        shown = "; ".join(f"{name} = {value}" for name, value in numbers)
        test = f"`{row.nodeid.removeprefix('tests/reliability/')}`"
        for other in row.covered_by:
            other_outcome = outcomes.get(other, ("not run in this session", 0.0, "", []))[0]
            test += f"<br>also `{other}` ({other_outcome})"
        lines.append(f"| {_cell(row.fault)} | {_cell(row.checked)} | {_cell(result)} | {_cell(shown)} | {test} |")
    return "\n".join(lines)


def _write_report(path: Path, table: str, summary: str) -> None:
    block = f"{BEGIN}\n{summary}\n\n{table}\n{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
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
    ran = [outcomes[r.nodeid][0] for r in rows if r.nodeid in outcomes]
    summary = (
        f"Generated by the suite ({REPORT_ENV}={target}) on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores{', soak variants on' if soak_enabled() else ''}: "
        f"{sum(o == 'pass' for o in ran)} passed, {sum(o == 'FAIL' for o in ran)} failed, "
        f"{sum(o.startswith('known gap') for o in ran)} known gaps, {sum(o == 'skip' for o in ran)} skipped "
        f"of {len(rows)} rows."
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
