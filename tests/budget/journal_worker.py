"""The crash tests' app: a budget engine on a journal, driven by JSON lines on stdin (one reply per line).

    python -m tests.budget.journal_worker <ledger: redis://... | sqlite path> <redis key prefix> <journal>
        <retry_initial seconds> [<journal_sync: interval | always> [<journal_sync_interval seconds>]]

Commands: ``{"do": "reserve", "n": 3, "estimate": "1"}``, ``{"do": "settle", "i": 0, "amount": "0.1"}``,
``{"do": "record", "amount": "0.5"}``, ``{"do": "record_threads", "amounts": [[...], ...]}``
(thread t records its list of amounts, all threads at once), ``{"do": "drain", "timeout": 20}`` (wait
until nothing is pending), ``{"do": "state"}``, ``{"do": "close"}``. Each reply carries the pending
writes, the engine's counters and the journal's sync state. A journal another process holds ends the
worker at start with exit code 3 and the error as its one line.

`Worker` is the tests' side: it starts this script as a child process and talks to it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from otel_llmcost.budget import Budget, BudgetEngine, ConfigError, Ledger
from otel_llmcost.budget.ledger.backlog import BacklogPolicy

BUDGET = Budget("monthly", Decimal("1000"))


def open_ledger(uri: str, prefix: str) -> Ledger:
    if uri.startswith("redis://"):
        from otel_llmcost.budget.ledger.redis import RedisLedger

        return RedisLedger.from_url(uri, prefix=prefix, socket_timeout=0.3, socket_connect_timeout=0.3)
    from otel_llmcost.budget.ledger.sqlite import SQLiteLedger

    return SQLiteLedger(uri, timeout=0.01)


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def state(engine: BudgetEngine) -> dict[str, Any]:
    count, usd = engine.pending()
    stats = engine.stats
    journal = engine._backlog.journal
    return {
        "pending": count,
        "pending_usd": str(usd),
        "restored": stats.restored,
        "replayed": stats.replayed,
        "dropped": stats.dropped,
        "journal_errors": stats.journal_errors,
        "journaled": journal.pending() if journal is not None else 0,
        "unsynced": journal.unsynced() if journal is not None else 0,
        "syncs": journal.syncs if journal is not None else 0,
        "slot": journal.path.name if journal is not None else None,
    }


def record_from_threads(engine: BudgetEngine, amounts: list[list[str]]) -> None:
    """Each list recorded by a thread of its own, all starting together (concurrent submitters)."""
    start = threading.Barrier(len(amounts))

    def run(mine: list[str]) -> None:
        start.wait()
        for amount in mine:
            engine.record_cost(Decimal(amount), {})

    threads = [threading.Thread(target=run, args=(mine,)) for mine in amounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    uri, prefix, journal, retry = sys.argv[1:5]
    sync = sys.argv[5] if len(sys.argv) > 5 else "interval"
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.05
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ledger = open_ledger(uri, prefix)
    policy = BacklogPolicy(journal=journal, retry_initial=float(retry), retry_max=max(float(retry), 0.2),
                           journal_sync=sync, journal_sync_interval=interval)  # fmt: skip
    try:
        engine = BudgetEngine([BUDGET], ledger, sinks=[], backlog=policy)
    except ConfigError as exc:
        reply({"error": type(exc).__name__, "message": str(exc)})
        return 3
    reply({"ready": True, "pid": os.getpid(), **state(engine)})
    tickets = []
    for line in sys.stdin:
        command = json.loads(line)
        action = command["do"]
        if action == "reserve":
            tickets += [engine.reserve(Decimal(command["estimate"]), {}) for _ in range(command["n"])]
        elif action == "settle":
            engine.settle(tickets[command["i"]], Decimal(command["amount"]))
        elif action == "record":
            engine.record_cost(Decimal(command["amount"]), {})
        elif action == "record_threads":
            record_from_threads(engine, command["amounts"])
        elif action == "state":
            pass
        elif action == "drain":
            deadline = time.monotonic() + float(command["timeout"])
            while engine.pending()[0] and time.monotonic() < deadline:
                time.sleep(0.02)
        elif action == "close":
            engine.close()
            ledger.close()
            reply(state(engine))
            return 0
        reply(state(engine))
    return 0


ROOT = Path(__file__).resolve().parents[2]
#: A bound on waiting for the child, never a latency assertion.
DEADLINE = 30.0


class Worker:
    """A child process running this script (a budget engine on a journal), driven line by line."""

    def __init__(self, ledger: str, prefix: str, journal: Path, retry: float = 600.0, sync: str = "interval",
                 interval: float = 0.05) -> None:  # fmt: skip
        command = [sys.executable, "-m", "tests.budget.journal_worker", ledger, prefix, str(journal), str(retry),
                   sync, str(interval)]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the worker ended (exit code {self.process.poll()})"
        return dict(json.loads(line))

    def send(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def kill(self) -> None:
        """SIGKILL, like the OOM killer: no handler, no flush, no close."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=DEADLINE)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    sys.exit(main())
