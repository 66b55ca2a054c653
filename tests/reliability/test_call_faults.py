"""Provider faults through the real SDKs with the whole cost path on (instrumentation, budget processor,
guard with rate limits and budget reservations): 5xx storms the SDK retries, client timeouts, streams
cut mid-way. Each app call must be priced once, for the tokens actually billed, in every place that
counts money or tokens: the span, the cost and token metrics, the budget ledger and the rate limiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_llmcost.budget import Budget, BudgetEngine
from otel_llmcost.budget.processor import enable_budgets
from otel_llmcost.guard import install_guard
from otel_llmcost.ratelimit import RateLimiter, Tier
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply
from tests.conftest import llmcost_spans, metric_points

PROMPT = "Tell me about the refund policy for items bought on sale in a store."
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
TIERS = {"free": Tier("free", requests_per_minute=100_000, tokens_per_day=10_000_000)}
DAY = 10_000_000
RETRIES = 3
#: The clients' timeout: long enough for a loaded CI machine, short enough to keep the stall tests quick.
TIMEOUT = 1.0
STALL = 2.0  # a scripted stall: longer than TIMEOUT


@dataclass
class Rig:
    """The cost path under test and the three SDK clients pointed at the loopback server."""

    server: LoopbackLLMServer
    engine: BudgetEngine
    limiter: RateLimiter
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    clients: dict[str, Any]

    def call(self, provider: str, stream: bool) -> Any:
        """One app call; for a stream, read to the end (what a cut raises is the app's to see)."""
        model, client = MODELS[provider], self.clients[provider]
        if provider == "openai":
            messages = [{"role": "user", "content": PROMPT}]
            result = client.chat.completions.create(model=model, messages=messages, stream=stream)
        elif provider == "anthropic":
            messages = [{"role": "user", "content": PROMPT}]
            result = client.messages.create(model=model, max_tokens=256, messages=messages, stream=stream)
        elif stream:
            result = client.models.generate_content_stream(model=model, contents=PROMPT)
        else:
            result = client.models.generate_content(model=model, contents=PROMPT)
        if stream:
            return list(result)
        return result

    def ledger_spend(self) -> tuple[Decimal, Decimal]:
        state = self.engine.state()[0]
        return state.spend, state.reserved

    def tokens_charged(self) -> float:
        return DAY - self.limiter.remaining("user:anonymous", "free")["tokens_per_day"]


@pytest.fixture
def rig(instrumented: Telemetry, llm_server: LoopbackLLMServer, span_exporter: InMemorySpanExporter,
        metric_reader: InMemoryMetricReader, meter_provider: Any) -> Iterator[Rig]:
    """Instrumentation + budget processor + guard (rate limit, budget reservations), SDKs retrying fast."""
    engine = BudgetEngine([Budget("monthly", Decimal("1000"))], "memory://", sinks=[])
    enable_budgets(engine=engine, telemetry=instrumented, meter_provider=meter_provider, otel_alerts=False)
    limiter = RateLimiter(TIERS, "memory://", clock=lambda: 1000.0)  # frozen time: no refill to blur the count
    install_guard(telemetry=instrumented, limiter=limiter, budget=engine)
    url = llm_server
    retry = gtypes.HttpRetryOptions(attempts=RETRIES + 1, initial_delay=0.01, max_delay=0.02, jitter=0)
    clients = {
        "openai": openai.OpenAI(base_url=url.openai_base_url, api_key="k", max_retries=RETRIES, timeout=TIMEOUT),
        "anthropic": anthropic.Anthropic(base_url=url.anthropic_base_url, api_key="k", max_retries=RETRIES,
                                         timeout=TIMEOUT, open_telemetry=False),
        "google": genai.Client(api_key="k", http_options=gtypes.HttpOptions(
            base_url=url.google_base_url, timeout=int(TIMEOUT * 1000), retry_options=retry)),
    }
    yield Rig(llm_server, engine, limiter, span_exporter, metric_reader, clients)
    clients["openai"].close()
    clients["anthropic"].close()
    clients["google"].close()
    engine.close()


def check_priced_once(rig: Rig, calls: int) -> Decimal:
    """One span per app call; span costs = cost metric = ledger spend; tokens on spans = tokens metered."""
    spans = llmcost_spans(rig.spans)
    assert len(spans) == calls
    span_cost = sum((Decimal(str(s.attributes.get("gen_ai.usage.cost", 0))) for s in spans), Decimal(0))
    metric_cost = sum(p.value for p in metric_points(rig.metrics, "llmcost.cost"))
    assert metric_cost == pytest.approx(float(span_cost), rel=1e-9, abs=1e-12)
    spend, reserved = rig.ledger_spend()
    assert float(spend) == pytest.approx(float(span_cost), rel=1e-6, abs=1e-9)
    assert reserved == 0
    tokens = sum(s.attributes.get("gen_ai.usage.input_tokens", 0) + s.attributes.get("gen_ai.usage.output_tokens", 0)
                 for s in spans)
    usage_points = metric_points(rig.metrics, "gen_ai.client.token.usage")
    assert sum(p.sum for p in usage_points) == tokens
    assert rig.tokens_charged() == pytest.approx(tokens, abs=1)
    return span_cost


def requests_to(server: LoopbackLLMServer, provider: str) -> int:
    return sum(1 for r in server.requests if r.provider == provider)


PROVIDERS = pytest.mark.parametrize("provider", list(MODELS))


@PROVIDERS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.reliability(
    "provider 5xx storm (500, 503, 529/502) that the SDK rides out with its own retries",
    "one span, priced once for the answer that arrived: span = cost metric = budget ledger = rate-limit tokens",
)
def test_5xx_storm_with_sdk_retries_is_priced_once(rig: Rig, provider: str, stream: bool,
                                                   record_number: Any) -> None:
    """Three 5xx answers then a success: the SDK retries inside our span; the call counts once everywhere."""
    overload = 529 if provider == "anthropic" else 502
    for status in (500, 503, overload):
        rig.server.script(Reply(provider=provider, status=status))
    rig.call(provider, stream)
    assert requests_to(rig.server, provider) == RETRIES + 1
    cost = check_priced_once(rig, 1)
    assert cost > 0
    record_number("HTTP attempts per app call", RETRIES + 1)


@PROVIDERS
@pytest.mark.reliability(
    "provider 5xx storm longer than the SDK's retries",
    "the SDK's own exception reaches the app unchanged; span ERROR, $0 in metrics and ledger, hold and "
    "rate-limit reservation given back",
)
def test_5xx_storm_exhausting_retries_costs_nothing_and_releases_holds(rig: Rig, provider: str) -> None:
    """All attempts fail: the app sees the SDK's error, nothing is priced, every reservation is returned."""
    rig.server.script(Reply(provider=provider, status=503, times=RETRIES + 1))
    with pytest.raises(Exception) as caught:  # noqa: B017 - the SDK's own class is checked below
        rig.call(provider, stream=False)
    assert type(caught.value).__module__.split(".")[0] in ("openai", "anthropic", "google")
    (span,) = llmcost_spans(rig.spans)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == type(caught.value).__qualname__
    assert "gen_ai.usage.cost" not in span.attributes
    assert metric_points(rig.metrics, "llmcost.cost") == []
    assert rig.ledger_spend() == (0, 0)
    assert rig.tokens_charged() == 0


@PROVIDERS
@pytest.mark.reliability(
    "client timeout on the first attempt (server stalls), success on the SDK's retry",
    "the app gets the answer; one span priced once for the answer received",
)
def test_client_timeout_then_retry_is_priced_once(rig: Rig, provider: str) -> None:
    """A stalled first attempt times out at the client, the retry succeeds: one priced call, not two."""
    rig.server.script(Reply(provider=provider, delay=STALL))
    rig.call(provider, stream=False)
    assert requests_to(rig.server, provider) >= 2
    assert check_priced_once(rig, 1) > 0


@PROVIDERS
@pytest.mark.reliability(
    "stream cut mid-way by the server (FIN mid-body)",
    "the SDK's error reaches the app; span ERROR + incomplete with the tokens seen, priced once in metrics, "
    "ledger and rate limiter",
)
def test_stream_cut_mid_way_is_priced_once_for_what_was_seen(rig: Rig, provider: str,
                                                           record_number: Any) -> None:
    """A cut stream raises in the app; what was billed before the cut is counted exactly once."""
    rig.server.script(Reply(provider=provider, text="alpha beta gamma delta epsilon zeta eta theta",
                            cut_after_chunks=3))
    with pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises must reach the app
        rig.call(provider, stream=True)
    assert requests_to(rig.server, provider) == 1  # a stream already started is not retried
    (span,) = llmcost_spans(rig.spans)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["llmcost.stream.incomplete"] is True
    check_priced_once(rig, 1)
    record_number(f"{provider}: tokens priced for the cut stream", span.attributes.get("gen_ai.usage.output_tokens"))


@pytest.mark.reliability(
    "mixed storm: 30 calls across 3 SDKs, plain and streamed, with scripted 5xx, stalls and cuts",
    "calls priced = calls answered; totals equal across span, metric, ledger and rate limiter",
)
def test_mixed_storm_totals_agree(rig: Rig, record_number: Any) -> None:
    """Faults interleaved with good calls: every total that counts money or tokens agrees with the spans."""
    outcomes: list[str] = []
    faults: list[Callable[[str], None]] = [
        lambda p: rig.server.script(Reply(provider=p, status=500)),
        lambda p: rig.server.script(Reply(provider=p, status=503, times=RETRIES + 1)),
        lambda p: rig.server.script(Reply(provider=p, cut_after_chunks=2)),
        lambda p: None,
        lambda p: rig.server.script(Reply(provider=p, delay=STALL)),
    ]
    calls = 0
    for i in range(30):
        provider = list(MODELS)[i % 3]
        fault = faults[i % len(faults)]
        if fault is faults[4] and i % 2:
            fault = faults[3]  # keep stalls few: each costs the client timeout
        fault(provider)
        try:
            rig.call(provider, stream=bool(i % 2))
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - the app's view: any SDK error
            outcomes.append(type(exc).__name__)
        calls += 1
        rig.server.reset()
    total = check_priced_once(rig, calls)
    record_number("calls", calls)
    record_number("calls that raised in the app", sum(o != "ok" for o in outcomes))
    record_number("USD priced", str(total.quantize(Decimal("0.000001"))))
