"""Fixtures: a synthetic workload of six weeks with known answers, written to a store and span files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from otel_llmcost import fingerprint
from otel_llmcost.pricing import PriceCatalog
from otel_llmcost.reports.synthetic import SyntheticCall, generate, otlp_json_lines, write_store

START = date(2026, 10, 5)  # a Monday
DAYS = 42  # six full weeks: to Sunday 2026-11-15
UNTIL = datetime(2026, 11, 16, tzinfo=timezone.utc)  # Monday midnight: the projection's "as of"


@pytest.fixture(autouse=True)
def _fingerprint_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed hashing key, so no test writes a key file into the home directory."""
    monkeypatch.setenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY, "tests-reports-key")
    fingerprint.reset_key()
    yield
    fingerprint.reset_key()


@pytest.fixture(scope="session")
def catalog() -> PriceCatalog:
    return PriceCatalog()


@pytest.fixture(scope="session")
def workload(catalog: PriceCatalog) -> list[SyntheticCall]:
    mp = pytest.MonkeyPatch()
    mp.setenv(fingerprint.OTEL_LLMCOST_FINGERPRINT_KEY, "tests-reports-key")
    fingerprint.reset_key()
    try:
        return generate(START, DAYS, catalog=catalog)
    finally:
        mp.undo()
        fingerprint.reset_key()


@pytest.fixture(scope="session")
def store_path(workload: list[SyntheticCall], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(workload, tmp_path_factory.mktemp("store") / "calls.db")


@pytest.fixture(scope="session")
def otlp_dir(workload: list[SyntheticCall], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spans")
    lines = otlp_json_lines(workload)
    half = len(lines) // 2
    (folder / "part-1.jsonl").write_text("\n".join(lines[:half]) + "\n")
    (folder / "part-2.jsonl").write_text("\n".join(lines[half:]) + "\n")
    return folder
