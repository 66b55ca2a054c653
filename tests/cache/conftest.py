"""Cache test fixtures: a real redis-server on loopback, every storage backend, a fake clock.

Small real implementations of the other parts' protocols live in `tests/cache/helpers.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_llmcost.cache.storage import CacheStorage, open_storage
from otel_llmcost.testing.processes import RedisServer


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session's tests (each test uses a key prefix of its own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))  # no persistence: a restart comes back empty
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone, which it may kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at a fixed start."""
    return FakeClock()


BACKENDS = ["memory", "sqlite", "redis"]
StorageMaker = Callable[..., CacheStorage]
"""``make_storage(max_entries=100, ttl=None)``: a storage on the backend under test."""


@pytest.fixture(params=BACKENDS)
def backend_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URI of a fresh store on each backend in turn (Redis: a key prefix of this test's own)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cache.db"
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=test-{uuid.uuid4().hex}"


@pytest.fixture
def make_storage(backend_uri: str, clock: FakeClock) -> Iterator[StorageMaker]:
    """Opens storages on the backend under test with the fake clock; closes them afterwards."""
    opened: list[CacheStorage] = []

    def make(max_entries: int | None = 100, ttl: float | None = None) -> CacheStorage:
        storage = open_storage(backend_uri, max_entries=max_entries, ttl=ttl, clock=clock)
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        try:
            storage.clear()
            storage.close()
        except Exception:  # noqa: BLE001 - a test may have closed or broken it on purpose
            pass

