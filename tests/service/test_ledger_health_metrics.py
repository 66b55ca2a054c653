"""The processor service's /metrics shows its own engine's ledger health: spend waiting, lost, errors.

A real service on loopback, its ledger in a redis-server of this test's own that is stopped, then started
again; /metrics scraped over HTTP and parsed as Prometheus text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from otel_llmcost.testing.processes import RedisServer

from .conftest import BUDGETS, Running
from .otlp_builders import get

D = Decimal
DEADLINE = 20.0
#: A backlog of 2 writes, retried often: the test sees a drop and, once Redis is back, the replay.
WITH_BACKLOG = BUDGETS + "backlog: {size: 2, retry_initial: 0.05, retry_max: 0.2}\n"
CALL = 'llmcost_budget_ledger_errors_total{llmcost_budget_ledger_path="call"}'
REPLAY = 'llmcost_budget_ledger_errors_total{llmcost_budget_ledger_path="replay"}'


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def scrape(url: str) -> tuple[dict[str, float], dict[str, str]]:
    """/metrics as ({series: value}, {metric name: type})."""
    status, body = get(f"{url}/metrics")
    assert status == 200
    values: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values, types


def test_metrics_carry_the_ledger_health_of_the_service_engine(
    start_processor: Callable[..., Running], redis: RedisServer,
) -> None:
    """Series with the in-process names as Prometheus gets them; exact values through an outage."""
    running = start_processor(WITH_BACKLOG, ledger=f"redis:{redis.url}")
    values, types = scrape(running.url)
    assert types["llmcost_budget_backlog_spend_USD"] == types["llmcost_budget_backlog_writes"] == "gauge"
    for counter in ("llmcost_budget_backlog_lost_USD_total", "llmcost_budget_backlog_dropped_total",
                    "llmcost_budget_backlog_journal_errors_total", "llmcost_budget_ledger_errors_total"):
        assert types[counter] == "counter"
    assert values["llmcost_budget_backlog_spend_USD"] == values["llmcost_budget_backlog_writes"] == 0
    assert values["llmcost_budget_backlog_lost_USD_total"] == values[CALL] == values[REPLAY] == 0

    redis.stop()
    for amount in ("0.25", "0.125", "0.5"):  # the service's own engine, on the global budget only
        running.engine.record_cost(D(amount), {})
    values, _ = scrape(running.url)
    assert values["llmcost_budget_backlog_writes"] == 2
    assert values["llmcost_budget_backlog_spend_USD"] == 0.375
    assert values["llmcost_budget_backlog_dropped_total"] == 1
    assert values["llmcost_budget_backlog_lost_USD_total"] == 0.5
    assert values[CALL] >= 3  # each failed write, and each failed read of the budgets for /metrics

    redis.start()
    deadline = time.monotonic() + DEADLINE
    while values["llmcost_budget_backlog_writes"] and time.monotonic() < deadline:
        time.sleep(0.05)
        values, _ = scrape(running.url)
    assert values["llmcost_budget_backlog_writes"] == values["llmcost_budget_backlog_spend_USD"] == 0
    assert values["llmcost_budget_backlog_lost_USD_total"] == 0.5
    assert running.spend("monthly") == D("0.375")
