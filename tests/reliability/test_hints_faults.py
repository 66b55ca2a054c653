"""Budget hints from the real processor service (`otel-llmcost processor`, a child process) while it is
frozen (SIGSTOP), killed with SIGKILL and restarted: the app's guarded calls keep the last known budget
state — throttled calls still go to the substitute, stopped users are still refused — without waiting
on the service, and pick up the service's state again when it is back (its ledger survived the kill).

tests/test_hints.py covers a service that is stopped cleanly and the max_age fallback to the default.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import otel_llmcost
from otel_llmcost.budget import BudgetExceededError, Level
from otel_llmcost.guard import install_guard
from otel_llmcost.hints import HintsClient
from otel_llmcost.testing.llm_server import LoopbackLLMServer
from otel_llmcost.testing.processes import LLMCostProcessor

from .helpers import wait_for

TOKEN = "hints-token-0123456789"
CONFIG = {
    "ledger": "sqlite:///ledger.db",
    "forecast": False,
    "alerts": {"log": False},
    "budgets": [{"name": "per-user", "amount": 1, "window": "day", "scope": {"by": "user"}}],
    "routing": {"substitutes": {"gpt-5.4": "gpt-5.4-mini"}},
}


def push_spend(url: str, user: str, usd: float) -> None:
    """One delta `llmcost.cost` point for `user`, as an app's exporter would send it."""
    request = ExportMetricsServiceRequest()
    sm = request.resource_metrics.add().scope_metrics.add()
    sm.scope.name = "otel_llmcost"
    metric = sm.metrics.add(name="llmcost.cost", unit="USD")
    metric.sum.aggregation_temporality = 1  # delta
    metric.sum.is_monotonic = True
    now = time.time_ns()
    point = metric.sum.data_points.add(start_time_unix_nano=now - 1000, time_unix_nano=now, as_double=usd)
    point.attributes.add(key="llmcost.user.id", value=AnyValue(string_value=user))
    sent = urllib.request.Request(f"{url}/v1/metrics", data=request.SerializeToString(), method="POST",
                                  headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(sent, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[LLMCostProcessor]:
    running = LLMCostProcessor(CONFIG, workdir=tmp_path / "processor", token=TOKEN)
    running.start()
    yield running
    if running.process is not None:
        os.kill(running.process.pid, signal.SIGCONT)
    running.close()


def call(client: openai.OpenAI, user: str) -> tuple[str, float]:
    """One guarded call as `user`: the model the provider was asked for, or the refusal; and its latency."""
    started = time.perf_counter()
    try:
        with otel_llmcost.attributes(user_id=user):
            client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hello"}])
        outcome = "served"
    except BudgetExceededError:
        outcome = "refused"
    return outcome, time.perf_counter() - started


@pytest.mark.reliability(
    "the processor service frozen (SIGSTOP), then killed with SIGKILL and restarted, under an app that takes "
    "its budget levels from /v1/hints",
    "calls never wait on the service (bounded latency); the last known levels keep applying (throttled "
    "calls rerouted, stopped users refused); after the restart the ledger and hints are back",
    covered_by=["tests/test_hints.py::test_service_down_keeps_the_last_hints_then_the_default_past_max_age"],
)
def test_hints_fall_back_to_the_last_known_state(processor: LLMCostProcessor, llm_server: LoopbackLLMServer,
                                                 record_number: Any) -> None:
    """Frozen or killed, the service's last hints keep applying; the restarted service resumes them."""
    push_spend(processor.url, "gus", 0.90)  # throttle
    push_spend(processor.url, "hal", 0.99)  # stop
    hints = HintsClient(processor.url, token=TOKEN, interval=0.1, timeout=0.3)
    otel_llmcost.instrument()
    try:
        install_guard(hints=hints)
        assert wait_for(lambda: hints.hints({"llmcost.user.id": "hal"}).level == Level.STOP, timeout=20)
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
        worst = 0.0
        for phase in ("frozen", "killed"):
            if phase == "frozen":
                os.kill(processor.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            else:
                os.kill(processor.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
                processor.kill()
            failures = hints.failures
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                llm_server.reset()
                gus, took_gus = call(client, "gus")
                hal, took_hal = call(client, "hal")
                worst = max(worst, took_gus, took_hal)
                assert (gus, hal) == ("served", "refused")
                assert [r.json["model"] for r in llm_server.requests] == ["gpt-5.4-mini"]
            assert wait_for(lambda f=failures: hints.failures > f, timeout=5), "the poller never noticed"
        record_number("worst guarded call latency while the service was frozen or dead (ms)", round(worst * 1000, 1))
        record_number("failed polls", hints.failures)
        assert worst < 1.0
        processor.start()  # same port, same ledger file
        push_spend(processor.url, "ivy", 0.97)
        assert wait_for(lambda: hints.hints({"llmcost.user.id": "ivy"}).level == Level.STOP, timeout=20)
        assert hints.hints({"llmcost.user.id": "hal"}).level == Level.STOP  # the ledger survived SIGKILL
        assert call(client, "ivy")[0] == "refused"
        client.close()
    finally:
        hints.close()
        otel_llmcost.uninstrument()

