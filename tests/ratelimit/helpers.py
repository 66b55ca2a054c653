"""Helpers for the rate-limit tests: a fake clock and a real redis-server we can kill and restart."""

from __future__ import annotations

import os
import signal
import threading

from otel_llmcost.testing import processes

INSTALL_HINT = (
    "redis-server is not on PATH: the rate-limit tests run against a real Redis. "
    "Install it: apt-get update && apt-get install -y redis-server (CI does), and pip install redis"
)


class FakeClock:
    """A monotonic clock that moves only when told; counts how often it is read."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class RedisServer(processes.RedisServer):
    """A redis-server of our own on a loopback port, without persistence.

    `stop()` kills it (SIGKILL, like a crash); `start()` brings it back on the same port, empty;
    `freeze()` stops it answering.
    """

    def stop(self, timeout: float = 10.0) -> None:
        self.kill()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing (`stop` still kills it)."""
        assert self.process is not None, "redis-server is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
