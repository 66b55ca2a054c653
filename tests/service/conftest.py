"""Processor fixtures: a real service on a loopback port with a real ledger, per test."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import BudgetEngine, load_budget_config
from otel_llmcost.budget.alerts import Alert
from otel_llmcost.service import IngestStore, ProcessorConfig, ProcessorService, open_store
from otel_llmcost.service.config import parse_processor_section
from otel_llmcost.service.redis_store import RedisIngestStore
from otel_llmcost.testing.processes import RedisServer

TOKEN = "test-token-0123456789"

BUDGETS = """
budgets:
  - {name: monthly, amount: 100}
  - {name: per-user, amount: 1, window: day, scope: {by: user}}
  - {name: by-service, amount: 50, window: day, scope: {by: service.name}}
routing:
  substitutes: {gpt-5.4: gpt-5.4-mini}
alerts: {log: false}
forecast: false
"""


class RecordingSink:
    """An alert sink that keeps what it was sent (the engine's sink protocol: `send(alert)`)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)


@dataclass
class Running:
    service: ProcessorService
    engine: BudgetEngine
    url: str
    sink: RecordingSink

    def spend(self, budget: str, scope: str = "global") -> Decimal:
        for status in self.engine.state():
            if status.budget == budget and status.scope_key == scope:
                return status.spend
        return Decimal(0)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the session."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The ingest store: SQLite, or each in turn where a module parametrizes it (indirect)."""
    if getattr(request, "param", "sqlite") == "redis":
        return f"redis:{request.getfixturevalue('redis_url')}"
    return "sqlite"


@pytest.fixture
def start_processor(tmp_path: Path, backend: str) -> Iterator[Callable[..., Running]]:
    """Start a processor with the given budgets YAML and `processor:` settings on this test's backend."""
    started: list[Any] = []

    def start(budgets: str = BUDGETS, ledger: str | None = None, store: IngestStore | None = None,
              **settings: Any) -> Running:
        ledger = ledger or (None if backend == "sqlite" else backend)
        path = tmp_path / f"budgets{len(started)}.yaml"
        path.write_text(textwrap.dedent(budgets), encoding="utf-8")
        config = load_budget_config(path)
        if store is not None:
            pass
        elif ledger is not None and ledger.startswith("redis:"):
            store = RedisIngestStore.from_url(ledger[len("redis:"):], prefix=f"test:{uuid.uuid4().hex}",
                                              retention=86400.0)
        else:
            store = open_store(ledger or f"sqlite:///{tmp_path / f'ledger{len(started)}.db'}", retention=86400.0)
        sink = RecordingSink()
        engine = BudgetEngine(config, store, [sink])
        # The builders stamp points up to an hour ahead (so that each test's series start after its
        # store was made): allow that much clock skew unless a test sets its own.
        processor = parse_processor_section({"port": 0, "max_future": "2h", **settings})
        service = ProcessorService(engine, store, ProcessorConfig(**{**processor.__dict__, "host": "127.0.0.1"}),
                                   token=TOKEN)
        context = service.serve()
        server = context.__enter__()
        started.append((context, engine, store))
        host, port = server.server_address[:2]
        return Running(service, engine, f"http://127.0.0.1:{port}", sink)

    yield start
    for context, engine, store in started:
        context.__exit__(None, None, None)
        engine.close()
        store.close()

