"""Rate-limit fixtures: a real redis-server on loopback, and limiters of every backend.

The `backend` fixture runs a test body once on ``memory://`` (with a fake clock) and once on a real
Redis (server time). `backend.pass_time(s)` moves the fake clock, or sleeps for Redis.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.ratelimit import RateLimiter

from .helpers import INSTALL_HINT, FakeClock, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests keep apart through key prefixes), stopped afterwards."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(tmp_path_factory.mktemp("ratelimit-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone, which the test may kill and restart."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock (the memory storage's time in tests)."""
    return FakeClock()


class Backend:
    """Makes limiters on one storage and lets time pass for it."""

    def __init__(self, name: str, clock: FakeClock, url: str | None) -> None:
        self.name = name
        self.clock = clock
        self.url = url
        self.prefix = f"test:{uuid.uuid4().hex}"
        self.limiters: list[RateLimiter] = []

    @property
    def uri(self) -> str:
        return self.url or "memory://"

    def make(self, tiers: Any, **kwargs: Any) -> RateLimiter:
        """A limiter on this backend; memory ones share nothing, Redis ones share this test's prefix."""
        kwargs.setdefault("clock", self.clock)
        if self.url is not None:
            kwargs.setdefault("storage_options", {"key_prefix": self.prefix})
        limiter = RateLimiter(tiers, self.uri, **kwargs)
        self.limiters.append(limiter)
        return limiter

    def pass_time(self, seconds: float) -> None:
        """Let `seconds` pass as the storage sees time."""
        if self.url is None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    @property
    def exact(self) -> bool:
        """True when no time passes between calls (fake clock): values can be compared exactly."""
        return self.url is None


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    """Every storage in turn: the same test body runs on memory:// and on a real Redis."""
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    made = Backend(request.param, clock, url)
    yield made
    for limiter in made.limiters:
        limiter.close()


@pytest.fixture
def approx(backend: Backend) -> Callable[[float], Any]:
    """`pytest.approx` that allows for the time real calls take on Redis (tight on memory)."""

    def make(expected: float, slack: float = 0.25) -> Any:
        return pytest.approx(expected, abs=1e-6 if backend.exact else slack)

    return make
