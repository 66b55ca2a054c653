"""Helpers of the end-to-end stack test (tests/stack/test_e2e.py): polling with a deadline, the alerts
of Alertmanager notifications, and readers of Prometheus, Alertmanager and the processor.

The webhooks go to `otel_llmcost.testing.WebhookReceiver`, not to the stack's own alert receiver
(collector/alert-receiver/receiver.py): that one keeps parsed JSON only, and checking the processor's
HMAC signature needs the exact bytes and the header.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from otel_llmcost.testing import WebhookReceiver
from otel_llmcost.testing.processes import ManagedProcess

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_CONFIG = REPO / "collector" / "alertmanager.yml"
COMPOSE_RECEIVER = "http://alert-receiver:9095"
"""The receiver address collector/alertmanager.yml names (the docker-compose service)."""


def alertmanager_alerts(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Every alert of every Alertmanager notification posted to `path`, oldest first."""
    return [alert for d in receiver.deliveries(path) if isinstance(d.json, dict)
            for alert in d.json.get("alerts", [])]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             diagnostics: Callable[[], str] | None = None, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and diagnostics) at the deadline.

    The deadline only bounds a hang on a loaded machine; no test asserts how long anything took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            pytest.fail(f"{what}: not seen within {timeout:g} s{extra}")
        time.sleep(interval)


def logs(*processes: ManagedProcess) -> Callable[[], str]:
    """Diagnostics for `wait_for`: the log tails of the stack's processes."""
    return lambda: "\n".join(process.log_tail(15) for process in processes)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def prom_query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    body = get_json(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def prom_value(prometheus_url: str, expr: str) -> float | None:
    """The value of a query that yields one series (None when it yields none yet)."""
    result = prom_query(prometheus_url, expr)
    assert len(result) <= 1, f"{expr} gave {len(result)} series: {result}"
    return float(result[0]["value"][1]) if result else None


def alertmanager_config(receiver_url: str, group_wait: str) -> dict[str, Any]:
    """collector/alertmanager.yml with its receiver URLs on `receiver_url` and every route's group_wait set.

    Routes, matchers, grouping, inhibition and receivers stay as written; only the address and the
    wait before a group's first notification change.
    """
    text = ALERTMANAGER_CONFIG.read_text()
    if COMPOSE_RECEIVER not in text:
        raise AssertionError(f"{ALERTMANAGER_CONFIG} no longer names {COMPOSE_RECEIVER}; update the e2e test")
    config: dict[str, Any] = yaml.safe_load(text.replace(COMPOSE_RECEIVER, receiver_url))

    def shorten(route: dict[str, Any]) -> None:
        if "group_wait" in route:
            route["group_wait"] = group_wait
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config
