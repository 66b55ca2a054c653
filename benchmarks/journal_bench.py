"""What the backlog journal costs the app during a ledger outage: queued writes per second, per-call latency.

    python benchmarks/journal_bench.py [--threads 8] [--seconds 3] [--modes none,always,interval]
        [--dir DIR]

Why: the journal is written only during an outage, but then on every call; this measures what it adds
there. A real redis-server is started on loopback and stopped (connection refused, the usual outage), a
budget engine with a backlog and a journal (in `--dir`, default a temporary directory: put it on the
disk you care about) takes `record_cost` calls from N threads for a fixed time, and the script prints
calls per second, the median and p99 latency of a call, and the fdatasync calls made. Every call queues
one write (the backlog bound is raised so none is dropped) and makes the one ledger attempt the call
path always makes. Mode "none" is the backlog without a journal (the floor).

To measure a version before `journal_sync` existed, run it with ``PYTHONPATH`` pointing at a copy of
that version's package: the script then runs its one mode as "always" (what that version did).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from otel_llmcost.budget import Budget, BudgetEngine
from otel_llmcost.budget.ledger.backlog import BacklogPolicy
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.testing.processes import MissingBinaryError, RedisServer


def run(mode: str, threads: int, seconds: float, url: str, directory: Path) -> dict[str, float]:
    """One case: `threads` callers for `seconds` against a dead Redis; returns what was measured."""
    ledger = RedisLedger.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
    settings: dict[str, object] = {"size": 10_000_000, "retry_initial": 600.0, "retry_max": 600.0}
    has_modes = "journal_sync" in {f.name for f in dataclasses.fields(BacklogPolicy)}
    if mode != "none":
        path = directory / f"journal-{mode}-{threads}"
        for leftover in (path, path.with_name(path.name + ".lock")):
            leftover.unlink(missing_ok=True)
        settings["journal"] = str(path)
        if has_modes:
            settings["journal_sync"] = mode
    engine = BudgetEngine([Budget("bench", Decimal("1000000"))], ledger, sinks=[],
                          backlog=BacklogPolicy(**settings))  # type: ignore[arg-type]  # fmt: skip
    engine.record_cost(Decimal("0.001"), {})  # the first write queues: later ones find a queue
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def caller(mine: list[float]) -> None:
        start.wait()
        clock, cost = time.perf_counter, Decimal("0.001")
        while True:
            began = clock()
            if began >= stop_at[0]:
                return
            engine.record_cost(cost, {})
            mine.append(clock() - began)

    workers = [threading.Thread(target=caller, args=(latencies[i],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    journal = engine._backlog.journal
    syncs = float(getattr(journal, "syncs", -1)) if journal is not None else 0.0
    calls = sorted(x for mine in latencies for x in mine)
    pending = engine.pending()[0]
    logging.disable(logging.CRITICAL)
    engine.close(timeout=0.1)
    logging.disable(logging.NOTSET)
    ledger.close()
    return {
        "calls": len(calls),
        "calls_per_s": len(calls) / elapsed,
        "median_ms": statistics.median(calls) * 1000,
        "p99_ms": calls[int(0.99 * (len(calls) - 1))] * 1000,
        "syncs": syncs,
        "pending": pending,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,8", help="comma-separated thread counts (default 1,8)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--modes", default="none,always,interval")
    parser.add_argument("--dir", type=Path, default=None, help="where the journals go (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    has_modes = "journal_sync" in {f.name for f in dataclasses.fields(BacklogPolicy)}
    modes = args.modes.split(",") if has_modes else ["always"]
    try:
        server = RedisServer()
    except MissingBinaryError as exc:
        sys.exit(str(exc))
    with server, tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        url = server.url
        server.stop()  # the outage: nothing listens on the port any more
        print("| journal_sync | threads | calls/s | median call (ms) | p99 call (ms) | fdatasyncs |")
        print("|---|---|---|---|---|---|")
        for threads in (int(t) for t in args.threads.split(",")):
            for mode in modes:
                result = run(mode, threads, args.seconds, url, Path(tmp))
                assert result["pending"] == result["calls"] + 1, result  # every call queued, none dropped
                label = mode if has_modes else "always (before group commit)"
                syncs = "" if mode == "none" else f"{result['syncs']:.0f}"
                print(f"| {label} | {threads} | {result['calls_per_s']:.0f} | {result['median_ms']:.2f} "
                      f"| {result['p99_ms']:.2f} | {syncs} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
