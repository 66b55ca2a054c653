"""Budgets on LLM spend: policy, ledgers, levels, alerts and hints.

    from otel_llmcost.budget import BudgetEngine, load_budget_config
    engine = BudgetEngine.from_config("llmcost.yaml")
    engine.record_cost(Decimal("0.0042"), {"llmcost.user.id": "alice"})
    engine.hints({"llmcost.user.id": "alice"}).cache_only

Parts, one idea each: `policy` (budgets as dataclasses), `config` (the YAML file), `windows`
(calendar and rolling), `levels` (thresholds, forecast), `ledger` (memory, SQLite, Redis by URI),
`engine`, `alerts` and `webhook` (sinks), `errors`.
"""

from __future__ import annotations

from .alerts import Alert, AlertSink, LoggingSink
from .config import load_budget_config, parse_budget_config
from .engine import BudgetEngine, BudgetStatus, EngineStats, Hints, Ticket
from .errors import BudgetExceededError, ConfigError
from .ledger import BudgetKey, Ledger, MemoryLedger, Refusal, Reservation, Spend, open_ledger, register_ledger
from .levels import AlertLevel, ForecastPolicy, Level, Thresholds
from .policy import AlertsConfig, Budget, BudgetConfig, Routing, Scope, WebhookConfig
from .webhook import SIGNATURE_HEADER, WebhookSink, sign, verify_signature
from .windows import CalendarWindow, RollingWindow, Window, WindowSpec

__all__ = [
    "SIGNATURE_HEADER",
    "Alert",
    "AlertLevel",
    "AlertSink",
    "AlertsConfig",
    "Budget",
    "BudgetConfig",
    "BudgetEngine",
    "BudgetExceededError",
    "BudgetKey",
    "BudgetStatus",
    "CalendarWindow",
    "ConfigError",
    "EngineStats",
    "ForecastPolicy",
    "Hints",
    "Ledger",
    "Level",
    "LoggingSink",
    "MemoryLedger",
    "Refusal",
    "Reservation",
    "RollingWindow",
    "Routing",
    "Scope",
    "Spend",
    "Thresholds",
    "Ticket",
    "WebhookConfig",
    "WebhookSink",
    "Window",
    "WindowSpec",
    "load_budget_config",
    "open_ledger",
    "parse_budget_config",
    "register_ledger",
    "sign",
    "verify_signature",
]
