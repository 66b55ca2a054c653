"""A real redis-server killed (SIGKILL), restarted on the same port, or frozen (SIGSTOP) under the rate
limiter, the response caches and the budget ledger: each follows its fail-open / fail-closed policy,
adds bounded latency, recovers by itself, and the ledger keeps the spend it acknowledged."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from otel_llmcost.budget import Budget, BudgetEngine
from otel_llmcost.budget.ledger.redis import RedisLedger
from otel_llmcost.cache import ExactCache, SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import ThresholdPolicy
from otel_llmcost.guard import install_guard
from otel_llmcost.ratelimit import DEFAULT_TIERS, RateLimiter, RateLimitStorageError
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer
from tests.conftest import llmcost_spans

from .helpers import ManagedRedis

D = Decimal
MSGS = [{"role": "user", "content": "How do I reset my password?"}]
#: A hang detector, not a latency target: the configured socket timeouts are well under a second, and a
#: loaded 2-core machine needs slack. The measured figure goes to RELIABILITY.md.
HANG = 10.0


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


@pytest.fixture
def oai(llm_server: LoopbackLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        yield client


# -- rate limits -----------------------------------------------------------------------------------------
@pytest.mark.reliability(
    "Redis frozen (SIGSTOP) under the rate limiter, then thawed",
    "fail-open: calls pass unreserved within the socket timeout; limits enforced again after SIGCONT "
    "on the buckets Redis kept",
    covered_by=["tests/ratelimit/test_storage_failures.py::test_fail_open_allows_warns_once_and_recovers"],
)
def test_rate_limiter_on_a_frozen_redis_fails_open_then_recovers(redis_proc: ManagedRedis, record_number: Any) -> None:
    """A frozen Redis costs each call at most a socket timeout; after a thaw the buckets are enforced as before."""
    limiter = RateLimiter(DEFAULT_TIERS, redis_proc.url, storage_retry_interval=0.2,
                          storage_options={"key_prefix": uuid.uuid4().hex})
    for _ in range(20):
        assert limiter.acquire("u", "pro").reserved  # pro: 60 requests a minute
    worst = 0.0
    with redis_proc.paused():
        for _ in range(6):
            permit, took = timed(limiter.acquire, "u", "pro")
            assert not permit.reserved
            worst = max(worst, took)
            time.sleep(0.05)
    record_number("worst added latency while frozen (s)", worst)
    assert worst < HANG
    thawed = time.monotonic()
    granted = 0
    while granted < 2 and time.monotonic() - thawed < HANG:  # the outage ends at the first storage answer
        granted += limiter.acquire("u", "pro").reserved
        time.sleep(0.01)
    assert granted == 2, "the limiter never used the thawed Redis again"
    left = limiter.remaining("u", "pro")["requests_per_minute"]
    refill = (time.monotonic() - thawed + 10) * 60 / 60  # generous: every second since the freeze began
    # Redis kept the buckets through the freeze (not reset to full) and nothing was overdrawn. Commands that
    # timed out while frozen may still run after the thaw and charge the key (documented: errs on refusing).
    assert left <= 60 - 22 + refill
    record_number("requests charged by timed-out commands run after the thaw", round(max(0.0, 60 - 22 - left), 1))
    limiter.close()


@pytest.mark.reliability(
    "Redis frozen (SIGSTOP) under a fail-closed rate limiter",
    "fail-closed: RateLimitStorageError within the socket timeout, calls pass again after SIGCONT",
    covered_by=["tests/ratelimit/test_storage_failures.py::test_fail_closed_raises_and_recovers"],
)
def test_fail_closed_rate_limiter_refuses_while_frozen(redis_proc: ManagedRedis, record_number: Any) -> None:
    """on_storage_error='closed' refuses quickly while Redis is frozen and serves again after the thaw."""
    limiter = RateLimiter(DEFAULT_TIERS, redis_proc.url, on_storage_error="closed", storage_retry_interval=0,
                          storage_options={"key_prefix": uuid.uuid4().hex})
    assert limiter.acquire("u", "pro").reserved
    with redis_proc.paused():
        started = time.monotonic()
        with pytest.raises(RateLimitStorageError):
            limiter.acquire("u", "pro")
        took = time.monotonic() - started
    record_number("time to refuse while frozen (s)", took)
    assert took < HANG
    assert limiter.acquire("u", "pro").reserved
    limiter.close()


# -- response caches ---------------------------------------------------------------------------------
@pytest.mark.reliability(
    "Redis frozen (SIGSTOP), then killed and restarted empty, under the exact and semantic caches",
    "every SDK call answered by the provider (status miss, then bypass while the storage is left alone), "
    "nothing raised, one socket timeout per retry interval, not per operation; hits again after recovery",
    covered_by=["tests/cache/test_callpath.py::test_redis_backed_cache_and_redis_killed_mid_test",
                "tests/cache/test_outage.py::test_frozen_redis_is_asked_once_per_interval_not_four_times_per_call"],
)
def test_response_cache_on_a_frozen_then_restarted_redis(
    instrumented: Telemetry, redis_proc: ManagedRedis, oai: openai.OpenAI, llm_server: LoopbackLLMServer,
    span_exporter: Any, record_number: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """A frozen cache Redis makes calls slower by a bounded amount, never fails them; a restart heals it."""
    prefix = uuid.uuid4().hex
    exact = ExactCache(f"{redis_proc.url}?prefix={prefix}-x")
    semantic = SemanticCache(HashingEmbedder(), ThresholdPolicy(0.8), f"{redis_proc.url}?prefix={prefix}-s")
    now = [0.0]  # the retry interval's clock, moved by hand: the outage ends when the test says
    install_guard(cache=ResponseCache(exact, semantic, clock=lambda: now[0]))
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0)
    _, baseline = timed(oai.chat.completions.create, model="gpt-4o-mini", messages=MSGS, temperature=0)
    worst = 0.0
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.cache.callpath"), redis_proc.paused():
        for _ in range(5):
            answer, took = timed(oai.chat.completions.create, model="gpt-4o-mini", messages=MSGS, temperature=0)
            assert answer.choices[0].message.content == first.choices[0].message.content
            worst = max(worst, took)
    record_number("worst call latency with the cache Redis frozen (s)", worst)
    record_number("call latency on a cache hit (s)", baseline)
    assert worst < HANG
    redis_proc.kill()
    answer = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0)
    assert answer.choices[0].message.content == first.choices[0].message.content
    redis_proc.start()
    now[0] += 60  # past the retry interval: the next call probes the restarted server
    oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0)
    oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0)
    statuses = [s.attributes.get("llmcost.cache.status") for s in llmcost_spans(span_exporter)]
    assert statuses == ["miss", "exact_hit", "miss", "bypass", "bypass", "bypass", "bypass", "bypass", "miss",
                        "exact_hit"]
    assert sum(1 for r in caplog.records if "response cache failed" in r.getMessage()) == 1
    exact.close()
    semantic.close()


# -- budget ledger ----------------------------------------------------------------------------------------
def _engine(url: str, prefix: str, timeout: float = 0.5) -> BudgetEngine:
    ledger = RedisLedger.from_url(url, prefix=prefix, socket_timeout=timeout, socket_connect_timeout=timeout)
    return BudgetEngine([Budget("monthly", D("100"))], ledger, sinks=[])


@pytest.mark.reliability(
    "kill -9 of a durable Redis (appendfsync always) under the budget ledger, restart on the same port",
    "every settled cost is still there after the restart, a hold taken before the crash settles once",
)
def test_ledger_keeps_settled_spend_through_kill_9(durable_redis: ManagedRedis, record_number: Any) -> None:
    """Spend acknowledged by a durable Redis survives SIGKILL; a call in flight across the crash counts once."""
    prefix = uuid.uuid4().hex
    engine = _engine(durable_redis.url, prefix)
    settled = D(0)
    for i in range(50):
        ticket = engine.reserve(D("0.05"), {})
        actual = D(i + 1) / 1000
        engine.settle(ticket, actual)
        settled += actual
    in_flight = engine.reserve(D("0.05"), {})
    durable_redis.kill()
    durable_redis.start()
    engine.settle(in_flight, D("0.004"))  # the client reconnects by itself
    state = engine.state()[0]
    record_number("settled spend before the crash (USD)", str(settled))
    record_number("spend after restart (USD)", str(state.spend))
    assert state.spend == settled + D("0.004")
    assert state.reserved == 0
    assert engine.stats.errors == 0
    engine.close()
    engine.ledger.close()


@pytest.mark.reliability(
    "Redis killed under the budget ledger while calls go on, then restarted",
    "fail-open: reserve lets calls through and nothing is raised; errors counted; limits apply again "
    "after the restart",
)
def test_ledger_outage_fails_open_and_recovers(durable_redis: ManagedRedis, caplog: pytest.LogCaptureFixture) -> None:
    """With the ledger's Redis gone, reserve and settle never raise (errors counted); after a restart they work."""
    engine = _engine(durable_redis.url, uuid.uuid4().hex)
    engine.settle(engine.reserve(D("1"), {}), D("1"))
    durable_redis.kill()
    with caplog.at_level(logging.CRITICAL, logger="otel_llmcost.budget.engine"):
        for _ in range(5):
            ticket = engine.reserve(D("1"), {})  # fail open: the call goes ahead
            engine.settle(ticket, D("0.5"))
    assert engine.stats.errors == 10
    durable_redis.start()
    engine.settle(engine.reserve(D("1"), {}), D("1"))
    assert engine.state()[0].spend >= D("2")
    engine.close()
    engine.ledger.close()


@pytest.mark.reliability(
    "Redis killed while calls settle on the budget ledger, then restarted",
    "the cost of calls that ended during the outage is counted once the ledger is back",
)
def test_spend_settled_during_an_outage_is_counted_after_recovery(durable_redis: ManagedRedis,
                                                                   record_number: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Costs of calls that ended while the ledger was down are in the ledger once it is back."""
    engine = _engine(durable_redis.url, uuid.uuid4().hex)
    tickets = [engine.reserve(D("1"), {}) for _ in range(5)]
    durable_redis.kill()
    with caplog.at_level(logging.CRITICAL, logger="otel_llmcost.budget.engine"):
        for ticket in tickets:
            engine.settle(ticket, D("0.5"))
    durable_redis.start()
    engine.settle(engine.reserve(D("0.1"), {}), D("0.1"))  # the ledger answers again
    spend = engine.state()[0].spend
    record_number("spend of calls ended during the outage that reached the ledger (USD)", str(spend - D("0.1")))
    try:
        assert spend == D("2.6")
    finally:
        engine.close()
        engine.ledger.close()


@pytest.mark.reliability(
    "Redis frozen (SIGSTOP) while a call settles on the budget ledger, then thawed",
    "the settle call returns within the socket timeout and never raises; the cost is counted once, "
    "never twice",
)
def test_settle_on_a_frozen_ledger_never_counts_twice(durable_redis: ManagedRedis, record_number: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A settle that timed out on a frozen Redis is not applied a second time when the server thaws."""
    engine = _engine(durable_redis.url, uuid.uuid4().hex, timeout=0.3)
    ticket = engine.reserve(D("0.5"), {})
    with caplog.at_level(logging.CRITICAL, logger="otel_llmcost.budget.engine"), durable_redis.paused():
        _, took = timed(engine.settle, ticket, D("0.25"))
    record_number("settle time on a frozen ledger (s)", took)
    assert took < HANG
    time.sleep(0.2)  # let the thawed server run whatever it had buffered
    state = engine.state()[0]
    record_number("spend counted for one $0.25 call (USD)", str(state.spend))
    assert state.spend in (D("0"), D("0.25"))
    engine.close()
    engine.ledger.close()
