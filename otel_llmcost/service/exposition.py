"""`/metrics`: the processor's counters and the budget gauges in the Prometheus text format.

Names match what the Collector's Prometheus exporter makes of the SDK-side instruments
(`llmcost.budget.utilization` → `llmcost_budget_utilization_ratio`, ...), so dashboards and alert rules
work on either source. The format is small enough to write here rather than add a dependency.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .. import names
from ..budget.engine import BudgetStatus
from ..budget.health import DESCRIPTIONS, LedgerHealth


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Counters:
    """Monotonic counters by name and label set, safe to bump from request threads."""

    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self, name: str, text: str) -> None:
        self.help[name] = text
        self.values.setdefault(name, {})

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        if not amount:
            return
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self.values.setdefault(name, {})
            series[key] = series.get(key, 0) + amount

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self.values.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        lines: list[str] = []
        with self._lock:
            snapshot = {name: dict(series) for name, series in self.values.items()}
        for name, series in snapshot.items():
            if name in self.help:
                lines.append(f"# HELP {name} {self.help[name]}")
            lines.append(f"# TYPE {name} counter")
            for key, value in sorted(series.items()):
                lines.append(f"{name}{_labels(dict(key))} {_number(value)}")
        return lines


_GAUGES = (
    ("llmcost_budget_utilization_ratio", "Spend over the budget amount in the current window (0..1+)."),
    ("llmcost_budget_spend_USD", "Spend counted against a budget in its current window."),
    ("llmcost_budget_limit_USD", "The budget amount of the current window."),
    ("llmcost_budget_level", "Budget level: 0 ok, 1 warn, 2 throttle, 3 stop."),
    ("llmcost_budget_projected_USD", "Spend projected at the end of the window at the rate so far."),
)


def budget_gauges(states: Iterable[BudgetStatus]) -> list[str]:
    """The five budget gauges for every budget scope in its current window."""
    rows: dict[str, list[str]] = {name: [] for name, _ in _GAUGES}
    for status in states:
        labels = {"llmcost_budget_name": status.budget, "llmcost_budget_scope": status.scope_key}
        rows["llmcost_budget_utilization_ratio"].append(f"{_labels(labels)} {_number(status.utilization)}")
        rows["llmcost_budget_spend_USD"].append(f"{_labels(labels)} {_number(float(status.spend))}")
        rows["llmcost_budget_limit_USD"].append(f"{_labels(labels)} {_number(float(status.limit))}")
        level = {**labels, "llmcost_budget_level": status.level.label}
        rows["llmcost_budget_level"].append(f"{_labels(level)} {int(status.level)}")
        if status.forecast is not None:
            rows["llmcost_budget_projected_USD"].append(f"{_labels(labels)} {_number(float(status.forecast))}")
    lines: list[str] = []
    for name, text in _GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{row}" for row in rows[name]]
    return lines


def gauge(name: str, value: float, text: str) -> list[str]:
    """One unlabelled gauge."""
    return [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]


def ledger_health_lines(health: LedgerHealth) -> list[str]:
    """The ledger's health under the names the Collector gives the in-process instruments
    (`llmcost.budget.backlog.spend` → `llmcost_budget_backlog_spend_USD`, counters with `_total`), so the
    alert rules match both sources; the help texts are the instruments' own."""
    lines = gauge("llmcost_budget_backlog_spend_USD", float(health.waiting_usd),
                  DESCRIPTIONS[names.METRIC_BUDGET_BACKLOG_SPEND])
    lines += gauge("llmcost_budget_backlog_writes", health.waiting_writes,
                   DESCRIPTIONS[names.METRIC_BUDGET_BACKLOG_WRITES])
    counters = (
        ("llmcost_budget_backlog_lost_USD_total", float(health.lost_usd), names.METRIC_BUDGET_BACKLOG_LOST),
        ("llmcost_budget_backlog_dropped_total", health.dropped_writes, names.METRIC_BUDGET_BACKLOG_DROPPED),
        ("llmcost_budget_backlog_journal_errors_total", health.journal_errors,
         names.METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS),
    )
    for name, value, metric in counters:
        lines += [f"# HELP {name} {DESCRIPTIONS[metric]}", f"# TYPE {name} counter", f"{name} {_number(value)}"]
    name = "llmcost_budget_ledger_errors_total"
    lines += [f"# HELP {name} {DESCRIPTIONS[names.METRIC_BUDGET_LEDGER_ERRORS]}", f"# TYPE {name} counter"]
    for path, count in (("call", health.call_errors), ("replay", health.replay_errors)):
        lines.append(f"{name}{_labels({'llmcost_budget_ledger_path': path})} {count}")
    return lines
