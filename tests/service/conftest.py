"""Processor fixtures: a real service on a loopback port with a real ledger, per test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import BudgetEngine, load_budget_config
from otel_llmcost.budget.alerts import Alert
from otel_llmcost.service import ProcessorConfig, ProcessorService, open_store
from otel_llmcost.service.config import parse_processor_section

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


@pytest.fixture
def start_processor(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a processor with the given budgets YAML, ledger URI and `processor:` settings."""
    started: list[Any] = []

    def start(budgets: str = BUDGETS, ledger: str | None = None, **settings: Any) -> Running:
        path = tmp_path / f"budgets{len(started)}.yaml"
        path.write_text(textwrap.dedent(budgets), encoding="utf-8")
        config = load_budget_config(path)
        store = open_store(ledger or f"sqlite:///{tmp_path / f'ledger{len(started)}.db'}", retention=86400.0)
        sink = RecordingSink()
        engine = BudgetEngine(config, store, [sink])
        processor = parse_processor_section({"port": 0, **settings})
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
