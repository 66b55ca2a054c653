"""The hints client: polls the processor service, answers locally, falls back when it is down;
and the cost guard takes its budget levels from it."""

from __future__ import annotations

import logging
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import otel_llmcost
from otel_llmcost.budget import BudgetEngine, BudgetExceededError, Hints, Level, load_budget_config
from otel_llmcost.guard import install_guard
from otel_llmcost.hints import HintsClient
from otel_llmcost.service import ProcessorConfig, ProcessorService, open_store
from tests.service.otlp_builders import T0, cost_request, post

TOKEN = "hints-token-42"
CONFIG = """
forecast: false
alerts: {log: false}
budgets:
  - {name: team, amount: 10, scope: {tenant: acme}}
  - {name: per-user, amount: 1, window: day, scope: {by: user}}
routing:
  substitutes: {gpt-5.4: gpt-5.4-mini}
"""


class Processor:
    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "budgets.yaml"
        path.write_text(textwrap.dedent(CONFIG), encoding="utf-8")
        self.store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}", retention=86400.0)
        self.engine = BudgetEngine(load_budget_config(path), self.store, [])
        self.service = ProcessorService(self.engine, self.store, ProcessorConfig(port=0, max_future=7200.0), token=TOKEN)
        self._context = self.service.serve()
        server = self._context.__enter__()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def spend(self, attributes: dict[str, str], usd: float, at: int = 1) -> None:
        request = cost_request([(attributes, T0, T0 + at, usd)], resource={"service.instance.id": str(attributes)})
        assert post(f"{self.url}/v1/metrics", request.SerializeToString())[0] == 200

    def stop(self) -> None:
        self._context.__exit__(None, None, None)
        self.engine.close()
        self.store.close()


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[Processor]:
    running = Processor(tmp_path)
    yield running
    running.stop()


def test_client_answers_like_the_engine_for_any_call(processor):
    """Per-call hints come from the polled listing: tightest matching budget, substitutes from throttle."""
    processor.spend({"llmcost.user.id": "ann", "llmcost.tenant.id": "acme"}, 0.9)
    processor.spend({"llmcost.user.id": "bo", "llmcost.tenant.id": "acme"}, 0.96)
    with HintsClient(processor.url, token=TOKEN, start=False) as client:
        assert client.refresh()
        for user in ("ann", "bo", "cy"):
            attributes = {"llmcost.user.id": user, "llmcost.tenant.id": "acme"}
            assert client.hints(attributes) == processor.engine.hints(attributes)
        ann = client.hints({"llmcost.user.id": "ann"})
        assert (ann.level, ann.budget, ann.substitutes) == (Level.THROTTLE, "per-user", {"gpt-5.4": "gpt-5.4-mini"})
        assert client.hints({"llmcost.user.id": "bo"}).cache_only
        assert client.hints({"llmcost.user.id": "cy"}).level == Level.OK


def test_service_down_keeps_the_last_hints_then_the_default_past_max_age(tmp_path, caplog):
    """When polling fails the last answer stays in use; past max_age, or before any answer, the default."""
    running = Processor(tmp_path)
    running.spend({"llmcost.user.id": "dee"}, 0.9)
    default = Hints(level=Level.WARN)
    client = HintsClient(running.url, token=TOKEN, start=False, default=default, interval=1, max_age=3600)
    assert client.refresh()
    running.stop()
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.hints"):
        assert not client.refresh()
        assert not client.refresh()
    assert client.hints({"llmcost.user.id": "dee"}).level == Level.THROTTLE  # last known
    assert [r.getMessage() for r in caplog.records if "cannot poll" in r.getMessage()][0].endswith(
        "using the last known hints")
    assert sum("cannot poll" in r.getMessage() for r in caplog.records) == 1  # once per outage
    client.max_age = 0.0  # as if an hour had passed without an answer
    assert client.hints({"llmcost.user.id": "dee"}) is default
    never = HintsClient(running.url, token=TOKEN, start=False, default=default)
    assert not never.refresh() and never.hints({"llmcost.user.id": "dee"}) is default


def test_wrong_token_is_reported_and_the_default_applies(processor):
    """A refused poll (401) never raises; the reason names the token."""
    processor.spend({"llmcost.user.id": "eli"}, 0.99)
    client = HintsClient(processor.url, token="wrong", start=False)
    assert not client.refresh()
    assert "401" in (client.last_error or "") and "token" in (client.last_error or "")
    assert client.hints({"llmcost.user.id": "eli"}).level == Level.OK


def test_background_polling_picks_up_new_spend(processor):
    """The polling thread refreshes the cached answer on its own."""
    with HintsClient(processor.url, token=TOKEN, interval=0.05) as client:
        deadline = time.monotonic() + 30
        while client.age is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.hints({"llmcost.user.id": "fay"}).level == Level.OK  # first answer: no spend yet
        processor.spend({"llmcost.user.id": "fay"}, 0.97)
        while client.hints({"llmcost.user.id": "fay"}).level != Level.STOP and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.hints({"llmcost.user.id": "fay"}).level == Level.STOP


def test_guard_throttles_and_stops_calls_by_the_services_hints(processor, llm_server):
    """With hints from the service, the guard sends throttled calls to the substitute and refuses at stop."""
    processor.spend({"llmcost.user.id": "gus"}, 0.9)
    processor.spend({"llmcost.user.id": "hal"}, 0.99)
    client = HintsClient(processor.url, token=TOKEN, start=False)
    assert client.refresh()
    otel_llmcost.instrument()
    try:
        install_guard(hints=client)
        sdk = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        with otel_llmcost.attributes(user_id="gus"):
            sdk.chat.completions.create(model="gpt-5.4", messages=messages)
        with otel_llmcost.attributes(user_id="ivy"):
            sdk.chat.completions.create(model="gpt-5.4", messages=messages)
        assert [r.json["model"] for r in llm_server.requests] == ["gpt-5.4-mini", "gpt-5.4"]
        with otel_llmcost.attributes(user_id="hal"), pytest.raises(BudgetExceededError) as refused:
            sdk.chat.completions.create(model="gpt-5.4", messages=messages)
        assert (refused.value.budget, refused.value.scope_key) == ("per-user", "user=hal")
        assert str(refused.value.spend) == "0.99"
        assert len(llm_server.requests) == 2  # the refused call never reached the provider
    finally:
        otel_llmcost.uninstrument()
