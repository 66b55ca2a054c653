"""Several processor replicas on one Redis ledger count a payload once, whichever replica gets it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_llmcost.service.redis_store import RedisIngestStore

from .otlp_builders import DELTA, T0, cost_request, post

S = 10**9


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_replicas_share_one_redis_and_count_once(start_processor, backend):
    """The same payloads sent to two replicas (a retry that moved) count once, and both see the total."""
    first = start_processor()
    prefix = first.service.store._prefix  # type: ignore[attr-defined]
    second_store = RedisIngestStore.from_url(backend[len("redis:"):], prefix=prefix, retention=86400.0)
    assert second_store.epoch_ns == first.service.store.epoch_ns
    second = start_processor(store=second_store)
    delta = cost_request([({"llmcost.user.id": "zed"}, T0, T0 + S, 0.5)], temporality=DELTA)
    cumulative = cost_request([({}, T0, T0 + 2 * S, 0.25)], resource={"service.instance.id": "r-2"})
    for replica in (first, second, first, second):
        assert post(f"{replica.url}/v1/metrics", delta.SerializeToString())[0] == 200
        assert post(f"{replica.url}/v1/metrics", cumulative.SerializeToString())[0] == 200
    assert first.spend("monthly") == second.spend("monthly") == Decimal("0.75")
    assert second.spend("per-user", "user=zed") == Decimal("0.5")
