"""Exactly-once across `kill -9`: acknowledged spend survives, and resending everything counts nothing twice."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from .otlp_builders import DELTA, cost_request, get, post, span_request

ROOT = Path(__file__).resolve().parents[2]
S = 10**9
CONFIG = """
ledger: sqlite:///{db}
forecast: false
budgets:
  - {{name: total, amount: 1000000}}
alerts: {{log: false}}
processor:
  span_accounting: all
  max_future: 2h
"""


def start(config: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_LLMCOST_PROCESSOR_TOKEN": "t"}
    process = subprocess.Popen([sys.executable, "-m", "otel_llmcost.cli", "processor", "--config", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=str(config.parent))
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"the processor did not start: {line}{process.stdout.read()}")
    return process, match.group(1)


def spend(url: str) -> Decimal:
    status, body = get(f"{url}/metrics")
    assert status == 200
    found = re.search(r'llmcost_budget_spend_USD\{llmcost_budget_name="total",llmcost_budget_scope="global"\} (\S+)',
                      body.decode())
    return Decimal(found.group(1)) if found else Decimal(0)


def payloads(rng: random.Random) -> tuple[list[tuple[str, bytes]], Decimal, dict[int, Decimal]]:
    """Delta points, cumulative series and priced spans with a known exact total (whole nano-dollars)."""
    base = time.time_ns() + 3600 * S
    items: list[tuple[str, bytes]] = []
    counted: dict[int, Decimal] = {}  # payload index → spend it adds alone (delta and spans only)
    total = Decimal(0)
    for i in range(120):  # delta points, each its own interval
        units = rng.randrange(1, 10**7)
        request = cost_request([({"llmcost.feature": f"f{i % 7}"}, base + i * S, base + (i + 1) * S, units / 1e9)],
                               temporality=DELTA, resource={"service.name": "d", "service.instance.id": str(i % 3)})
        counted[len(items)] = Decimal(units).scaleb(-9)
        items.append(("/v1/metrics", request.SerializeToString()))
        total += Decimal(units).scaleb(-9)
    for series in range(6):  # cumulative series, 20 exports each
        units = 0
        for step in range(20):
            units += rng.randrange(0, 10**7)
            request = cost_request([({"llmcost.feature": "cum"}, base, base + (step + 1) * 60 * S, units / 1e9)],
                                   resource={"service.name": "c", "service.instance.id": f"pod-{series}"})
            items.append(("/v1/metrics", request.SerializeToString()))
        total += Decimal(units).scaleb(-9)
    for _ in range(40):  # spans priced by their maker
        spans = []
        for _span in range(25):
            units = rng.randrange(1, 10**6)
            spans.append({"attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
                                         "gen_ai.usage.cost": units / 1e9}})
            total += Decimal(units).scaleb(-9)
        counted[len(items)] = sum((Decimal(round(s["attributes"]["gen_ai.usage.cost"] * 1e9)).scaleb(-9)
                                   for s in spans), Decimal(0))
        items.append(("/v1/traces", span_request(spans).SerializeToString()))
    return items, total, counted


def test_kill_9_mid_ingest_then_resend_everything_counts_exactly_once(tmp_path: Path):
    """Acked spend survives kill -9; after a restart, resending every payload gives the exact total."""
    rng = random.Random(7)
    items, total, counted = payloads(rng)
    order = list(range(len(items)))
    rng.shuffle(order)
    config = tmp_path / "processor.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "ledger.db"), encoding="utf-8")
    process, url = start(config)
    acked: list[int] = []
    killed = threading.Event()

    def sender(indices: list[int]) -> None:
        for index in indices:
            if killed.is_set():
                return
            try:
                status, _, _ = post(url + items[index][0], items[index][1])
            except OSError:
                return
            if status == 200:
                acked.append(index)

    threads = [threading.Thread(target=sender, args=(order[k::3],)) for k in range(3)]
    try:
        for thread in threads:
            thread.start()
        while len(acked) < len(items) // 3:
            assert process.poll() is None
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)  # mid-ingest: the senders are still posting
        killed.set()
        process.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(items) // 3 <= len(acked) < len(items)

    process, url = start(config)
    try:
        acked_alone = sum((counted[i] for i in acked if i in counted), Decimal(0))
        assert spend(url) >= acked_alone  # nothing acknowledged was lost
        rng.shuffle(order)
        for index in order:
            assert post(url + items[index][0], items[index][1])[0] == 200
        assert spend(url) == total
        for index in order[:50]:  # and once more, for good measure
            post(url + items[index][0], items[index][1])
        assert spend(url) == total
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
