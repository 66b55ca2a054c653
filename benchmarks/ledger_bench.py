"""Budget ledger throughput: updates per second for memory, SQLite and Redis.

    python benchmarks/ledger_bench.py [--seconds 2] [--max-ops 200000]

Measures, from one Python thread, `record` (one spend update) and `reserve` + `settle` (the two
updates a guarded call makes) on one budget key of a calendar month, and on a 24-slice rolling window
(the check sums 24 buckets). Redis runs in a redis-server this script starts on loopback (no
persistence) and stops. Prints a markdown table. Each case runs for a bounded time and op count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from otel_llmcost.budget import BudgetKey, CalendarWindow, Ledger, MemoryLedger, Reservation, RollingWindow
from otel_llmcost.budget.ledger.sqlite import SQLiteLedger
from otel_llmcost.testing.processes import MissingBinaryError, RedisServer

KEY = BudgetKey("bench", "user=alice")
COST = Decimal("0.000123")
LIMIT = Decimal("1000000")  # never reached: we measure the accepting path


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    try:
        server = RedisServer()
    except MissingBinaryError as exc:
        sys.exit(str(exc))
    with server:
        yield server.url


def rate(operation: Callable[[], object], seconds: float, max_ops: int) -> float:
    """Operations per second over a bounded run (after a short warm-up)."""
    for _ in range(200):
        operation()
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while done < max_ops:
        for _ in range(100):
            operation()
        done += 100
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - start)


def measure(ledger: Ledger, window_name: str, seconds: float, max_ops: int) -> tuple[float, float]:
    now = datetime.now(timezone.utc)
    if window_name == "month":
        window = CalendarWindow("month").at(now)
    else:
        window = RollingWindow(timedelta(hours=24)).at(now)

    def record() -> object:
        return ledger.record(KEY, window, COST)

    def reserve_settle() -> object:
        hold = ledger.reserve(KEY, window, COST, LIMIT, ttl=600)
        assert isinstance(hold, Reservation)
        return ledger.settle(hold, COST)

    return rate(record, seconds, max_ops), rate(reserve_settle, seconds, max_ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case (default 2)")
    parser.add_argument("--max-ops", type=int, default=200_000, help="op bound per case")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        from otel_llmcost.budget.ledger.redis import RedisLedger

        backends: list[tuple[str, Callable[[], Ledger]]] = [
            ("memory://", MemoryLedger),
            ("sqlite (WAL, synchronous=NORMAL)", lambda: SQLiteLedger(Path(tmp) / "normal.db")),
            (
                "sqlite (WAL, synchronous=FULL)",
                lambda: SQLiteLedger(Path(tmp) / "full.db", synchronous="FULL"),
            ),
            ("redis (loopback, Lua)", lambda: RedisLedger.from_url(redis_url, prefix="bench")),
        ]
        ping_client = RedisLedger.from_url(redis_url)._client
        ping = rate(ping_client.ping, args.seconds, args.max_ops)
        ping_client.close()
        for name, make in backends:
            for window_name in ("month", "rolling 24h"):
                ledger = make()
                try:
                    records, pairs = measure(ledger, window_name, args.seconds, args.max_ops)
                finally:
                    ledger.close()
                rows.append((name, window_name, records, pairs))
                print(
                    f"# {name} / {window_name}: {records:,.0f} record/s, {pairs:,.0f} reserve+settle/s",
                    file=sys.stderr,
                )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; redis PING floor {ping:,.0f}/s\n")
    print("| ledger | window | record/s | µs per record | reserve+settle/s | µs per reserve+settle |")
    print("|---|---|---:|---:|---:|---:|")
    for name, window_name, records, pairs in rows:
        print(
            f"| {name} | {window_name} | {records:,.0f} | {1e6 / records:,.1f} | {pairs:,.0f} | {1e6 / pairs:,.1f} |"
        )


if __name__ == "__main__":
    main()
