"""A cache storage in an outage (a real redis-server frozen with SIGSTOP, or killed and restarted on the
same port) is left alone for the retry interval: the Redis operations attempted are counted, not timed;
the calls get the provider's answer through the real OpenAI SDK; hits come back by themselves."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from otel_llmcost.budget.errors import ConfigError
from otel_llmcost.cache import CallableEmbedder, ExactCache, HashingEmbedder, SemanticCache, ThresholdPolicy
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.outage import Outage
from otel_llmcost.cache.storage import CacheStorage, open_storage
from otel_llmcost.guard import install_guard
from otel_llmcost.setup import configure
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer
from otel_llmcost.testing.processes import RedisServer
from tests.cache.conftest import FakeClock
from tests.conftest import llmcost_spans, metric_points

GPT = "gpt-4o-mini"
LOG = "otel_llmcost.cache.callpath"
#: The retry interval under test; the fake clock moves past it by hand, so no test waits for it.
WAIT = 5.0


class CountingStorage:
    """A real storage that counts the operations asked of it (the Redis round trips attempted)."""

    _OPERATIONS = frozenset({"get", "set", "delete", "add", "entry", "remove", "fetch_vectors"})

    def __init__(self, inner: CacheStorage) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name not in self._OPERATIONS:
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
            return value(*args, **kwargs)

        return counted

    @property
    def attempted(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def __len__(self) -> int:
        return len(self.inner)


class Caches:
    """An exact and a semantic cache on one Redis server (two prefixes), counting their operations."""

    def __init__(self, redis: RedisServer, clock: FakeClock, **options: Any) -> None:
        prefix = uuid.uuid4().hex
        # A short socket timeout keeps the frozen-server cases quick; the bound below is a count anyway.
        self.exact_storage = CountingStorage(open_storage(f"{redis.url}?socket_timeout=0.3&prefix={prefix}-x"))
        self.semantic_storage = CountingStorage(open_storage(f"{redis.url}?socket_timeout=0.3&prefix={prefix}-s"))
        self.exact = ExactCache(storage=self.exact_storage)  # type: ignore[arg-type]
        self.semantic = SemanticCache(HashingEmbedder(), ThresholdPolicy(0.8),
                                      storage=self.semantic_storage)  # type: ignore[arg-type]
        self.response = ResponseCache(self.exact, self.semantic, retry_interval=WAIT, clock=clock, **options)

    @property
    def attempted(self) -> int:
        return self.exact_storage.attempted + self.semantic_storage.attempted

    def close(self) -> None:
        self.exact.close()
        self.semantic.close()


@pytest.fixture
def oai(llm_server: LoopbackLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def caches(instrumented: Telemetry, own_redis: RedisServer, clock: FakeClock) -> Iterator[Caches]:
    made = Caches(own_redis, clock)
    install_guard(cache=made.response)
    yield made
    made.close()


@contextmanager
def frozen(redis: RedisServer) -> Iterator[None]:
    """The server stopped by SIGSTOP (it accepts connections, answers nothing), continued on the way out."""
    assert redis.process is not None
    pid = redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def ask(client: openai.OpenAI, text: str) -> str:
    answer = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": text}], temperature=0)
    return str(answer.choices[0].message.content)


def statuses(exporter: Any) -> list[Any]:
    return [s.attributes.get("llmcost.cache.status") for s in llmcost_spans(exporter)]


def sent(server: LoopbackLLMServer) -> int:
    return sum(1 for r in server.requests if r.provider == "openai")


# -- a frozen server -------------------------------------------------------------------------------------
def test_frozen_redis_is_asked_once_per_interval_not_four_times_per_call(
        caches: Caches, own_redis: RedisServer, oai: openai.OpenAI, llm_server: LoopbackLLMServer,
        clock: FakeClock, span_exporter: Any, metric_reader: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Frozen: the first operation times out, the next calls skip Redis (status bypass) and get the provider's
    answer; one probe per interval, the wait doubling after a failed probe; after SIGCONT the hits return."""
    question = "How do I reset my password?"
    first = ask(oai, question)
    assert ask(oai, question) == first and sent(llm_server) == 1  # an exact hit while Redis answers
    assert caches.attempted >= 4  # a miss and its stores ask Redis several times: what an outage saves
    with caplog.at_level(logging.DEBUG, logger=LOG), frozen(own_redis):
        before = caches.attempted
        answers = [ask(oai, question) for _ in range(8)]
        assert caches.attempted - before == 1  # the exact lookup of the first call, then nothing
        clock.advance(WAIT)
        answers.append(ask(oai, question))  # one probe (the exact lookup), which times out again
        assert caches.attempted - before == 2
        clock.advance(WAIT)  # the failed probe doubled the wait: nothing is asked yet
        answers.append(ask(oai, question))
        assert caches.attempted - before == 2
    assert answers == [first] * 10 and sent(llm_server) == 11  # every one answered by the provider
    clock.advance(WAIT)  # 2 × WAIT since the failed probe, and the server runs again
    with caplog.at_level(logging.INFO, logger=LOG):
        assert ask(oai, question) == first
    assert sent(llm_server) == 11  # the probe found the entry Redis kept: a hit, by itself
    assert statuses(span_exporter) == ["miss", "exact_hit", "miss"] + ["bypass"] * 7 + ["miss", "bypass",
                                                                                         "exact_hit"]
    stats = caches.response.outage_stats()
    assert (stats.outages, stats.failures, stats.probes) == (1, 2, 2)
    # skipped: the first frozen call's semantic lookup and 2 stores, 4 operations of each of the 7 bypassed
    # calls, 3 of the failed probe's call, 4 of the call after it
    assert stats.skipped == 3 + 7 * 4 + 3 + 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "response cache failed" in r.message]
    assert len(warnings) == 1 and "redis://127.0.0.1" in warnings[0].message
    assert any("answers again" in r.message and "38 operations" in r.message
               for r in caplog.records if r.levelno == logging.INFO)
    bypassed = sum(p.value for p in metric_points(metric_reader, "llmcost.cache.lookups")
                   if p.attributes["llmcost.cache.status"] == "bypass")
    assert bypassed == 8


def test_threads_on_a_frozen_redis_ask_it_at_most_once_each(
        caches: Caches, own_redis: RedisServer, oai: openai.OpenAI, llm_server: LoopbackLLMServer) -> None:
    """8 threads × 6 calls while frozen: Redis is asked at most once per thread (the calls in flight when the
    outage began), not once per operation of 48 calls; every call gets the provider's answer."""
    first = ask(oai, "Where is my order?")
    answers: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            answer = ask(oai, "Where is my order?")
            with lock:
                answers.append(answer)

    with frozen(own_redis):
        before = caches.attempted
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        attempted = caches.attempted - before
    assert answers == [first] * 48 and sent(llm_server) == 49
    assert 1 <= attempted <= 8
    assert caches.response.outage_stats().outages == 1


# -- a killed, then restarted server ----------------------------------------------------------------------
def test_killed_redis_is_skipped_then_the_restarted_one_serves_hits_again(
        caches: Caches, own_redis: RedisServer, oai: openai.OpenAI, llm_server: LoopbackLLMServer,
        clock: FakeClock, span_exporter: Any) -> None:
    """Killed: one failed operation, then no Redis operation until the interval is over; restarted empty on
    the same port, the first probe ends the outage, the answer is stored again and hit after."""
    question = "Do you ship to Norway?"
    first = ask(oai, question)
    own_redis.kill()
    before = caches.attempted
    assert [ask(oai, question) for _ in range(5)] == [first] * 5
    assert caches.attempted - before == 1
    own_redis.start()
    assert ask(oai, question) == first  # the server is back, but its interval is not over: still skipped
    assert caches.attempted - before == 1 and caches.response.down
    clock.advance(WAIT)
    assert ask(oai, question) == first  # the probe: an empty server, a miss, the answer stored again
    assert not caches.response.down
    assert ask(oai, question) == first
    assert sent(llm_server) == 8
    assert statuses(span_exporter) == ["miss", "miss"] + ["bypass"] * 5 + ["miss", "exact_hit"]


# -- what fails apart from the storage ------------------------------------------------------------------------
def test_a_failing_embedder_skips_the_semantic_cache_only(
        instrumented: Telemetry, redis_server: RedisServer, oai: openai.OpenAI, llm_server: LoopbackLLMServer,
        clock: FakeClock, span_exporter: Any) -> None:
    """An embedder that fails opens an outage of the semantic cache alone: the exact cache on the same Redis
    goes on serving hits, and the embedder is asked again once per interval."""
    embedded: list[str] = []

    def embedding_service_down(texts: list[str]) -> Any:
        embedded.extend(texts)
        raise ConnectionError("embedding service unreachable")

    prefix = uuid.uuid4().hex
    exact = ExactCache(f"{redis_server.url}?prefix={prefix}-x")
    semantic = SemanticCache(CallableEmbedder(embedding_service_down, 16), ThresholdPolicy(0.8),
                             f"{redis_server.url}?prefix={prefix}-s")
    cache = ResponseCache(exact, semantic, retry_interval=WAIT, clock=clock)
    install_guard(cache=cache)
    first = ask(oai, "What are your opening hours?")
    assert len(embedded) == 1  # the semantic lookup failed; its store was skipped
    assert [ask(oai, "What are your opening hours?") for _ in range(3)] == [first] * 3
    assert sent(llm_server) == 1 and len(embedded) == 1
    ask(oai, "Is there parking?")  # an exact miss: its semantic lookup and store are skipped
    clock.advance(WAIT)
    ask(oai, "Do you deliver?")  # the embedder is probed (and fails) once
    assert len(embedded) == 2
    assert statuses(span_exporter) == ["miss", "exact_hit", "exact_hit", "exact_hit", "miss", "miss"]
    exact.close()
    semantic.close()


# -- configuration and the outage state itself --------------------------------------------------------------
@pytest.mark.parametrize(("options", "message"), [
    ({"retry_interval": -1}, "retry_interval=-1"),
    ({"retry_interval": float("nan")}, "retry_interval=nan"),
    ({"retry_interval": True}, "retry_interval=True"),
    ({"retry_interval": "2"}, "retry_interval='2'"),
    ({"retry_interval": 10, "max_retry_interval": 5}, "max_retry_interval=5 is below retry_interval=10"),
])
def test_bad_intervals_are_refused_saying_which(options: dict[str, Any], message: str) -> None:
    """A retry interval that is not a finite number of seconds >= 0 (or a maximum below it) is a ValueError."""
    with pytest.raises(ValueError, match=re.escape(message)):
        ResponseCache(ExactCache(), **options)


def test_config_file_sets_the_retry_intervals(tmp_path: Any, tracer_provider: Any, meter_provider: Any) -> None:
    """`guard.cache.retry_interval` and `max_retry_interval` reach the response cache; a bad one is a
    ConfigError naming guard.cache."""
    path = tmp_path / "llmcost.yaml"
    path.write_text("guard:\n  cache: {exact: true, retry_interval: 0.5, max_retry_interval: 4}\n")
    setup = configure(path, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        cache = setup.guard.cache
        assert (cache.retry_interval, cache.max_retry_interval) == (0.5, 4.0)
    finally:
        setup.shutdown()
    path.write_text("guard:\n  cache: {exact: true, retry_interval: soon}\n")
    with pytest.raises(ConfigError, match=r"guard\.cache.*retry_interval='soon'"):
        configure(path)


def test_outage_probes_once_per_wait_backs_off_and_resets(clock: FakeClock) -> None:
    """Waits of 1, 2, 4, then capped at 5 s between failed probes; one probe per wait however many callers;
    a success ends the outage and the next outage starts again at 1 s."""
    outage = Outage("test", logging.getLogger(LOG), retry_interval=1, max_retry_interval=5, clock=clock)
    assert outage.allow() and not outage.down
    outage.failed("get", OSError("down"))
    waits = []
    for _ in range(5):
        waited = 0.0
        while not outage.allow():
            clock.advance(0.5)
            waited += 0.5
        assert not outage.allow()  # the probe is out: everyone else skips meanwhile
        waits.append(waited)
        outage.failed("get", OSError("still down"))
    assert waits == [1, 2, 4, 5, 5]
    clock.advance(5)
    assert outage.allow()
    outage.ok()
    assert not outage.down and outage.allow()
    outage.failed("get", OSError("down again"))
    clock.advance(1)
    assert outage.allow()
    stats = outage.stats()
    assert (stats.outages, stats.failures, stats.probes) == (2, 7, 7)
