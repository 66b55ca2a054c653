"""Fixtures for routing tests: a router on the default table with prices from the bundled catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_llmcost.routing import Router

DATA = Path(__file__).parent / "data"
HELDOUT = DATA / "heldout.jsonl"


@pytest.fixture(scope="session")
def router() -> Router:
    return Router()
