"""Helpers for the budget tests: a redis-server starter, a fake clock, a list sink, ledgers by kind."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from otel_llmcost.budget import Alert, Ledger, MemoryLedger
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a free loopback port with no persistence; return it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not on PATH; install it (Debian: apt-get install -y redis-server) — "
            "the budget tests run against a real Redis"
        )
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return process, f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.02)
        process.kill()
        process.wait()
    raise RuntimeError("redis-server did not answer PING on loopback")


def make_ledger(kind: str, tmp_path: Path, redis_url: str | None, prefix: str) -> Ledger:
    if kind == "memory":
        return MemoryLedger()
    if kind == "sqlite":
        return SQLiteLedger(tmp_path / "ledger.db")
    from otel_llmcost.budget.ledger.redis import RedisLedger

    assert redis_url is not None
    return RedisLedger.from_url(redis_url, prefix=prefix)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start if start.tzinfo else start.replace(tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return moment


class ListSink:
    """Collects alerts in a list (a real sink, not a mock: the engine just calls send)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def levels(self) -> list[str]:
        return [a.level for a in self.alerts]
