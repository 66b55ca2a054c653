"""Budget test fixtures: a real redis-server on loopback and ledgers of every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_llmcost.budget import Ledger
from otel_llmcost.testing.processes import RedisServer

from .helpers import make_ledger


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on loopback for the whole session, stopped afterwards."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests sharing the server do not see each other."""
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str) -> Iterator[Ledger]:
    """Every ledger backend in turn (the same test body runs against each)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    store = make_ledger(request.param, tmp_path, url, redis_prefix)
    yield store
    store.close()
