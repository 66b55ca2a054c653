"""The cost guard in the call path: rate limits and budgets around real SDK calls."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

import otel_llmcost
from otel_llmcost.budget import Budget, BudgetConfig, BudgetEngine, Routing
from otel_llmcost.guard import RateLimitPolicy, install_guard
from otel_llmcost.ratelimit import RateLimiter
from otel_llmcost.ratelimit.errors import RateLimitExceeded
from otel_llmcost.ratelimit.tiers import DEFAULT_TIERS
from tests.conftest import llmcost_spans, metric_points

MSGS = [{"role": "user", "content": "What is the return policy?"}]


@pytest.fixture
def client(llm_server):
    return openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)


def test_rate_limit_refuses_the_eleventh_request_of_a_free_user(instrumented, client, span_exporter, metric_reader):
    """The lesson's free tier (10 requests/min): the 11th call of a minute is refused with retry_after;
    another user is not affected; the refusal is on the span and counted."""
    install_guard(limiter=RateLimiter(DEFAULT_TIERS))
    with otel_llmcost.attributes(user_id="bob", tier="free"):
        for _ in range(10):
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        with pytest.raises(RateLimitExceeded) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert info.value.limit == "requests_per_minute" and info.value.tier == "free"
    assert 0 < info.value.retry_after <= 60
    with otel_llmcost.attributes(user_id="alice", tier="free"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    spans = llmcost_spans(span_exporter)
    refused = spans[10]
    assert refused.attributes["error.type"] == "RateLimitExceeded"
    assert refused.attributes["llmcost.ratelimit.limit"] == "requests_per_minute"
    assert spans[11].attributes["llmcost.user.id"] == "alice" and "error.type" not in spans[11].attributes
    rejections = metric_points(metric_reader, "llmcost.ratelimit.rejections")
    assert sum(p.value for p in rejections) == 1
    assert rejections[0].attributes["llmcost.user.tier"] == "free"


def test_tokens_settled_with_real_usage(instrumented, client, llm_server):
    """A call reserves its estimated tokens and settles with what the provider billed."""
    limiter = RateLimiter({"tiny": {"tokens_per_day": 2_000}})
    install_guard(limiter=limiter, rate_limit_policy=RateLimitPolicy(default_tier="tiny"))
    with otel_llmcost.attributes(user_id="u"):
        # max_tokens=1500 reserves ~1,507 tokens, the call uses ~60: it is settled back.
        response = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=1500)
        response2 = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=1500)
    used = response.usage.total_tokens + response2.usage.total_tokens
    assert used < 500
    with otel_llmcost.attributes(user_id="u"), pytest.raises(RateLimitExceeded) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=2_000 - used)
    assert info.value.limit == "tokens_per_day"


def test_stream_settles_when_the_stream_ends(instrumented, client):
    """A streamed call holds its reservation until the stream ends, then settles to the real usage."""
    limiter = RateLimiter({"tiny": {"tokens_per_day": 3_000}})
    install_guard(limiter=limiter, rate_limit_policy=RateLimitPolicy(default_tier="tiny"))
    with otel_llmcost.attributes(user_id="s"):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=2_000, stream=True)
        with pytest.raises(RateLimitExceeded):  # the open stream still holds ~2,000 tokens
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=2_000)
        for _ in stream:
            pass
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=2_000)


def test_budget_throttle_through_the_guard(instrumented, llm_server, span_exporter):
    """With a budget in the guard, an Anthropic call over the throttle level goes to the substitute."""
    engine = BudgetEngine(BudgetConfig(budgets=(Budget("monthly", Decimal("0.01")),),
                                       routing=Routing({"claude-sonnet-4-6": "claude-haiku-4-5"})), sinks=[])
    engine.record_cost(Decimal("0.0086"), {})
    install_guard(budget=engine)
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=MSGS)
    assert message.model == "claude-haiku-4-5"
    span = llmcost_spans(span_exporter)[-1]
    assert span.attributes["llmcost.route.from_model"] == "claude-sonnet-4-6"
    assert span.attributes["llmcost.budget.level"] == "throttle"
    assert engine.state()[0].spend == Decimal("0.0086") + Decimal(str(span.attributes["gen_ai.usage.cost"]))


def test_rate_limited_call_reserves_no_budget(instrumented, client):
    """The rate limit runs first: a refused call holds nothing on the budget."""
    engine = BudgetEngine([Budget("monthly", Decimal("5"))], sinks=[])
    install_guard(limiter=RateLimiter({"one": {"requests_per_minute": 1}}),
                  rate_limit_policy=RateLimitPolicy(default_tier="one"), budget=engine)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    with pytest.raises(RateLimitExceeded):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    state = engine.state()[0]
    assert state.reserved == 0 and state.spend > 0


async def test_async_calls_are_guarded(instrumented, llm_server):
    """Async calls go through the same guard."""
    install_guard(limiter=RateLimiter({"one": {"requests_per_minute": 1}}),
                  rate_limit_policy=RateLimitPolicy(default_tier="one"))
    aclient = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
    await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    with pytest.raises(RateLimitExceeded):
        await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSGS)


def test_unknown_tier_is_not_limited(instrumented, client, caplog):
    """A call whose tier has no limits configured goes ahead, with a warning."""
    install_guard(limiter=RateLimiter(DEFAULT_TIERS))
    with otel_llmcost.attributes(user_id="x", tier="platinum"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert "tier 'platinum' has no rate limits configured" in caplog.text


def test_routing_sends_simple_queries_to_the_cheap_model(instrumented, client, span_exporter):
    """With routing on, a simple question asked of gpt-4o by a pro user goes to gpt-4o-mini; a complex
    one keeps gpt-4o; the span says why."""
    from otel_llmcost.routing import Router

    install_guard(router=Router())
    with otel_llmcost.attributes(user_id="p", tier="pro"):
        simple = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
        complex_ = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": (
            "Analyze the trade-offs between microservices and a monolith for a payments platform, "
            "step by step, with failure modes, data consistency and migration plan.")}])
    assert simple.model == "gpt-4o-mini" and complex_.model == "gpt-4o"
    first, second = llmcost_spans(span_exporter)
    assert first.attributes["llmcost.route.from_model"] == "gpt-4o"
    assert first.attributes["llmcost.route.complexity"] == "simple"
    assert "llmcost.route.from_model" not in second.attributes
    assert second.attributes["llmcost.route.complexity"] == "complex"


def test_free_tier_never_gets_a_model_it_may_not_use(instrumented, client, span_exporter):
    """A free-tier user asking for gpt-4o is served by the tier's allowed model, whatever the query."""
    from otel_llmcost.routing import Router

    install_guard(router=Router())
    with otel_llmcost.attributes(user_id="f", tier="free"):
        response = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": (
            "Prove that the halting problem is undecidable, then design a distributed consensus algorithm.")}])
    assert response.model == "gpt-4o-mini"
    assert "may not use" in llmcost_spans(span_exporter)[0].attributes["llmcost.route.reason"]


def test_tier_without_any_model_of_the_provider_is_refused(instrumented, llm_server, span_exporter):
    """A tier that allows no model of the call's provider refuses the call with ModelNotAllowedError."""
    from otel_llmcost.errors import ModelNotAllowedError
    from otel_llmcost.routing import Router

    install_guard(router=Router())
    client = anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0)
    with otel_llmcost.attributes(user_id="f", tier="free"), pytest.raises(ModelNotAllowedError) as info:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=20, messages=MSGS)
    assert info.value.tier == "free"
    assert llm_server.requests == [] or all("/messages" not in r.path for r in llm_server.requests)
    assert llmcost_spans(span_exporter)[0].attributes["error.type"] == "ModelNotAllowedError"


def test_routed_answer_is_cached_for_the_request_the_app_made(instrumented, client, llm_server, span_exporter):
    """With routing and the exact cache on, a repeated simple question is served from the cache although
    the first answer came from the cheaper model routing chose."""
    from otel_llmcost.cache import ExactCache
    from otel_llmcost.cache.callpath import ResponseCache
    from otel_llmcost.routing import Router

    install_guard(router=Router(), cache=ResponseCache(ExactCache()))
    with otel_llmcost.attributes(user_id="p", tier="pro"):
        first = client.chat.completions.create(model="gpt-4o", temperature=0,
                                               messages=[{"role": "user", "content": "Hello"}])
        second = client.chat.completions.create(model="gpt-4o", temperature=0,
                                                messages=[{"role": "user", "content": "Hello"}])
    assert first.model == second.model == "gpt-4o-mini"
    assert sum(r.path.endswith("/chat/completions") for r in llm_server.requests) == 1
    assert llmcost_spans(span_exporter)[1].attributes["llmcost.cache.status"] == "exact_hit"


def test_google_calls_are_guarded_sync_async_and_stream(instrumented, llm_server):
    """The guard's rate limit applies to Gemini calls: sync, async and streamed."""
    from google import genai
    from google.genai import types

    install_guard(limiter=RateLimiter({"three": {"requests_per_minute": 3}}),
                  rate_limit_policy=RateLimitPolicy(default_tier="three"))
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=llm_server.google_base_url))
    client.models.generate_content(model="gemini-2.5-flash", contents="hello")
    for _ in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello"):
        pass

    async def one() -> None:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hello")

    import asyncio

    asyncio.run(one())
    with pytest.raises(RateLimitExceeded):
        client.models.generate_content(model="gemini-2.5-flash", contents="hello")
