"""The span hot path against the catalog's own arithmetic: integer rates (tiered prices included) and
cached attribute tables must give exactly what `pricing.compute` and a cold parse give."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from otel_llmcost.pricing import PriceCatalog, Usage, compute
from otel_llmcost.service import otlp
from otel_llmcost.service.lite import AttributeCache
from otel_llmcost.service.pricing import ServicePricer
from otel_llmcost.service.spans import USAGE_KEYS, attribution_keys, extract_spans

from .otlp_builders import post, span_request

AHEAD = 2 * 3600 * 10**9  # the builders stamp spans an hour ahead
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"),
          ("anthropic", "claude-sonnet-4-5"), ("gcp.gemini", "gemini-2.5-flash")]


def _expected(catalog: PriceCatalog, provider: str, model: str, tokens_in: int, tokens_out: int, read: int,
              write: int) -> int:
    usage = Usage(tokens_in, tokens_out, read, write, 0, 0)
    return int(compute(catalog.prices(model, provider), usage).total.scaleb(9).to_integral_value())


def _random_call(rng: random.Random) -> tuple[str, str, int, int, int, int]:
    provider, model = rng.choice(MODELS)
    # around the 200k-token tier of tiered models, and small calls
    tokens_in = rng.choice((rng.randrange(0, 5000), rng.randrange(195_000, 205_000), rng.randrange(0, 400_000)))
    read = rng.choice((0, tokens_in // 2, rng.randrange(0, tokens_in + 1)))
    write = rng.choice((0, rng.randrange(0, tokens_in - read + 1)))
    return provider, model, tokens_in, rng.randrange(0, 4000), read, write


def test_integer_rates_price_exactly_like_the_catalog_tiers_included() -> None:
    catalog = PriceCatalog()
    pricer = ServicePricer(catalog)
    rng = random.Random(7)
    tiered_large = 0
    for _ in range(3000):
        provider, model, tokens_in, tokens_out, read, write = _random_call(rng)
        got = pricer.call_units(model, provider, tokens_in, tokens_out, read, write)
        assert got == _expected(catalog, provider, model, tokens_in, tokens_out, read, write), (model, tokens_in)
        tiered_large += model == "claude-sonnet-4-5" and tokens_in > 200_000
    assert tiered_large > 50  # the higher tier was exercised, not only the base rates
    rates = pricer._integer_rates("claude-sonnet-4-5", "anthropic")
    assert rates is not None and rates[4] == 200_000  # tiered: integer up to the first tier's start


def _spans(rng: random.Random, count: int) -> tuple[list[dict[str, Any]], int]:
    catalog = PriceCatalog()
    specs, total = [], 0
    for _ in range(count):
        provider, model, tokens_in, tokens_out, read, write = _random_call(rng)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "gen_ai.response.model": model, "gen_ai.response.id": f"resp-{rng.getrandbits(64):x}",
            "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out,
            "gen_ai.usage.cache_read.input_tokens": read, "gen_ai.usage.cache_creation.input_tokens": write,
            "server.port": 443, "llmcost.user.id": f"user-{rng.randrange(20)}",
            "llmcost.feature": rng.choice(("search", "chat")),
        }
        specs.append({"attributes": attributes})
        total += _expected(catalog, provider, model, tokens_in, tokens_out, read, write)
    return specs, total


def test_cached_tables_give_the_cold_parse_results() -> None:
    rng = random.Random(11)
    specs, total = _spans(rng, 400)
    body = span_request(specs, resource={"service.name": "bot", "llmcost.feature": "resource-feature"})
    request = otlp.decode_traces(body.SerializeToString(), otlp.PROTOBUF, None, 1 << 26)
    wanted = attribution_keys({"user", "feature"})
    pricer = ServicePricer()
    cold = extract_spans(request, pricer, "all", wanted, AttributeCache(USAGE_KEYS, wanted), AHEAD)
    assert cold.priced == 400 and cold.units_priced == total and len(cold.events) == 400
    shared = AttributeCache(USAGE_KEYS, wanted)
    tiny = AttributeCache(USAGE_KEYS, wanted, limit=5, unread_values=1)  # tables renewed every request
    for cache in (shared, shared, tiny, tiny):  # the second pass of each reads cached tables only
        warm = extract_spans(request, pricer, "all", wanted, cache, AHEAD)
        assert (warm.priced, warm.units_priced, warm.invalid) == (cold.priced, cold.units_priced, 0)
        assert [(e.key, e.units, e.attribution) for e in warm.events] == \
               [(e.key, e.units, e.attribution) for e in cold.events]
    # span attributes win over the resource's; an unread key stops being cached after a few values
    assert {e.attribution["llmcost.feature"] for e in cold.events} == {"search", "chat"}
    assert sum(b"gen_ai.response.id" in raw for raw in shared.known) == shared.unread_values < 400
    assert any(b"server.port" in raw for raw in shared.known)


def test_a_malformed_attribute_rejects_its_span_only() -> None:
    rng = random.Random(3)
    specs, _ = _spans(rng, 3)
    request = otlp.decode_traces(span_request(specs).SerializeToString(), otlp.PROTOBUF, None, 1 << 26)
    span = request.resource_spans[0].scope_spans[0].spans[1]
    span.attributes.append(b"\n\x19gen_ai.usage.input_tokens\x12\x05\x18")  # a truncated AnyValue
    wanted = attribution_keys({"user"})
    batch = extract_spans(request, ServicePricer(), "all", wanted, AttributeCache(USAGE_KEYS, wanted), AHEAD)
    assert (batch.priced, batch.invalid) == (2, 1)
    assert "not a valid KeyValue" in batch.errors[0]


def test_span_spend_counts_each_span_once_whatever_the_batch(start_processor) -> None:
    """All new (the tallied fast path), a span twice in one request, a whole resend and a partial one:
    each span's cost lands once in every budget it matches."""
    catalog = PriceCatalog()
    p = start_processor(span_accounting="all")
    rng = random.Random(5)
    specs, _ = _spans(rng, 6)
    for spec in specs:
        spec["trace_id"], spec["span_id"] = rng.randbytes(16), rng.randbytes(8)

    def cost(spec: dict[str, Any]) -> Decimal:
        a = spec["attributes"]
        usage = Usage(a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"],
                      a["gen_ai.usage.cache_read.input_tokens"], a["gen_ai.usage.cache_creation.input_tokens"])
        return catalog.cost(usage, a["gen_ai.request.model"], a["gen_ai.provider.name"]).total

    batches = [specs[0:2], specs[2:4] + [specs[2]], specs[0:2], [specs[1], specs[4], specs[5]]]
    for batch in batches:
        assert post(f"{p.url}/v1/traces", span_request(batch).SerializeToString())[0] == 200
    assert p.spend("monthly") == sum((cost(s) for s in specs), Decimal(0))
    counters = p.service.counters
    assert counters.get("llmcost_processor_spans_total", result="counted") == 6
    assert counters.get("llmcost_processor_spans_total", result="duplicate") == 4
    carol = [s for s in specs if s["attributes"]["llmcost.user.id"] == specs[3]["attributes"]["llmcost.user.id"]]
    assert p.spend("per-user", f"user={specs[3]['attributes']['llmcost.user.id']}") == \
        sum((cost(s) for s in carol), Decimal(0))
