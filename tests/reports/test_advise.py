"""The savings advisor on the synthetic workload: every period saving equals the sum the workload's
design gives, and no recommendation is made from no data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from otel_llmcost.reports.savings import (
    DAYS_PER_MONTH,
    advise,
    advise_app_caching,
    advise_batching,
    advise_prompt_caching,
    advise_routing,
    min_cacheable_tokens,
    observed_days,
)
from otel_llmcost.reports.schema import conform
from otel_llmcost.reports.sources import load
from otel_llmcost.routing import Router

M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def frame(store_path):
    return load(str(store_path))


def test_batching_saving_is_the_sum_over_nightly_calls(frame, workload, catalog):
    """Nightly summaries (the latency-tolerant feature) at batch rates: the exact sum of per-call differences."""
    expected = sum(c.cost - catalog.cost(c.usage, c.model, c.provider, batch=True).total
                   for c in workload if c.feature == "nightly-summary")
    found = advise_batching(frame, catalog, observed_days(frame))
    assert found.saving == pytest.approx(float(expected), rel=1e-9)
    assert found.sample == sum(1 for c in workload if c.feature == "nightly-summary")
    assert found.monthly == pytest.approx(found.saving * DAYS_PER_MONTH / 42)
    named = advise_batching(frame, catalog, 42, batch_features=["chat"])
    expected_chat = sum(c.cost - catalog.cost(c.usage, c.model, c.provider, batch=True).total
                        for c in workload if c.feature == "chat")
    assert named.saving == pytest.approx(float(expected_chat), rel=1e-9)


def test_prompt_caching_saving_from_session_structure(frame, workload, catalog):
    """Support sessions share a ~2,450-token system prompt on claude-sonnet-4-6 (minimum 2048): every call
    after a session's first reads 2048 tokens at $0.30 instead of $3 per million; each first call pays
    the write premium ($3.75 - $3) on them."""
    assert min_cacheable_tokens("claude-sonnet-4-6") == 2048
    sessions = [c for c in workload if c.session_index >= 0]
    readers = sum(1 for c in sessions if c.session_index > 0)
    writers = sum(1 for c in sessions if c.session_index == 0)
    expected = readers * 2048 * (Decimal(3) - Decimal("0.3")) / M - writers * 2048 * (Decimal("3.75") - 3) / M
    found = advise_prompt_caching(frame, catalog, observed_days(frame))
    assert found.saving == pytest.approx(float(expected), rel=1e-9)
    assert found.evidence["calls_with_a_cached_prefix_available"] == readers
    assert found.sample == len(sessions)


def test_prompt_caching_counts_only_repeats_within_the_ttl(frame, catalog):
    """With a 10-second TTL no session call (25 s apart) finds its prefix still cached."""
    found = advise_prompt_caching(frame, catalog, 42, ttl_s=10)
    assert found.evidence["calls_with_a_cached_prefix_available"] == 0
    assert found.saving == 0.0


def test_app_caching_exact_and_semantic(frame, workload):
    """Exact: the cost of every request repeated by the same user within the hour. Semantic: the measured
    hit rate of the search traffic applied to the traffic the cache did not see (duplicates left out)."""
    exact = sum(c.cost for c in workload if c.duplicate_of_recent)
    assert any(c.duplicate_of_recent for c in workload)
    lookups = [c for c in workload if c.cache_status is not None]
    hits = sum(1 for c in lookups if c.cache_status == "semantic_hit")
    unseen = sum(float(c.cost) for c in workload if c.cache_status is None and not c.duplicate_of_recent)
    found = advise_app_caching(frame, observed_days(frame))
    assert found.evidence["exact_saving_usd"] == pytest.approx(float(exact), rel=1e-9)
    assert found.evidence["exact_duplicates"] == sum(1 for c in workload if c.duplicate_of_recent)
    assert found.evidence["semantic_hit_rate"] == pytest.approx(hits / len(lookups))
    assert found.evidence["semantic_saved_already_usd"] == pytest.approx(
        float(sum(c.saved for c in lookups if c.saved is not None)), rel=1e-9)
    assert found.saving == pytest.approx(float(exact) + unseen * hits / len(lookups), rel=1e-9)


def test_routing_reprices_simple_calls_on_the_tier_cheap_model(catalog):
    """Two simple calls on dear models and one complex call: only the simple ones move, priced exactly."""
    router = Router(prices=catalog)
    at = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    rows = [
        {"time": at, "provider": "anthropic", "model": "claude-sonnet-4-6", "tier": "pro", "complexity": "simple",
         "input_tokens": 1000, "output_tokens": 200},
        {"time": at + timedelta(days=1), "provider": "openai", "model": "gpt-5.4", "tier": "pro",
         "complexity": "simple", "input_tokens": 500, "output_tokens": 100},
        {"time": at + timedelta(days=2), "provider": "openai", "model": "gpt-5.4", "tier": "pro",
         "complexity": "complex", "input_tokens": 500, "output_tokens": 900},
    ]
    from otel_llmcost.pricing import Usage
    from otel_llmcost.routing import RouteRequest

    expected = Decimal(0)
    for row in rows:
        usage = Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"])
        row["cost_usd"] = float(catalog.cost(usage, row["model"], row["provider"]).total)
        if row["complexity"] == "simple":
            target = router.route(RouteRequest(row["model"], row["provider"]), "pro", complexity="simple").model
            assert target != row["model"]
            expected += Decimal(repr(row["cost_usd"])) - catalog.cost(usage, target, row["provider"]).total
    frame = conform(rows)
    found = advise_routing(frame, catalog, router, observed_days(frame))
    assert found.saving == pytest.approx(float(expected), rel=1e-12)
    assert found.evidence["simple_calls_on_dearer_models"] == 2
    assert found.sample == 3 and found.confidence == "low"
    assert found.monthly == pytest.approx(float(expected) * DAYS_PER_MONTH / 3)


def test_routing_scales_a_classified_sample(catalog):
    """One classified call among four fingerprinted ones: its saving stands for four calls."""
    router = Router(prices=catalog)
    at = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    from otel_llmcost.pricing import Usage

    usage = Usage(input_tokens=1000, output_tokens=200)
    cost = float(catalog.cost(usage, "claude-sonnet-4-6", "anthropic").total)
    rows = [{"time": at + timedelta(hours=i), "provider": "anthropic", "model": "claude-sonnet-4-6", "tier": "pro",
             "complexity": "simple" if i == 0 else None, "query_hash": f"h{i}", "input_tokens": 1000,
             "output_tokens": 200, "cost_usd": cost} for i in range(4)]
    frame = conform(rows)
    found = advise_routing(frame, catalog, router, 1)
    assert found.evidence["scaled_by"] == 4.0
    assert found.saving == pytest.approx(4 * found.evidence["sample_saving_usd"])
    assert found.sample == 1 and found.confidence == "low"


def test_no_data_means_no_recommendation(catalog):
    """Calls with no hashes, no complexity, no feature tags and no cache lookups: every item says no data."""
    at = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    frame = conform([{"time": at, "provider": "openai", "model": "gpt-5.4", "input_tokens": 10,
                      "output_tokens": 10, "cost_usd": 0.001}])
    for item in advise(frame, catalog):
        assert item.confidence == "no data", item
        assert item.saving is None and item.monthly is None
        assert item.summary


def test_prometheus_rows_give_no_per_call_advice(catalog):
    """Aggregated rows (Prometheus) carry no hashes or classes: advice says no data rather than guessing."""
    at = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    frame = conform([{"time": at, "source": "prometheus", "calls": 40, "provider": "openai", "model": "gpt-5.4",
                      "feature": "nightly-summary", "cost_usd": 3.0}])
    found = {item.kind: item for item in advise(frame, catalog)}
    assert found["routing"].saving is None and found["prompt_caching"].saving is None
    assert found["app_caching"].saving is None
    assert found["batching"].saving == pytest.approx(1.5)  # batch rates are half price at OpenAI
    assert found["batching"].sample == 40
