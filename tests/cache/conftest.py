"""Cache test fixtures: a real redis-server on loopback, every storage backend, a fake clock.

Small real implementations of the other parts' protocols live in `tests/cache/helpers.py`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_llmcost.cache.storage import CacheStorage, open_storage

INSTALL_HINT = (
    "redis-server is not on PATH: the cache tests need a real one "
    "(Debian: apt-get install -y redis-server; CI's .ci/run installs it)"
)


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process of our own on a loopback port, no persistence; can be killed and restarted."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT)
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session's tests (each test uses a key prefix of its own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
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

