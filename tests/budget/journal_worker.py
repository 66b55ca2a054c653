"""The crash tests' app: a budget engine on a journal, driven by JSON lines on stdin (one reply per line).

    python -m tests.budget.journal_worker <ledger: redis://... | sqlite path> <redis key prefix> <journal>
        <retry_initial seconds>

Commands: ``{"do": "reserve", "n": 3, "estimate": "1"}``, ``{"do": "settle", "i": 0, "amount": "0.1"}``,
``{"do": "record", "amount": "0.5"}``, ``{"do": "drain", "timeout": 20}`` (wait until nothing is pending),
``{"do": "close"}``. Each reply carries the pending writes and the engine's counters. A journal another
process holds ends the worker at start with exit code 3 and the error as its one line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from decimal import Decimal
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
    return {
        "pending": count,
        "pending_usd": str(usd),
        "restored": stats.restored,
        "replayed": stats.replayed,
        "dropped": stats.dropped,
        "journal_errors": stats.journal_errors,
    }


def main() -> int:
    uri, prefix, journal, retry = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ledger = open_ledger(uri, prefix)
    policy = BacklogPolicy(journal=journal, retry_initial=float(retry), retry_max=max(float(retry), 0.2))
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


if __name__ == "__main__":
    sys.exit(main())
