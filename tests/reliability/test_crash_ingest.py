"""`kill -9` of the processor service in the middle of ingest, behind the real Collector that retries.

An instrumented app (real OpenAI SDK, the SDK's OTLP metric exporter, cumulative temporality) sends its
cost metrics to our Collector build, which forwards them to `otel-llmcost processor` with its retry queue.
The processor is SIGKILLed while calls and exports go on, and restarted on the same port and ledger file.
When the Collector has delivered everything, the processor's budget spend must equal the app's own cost
total: what the processor acknowledged before the crash is all there, and nothing the Collector resent
is counted twice.

tests/service/test_crash.py checks the same exactly-once rule with hand-made resends and no Collector.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

import otel_llmcost
from otel_llmcost.testing.llm_server import LoopbackLLMServer
from otel_llmcost.testing.processes import CollectorProcess, LLMCostProcessor, free_port
from tests.conftest import metric_points

from .helpers import wait_for

CONFIG = {
    "ledger": "sqlite:///ledger.db",
    "forecast": False,
    "alerts": {"log": False},
    "budgets": [{"name": "total", "amount": 1_000_000}],
}
SPEND = re.compile(r'llmcost_budget_spend_USD\{llmcost_budget_name="total",llmcost_budget_scope="global"\} (\S+)')


def processor_spend(url: str) -> float | None:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            found = SPEND.search(response.read().decode())
    except OSError:
        return None
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LLMCostProcessor, CollectorProcess]]:
    processor = LLMCostProcessor(CONFIG, workdir=tmp_path / "processor")
    processor.start()
    collector = CollectorProcess(workdir=tmp_path / "collector", env={
        "LLMCOST_PROCESSOR_ENDPOINT": processor.url,
        "LLMCOST_TRACES_ENDPOINT": f"127.0.0.1:{free_port()}",  # no trace backend: traces are not used here
    })
    collector.start()
    yield processor, collector
    collector.close()
    processor.close()


@pytest.mark.reliability(
    "kill -9 of the processor service during ingest, restart on the same port and ledger, with the real "
    "Collector (retry queue) between the app and the processor",
    "after the Collector's retries the processor's spend equals the app's cost total: acknowledged spend "
    "kept, nothing resent counted twice",
    covered_by=["tests/service/test_crash.py::test_kill_9_mid_ingest_then_resend_everything_counts_exactly_once"],
)
def test_kill_9_of_the_processor_behind_the_collector(stack: tuple[LLMCostProcessor, CollectorProcess],
                                                      llm_server: LoopbackLLMServer, record_number: Any) -> None:
    """SIGKILL mid-ingest, restart: once the Collector caught up, processor spend == the app's cost total."""
    processor, collector = stack
    local = InMemoryMetricReader()
    exporter = OTLPMetricExporter(endpoint=f"{collector.otlp_http_url}/v1/metrics", timeout=2)
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=250),
                                             local],
                             resource=Resource.create({"service.name": "crash-app", "service.instance.id": "i-1"}))
    otel_llmcost.instrument(meter_provider=provider)
    stop = threading.Event()
    calls = [0]

    def traffic() -> None:
        with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
            while not stop.is_set():
                user = f"u{calls[0] % 5}"
                with otel_llmcost.attributes(user_id=user, feature="crash-test"):
                    client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": f"question {calls[0]} " * 20}])
                calls[0] += 1
                time.sleep(0.005)

    worker = threading.Thread(target=traffic, daemon=True)
    try:
        worker.start()
        assert wait_for(lambda: (processor_spend(processor.url) or 0) > 0, timeout=30), "nothing reached the processor"
        time.sleep(1.0)
        acknowledged = processor_spend(processor.url) or 0.0
        processor.kill()  # SIGKILL, mid-ingest: exports keep coming to the Collector
        time.sleep(2.0)
        processor.start()  # same port, same ledger file
        after_restart = processor_spend(processor.url) or 0.0
        time.sleep(1.5)
        stop.set()
        worker.join(timeout=30)
        provider.force_flush()
        total = sum(p.value for p in metric_points(local, "llmcost.cost"))
        caught_up = wait_for(lambda: abs((processor_spend(processor.url) or 0.0) - total) < 1e-6, timeout=60,
                             interval=0.25)
        final = processor_spend(processor.url) or 0.0
    finally:
        stop.set()
        otel_llmcost.uninstrument()
        provider.shutdown()
    record_number("app calls", calls[0])
    record_number("spend acknowledged before the kill (USD)", round(acknowledged, 9))
    record_number("spend right after the restart (USD)", round(after_restart, 9))
    record_number("app cost total / processor spend (USD)", f"{total:.9f} / {final:.9f}")
    assert after_restart >= acknowledged, "acknowledged spend was lost in the crash"
    assert caught_up, f"processor spend {final} never reached the app's total {total} (over: counted twice)"
