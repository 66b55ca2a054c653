"""The savings advisor: what routing, provider prompt caching, an application cache and batching would
have saved on the recorded calls, and what that is worth a month.

Every figure is computed call by call from what was recorded (usage, model, prices, the keyed prompt
hashes and the complexity class of `otel_llmcost.fingerprint`), so the period saving is an exact sum that a
test can check; the monthly figure scales it by 30.44 / the days observed. Each recommendation carries
its evidence and the sample it rests on; a recommendation with no data says what to record instead of
guessing (`confidence == "no data"`, saving None).

* routing: calls the classifier called *simple* that ran on a dearer model than the router would pick
  for their provider and tier, priced again on that model with the same usage;
* provider prompt caching: a call whose prompt prefix (at 1024, 2048, ... estimated tokens, at or above
  the model's minimum) was sent within the cache TTL before could have read those tokens from the
  provider's cache; the saving is those tokens (less those it did read) at the input price minus the
  cache-read price, less the cache-write premium on the prefixes that get reused (Anthropic);
* application caching: a call whose query hash (same tenant, provider, model, prompt and parameters)
  was answered within the cache TTL before is an exact duplicate an exact cache would serve for $0;
  the semantic cache's measured hit rate, where it ran, applied to the traffic it did not see;
* batching: calls of features that are not latency-sensitive, priced at the provider's batch rate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..pricing import PriceCatalog
    from ..routing import Router

DAYS_PER_MONTH = 30.44
DEFAULT_PROMPT_CACHE_TTL_S = 300.0  # Anthropic's default 5 minutes; OpenAI keeps prefixes 5-10 min idle
DEFAULT_APP_CACHE_TTL_S = 3600.0
BATCHABLE_FEATURES = re.compile(r"batch|offline|nightly|backfill|eval|report|digest|etl|bulk|async", re.IGNORECASE)
"""Feature names taken as not latency-sensitive when `--batch-features` is not given."""

# Minimum prompt length (tokens) a provider caches, by model name pattern, first match wins.
_MIN_CACHEABLE: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"claude-(opus-4-[56]|haiku-4-5)"), 4096),
    (re.compile(r"claude-sonnet-4-6"), 2048),
    (re.compile(r"claude-(3-5-|3-)?haiku|claude-haiku-3"), 2048),
    (re.compile(r"gemini-.*pro"), 4096),
)
_DEFAULT_MIN_CACHEABLE = 1024


def min_cacheable_tokens(model: str) -> int:
    """The shortest prompt prefix the provider caches for `model` (1024 for OpenAI, most Claude models
    and Gemini Flash; 2048 or 4096 for some, per the providers' documentation as of late 2025)."""
    for pattern, tokens in _MIN_CACHEABLE:
        if pattern.search(model):
            return tokens
    return _DEFAULT_MIN_CACHEABLE


def confidence(sample: int) -> str:
    """How far to trust a figure from `sample` calls: no data / low (<30) / medium (<300) / high."""
    if sample <= 0:
        return "no data"
    if sample < 30:
        return "low"
    if sample < 300:
        return "medium"
    return "high"


def wilson(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson interval of a share: honest for small samples and shares near 0 or 1."""
    if total <= 0:
        return (float("nan"), float("nan"))
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Recommendation:
    kind: str
    title: str
    saving: float | None
    """USD over the observed period (None: no data)."""
    monthly: float | None
    sample: int
    confidence: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "saving_usd": self.saving, "monthly_usd": self.monthly,
                "sample": self.sample, "confidence": self.confidence, "summary": self.summary,
                "evidence": self.evidence}


@dataclass(frozen=True)
class AdviceOptions:
    prompt_cache_ttl_s: float = DEFAULT_PROMPT_CACHE_TTL_S
    app_cache_ttl_s: float = DEFAULT_APP_CACHE_TTL_S
    batch_features: Sequence[str] | None = None


def observed_days(frame: pd.DataFrame) -> int:
    """Calendar days (UTC) from the first call to the last, both included: what monthly figures scale by."""
    if frame.empty:
        return 0
    days = frame["time"].dt.tz_convert("UTC").dt.date
    return (max(days) - min(days)).days + 1


def _monthly(saving: float, days: int) -> float:
    return saving * DAYS_PER_MONTH / days if days else float("nan")


def _usage(row: Any) -> Any:
    from ..pricing import Usage

    return Usage(input_tokens=int(row.input_tokens), output_tokens=int(row.output_tokens),
                 cache_read_tokens=int(row.cached_tokens), cache_write_tokens=int(row.cache_write_tokens),
                 reasoning_tokens=int(row.reasoning_tokens))


def _priced(frame: pd.DataFrame) -> pd.DataFrame:
    """Span rows (one call each) that have a price: the rows call-level advice can reprice."""
    return frame[(frame["calls"] == 1) & (frame["unpriced_calls"] == 0) & (frame["errors"] == 0)]


# --- routing ------------------------------------------------------------------------------------------
def advise_routing(frame: pd.DataFrame, catalog: PriceCatalog, router: Router, days: int) -> Recommendation:
    from ..routing import RouteRequest

    rows = _priced(frame)
    known = rows[rows["complexity"].notna()]
    # Calls are classified on a random sample (OTEL_LLMCOST_COMPLEXITY_SAMPLE) among those fingerprinted:
    # the sample's saving stands for all of them.
    eligible = int((rows["complexity"].notna() | rows["query_hash"].notna()).sum())
    scale = eligible / len(known) if len(known) else 1.0
    if known.empty:
        return Recommendation("routing", "Route simple queries to cheaper models", None, None, 0, "no data",
                              "no call has a recorded complexity class: record it (OTEL_LLMCOST_FINGERPRINTS, "
                              "on by default) or route with the cost guard")
    simple = known[known["complexity"] == "simple"]
    targets: dict[tuple[str, str, str | None], str] = {}
    saving = Decimal(0)
    now_cost = Decimal(0)
    moved = 0
    by_target: dict[str, dict[str, Any]] = {}
    for row in simple.itertuples(index=False):
        key = (str(row.provider), str(row.model), row.tier)
        if key not in targets:
            decision = router.route(RouteRequest(key[1], key[0]), key[2], complexity="simple")
            targets[key] = decision.model if decision.allowed else key[1]
        target = targets[key]
        if target == key[1]:
            continue
        try:
            cheaper = catalog.cost(_usage(row), target, key[0]).total
        except (LookupError, ValueError):
            continue  # no price for the cheaper model: no claim
        actual = Decimal(repr(float(row.cost_usd)))
        if cheaper >= actual:
            continue
        moved += 1
        now_cost += actual
        saving += actual - cheaper
        entry = by_target.setdefault(f"{key[1]} → {target}", {"calls": 0, "saving_usd": 0.0})
        entry["calls"] += 1
        entry["saving_usd"] += float(actual - cheaper)
    low, high = wilson(len(simple), len(known))
    value = float(saving) * scale
    evidence = {"calls_classified": len(known), "calls_fingerprinted": eligible, "scaled_by": scale,
                "sample_saving_usd": float(saving), "simple_calls": len(simple),
                "simple_share": len(simple) / len(known), "simple_share_95ci": [low, high],
                "simple_calls_on_dearer_models": moved, "their_cost_usd": float(now_cost), "moves": by_target}
    if not moved:
        summary = (f"{len(simple)} of {len(known)} classified calls are simple, and they already run on the "
                   "cheapest model their tier allows: nothing to gain")
    else:
        summary = (f"{len(simple) / len(known):.0%} of {len(known)} classified calls are simple "
                   f"(95% CI {low:.0%}-{high:.0%}); {moved} of them ran on a dearer model than needed: "
                   f"${value:,.2f} in the period on the cheaper model of their tier")
        if scale > 1.0:
            summary += f" (a {1 / scale:.0%} sample of {eligible} calls, scaled up)"
    return Recommendation("routing", "Route simple queries to cheaper models", value, _monthly(value, days),
                          len(known), confidence(len(known)), summary, evidence)


# --- provider prompt caching -----------------------------------------------------------------------------
def _rates(catalog: PriceCatalog, model: str, provider: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """(input, cache read, cache write) USD per token, base tier; None without a cache-read price."""
    try:
        prices = catalog.prices(model, provider)
    except (LookupError, ValueError):
        return None

    def base(value: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(getattr(value, "base", value))

    read = base(prices.cache_read_mtok)
    price_in = base(prices.input_mtok)
    if read is None or price_in is None:
        return None
    write = base(prices.cache_write_mtok)
    million = Decimal(1_000_000)
    return price_in / million, read / million, (write if write is not None else price_in) / million


def advise_prompt_caching(frame: pd.DataFrame, catalog: PriceCatalog, days: int,
                          ttl_s: float = DEFAULT_PROMPT_CACHE_TTL_S) -> Recommendation:
    rows = _priced(frame)
    rows = rows[rows["prefix_hashes"].notna()].sort_values("time", kind="stable")
    title = "Use the providers' prompt caching"
    if rows.empty:
        with_hashes = int(frame["prefix_hashes"].notna().sum())
        why = ("no call had a prompt of 1024 tokens or more" if frame["query_hash"].notna().any()
               else "no prompt prefix hashes were recorded (OTEL_LLMCOST_FINGERPRINTS, on by default; "
                    "Prometheus keeps no per-call data)")
        return Recommendation("prompt_caching", title, None, None, with_hashes, "no data", why)
    saving = Decimal(0)
    premium = Decimal(0)
    cacheable_calls = 0
    tokens_cacheable = 0
    tokens_already = 0
    per_model: dict[str, dict[str, Any]] = {}
    for (provider, model), group in rows.groupby(["provider", "model"], sort=True):
        rates = _rates(catalog, str(model), str(provider))
        if rates is None:
            continue
        rate_in, rate_read, rate_write = rates
        minimum = min_cacheable_tokens(str(model))
        seen: dict[str, tuple[float, int]] = {}  # hash → (last time, index of the call that sent it)
        read_tokens: list[int] = []
        provides: list[int] = []  # tokens of each call's prefix that a later call reads
        entry = per_model.setdefault(f"{provider}/{model}", {"calls": 0, "calls_with_repeat": 0,
                                                             "tokens_cacheable": 0, "saving_usd": 0.0})
        for index, row in enumerate(group.itertuples(index=False)):
            when = row.time.timestamp()
            best = 0
            for tokens, digest in row.prefix_hashes:
                if tokens < minimum:
                    continue
                previous = seen.get(digest)
                if previous is not None and when - previous[0] <= ttl_s:
                    best = max(best, tokens)
                    provides[previous[1]] = max(provides[previous[1]], tokens)
                seen[digest] = (when, index)
            read_tokens.append(best)
            provides.append(0)
            entry["calls"] += 1
            extra = max(0, best - int(row.cached_tokens))
            if best:
                cacheable_calls += 1
                entry["calls_with_repeat"] += 1
                tokens_cacheable += best
                tokens_already += min(best, int(row.cached_tokens))
            gain = extra * (rate_in - rate_read)
            saving += gain
            entry["tokens_cacheable"] += best
            entry["saving_usd"] += float(gain)
        if rate_write > rate_in:
            for index, row in enumerate(group.itertuples(index=False)):
                written = max(0, provides[index] - read_tokens[index] - int(row.cache_write_tokens))
                cost = written * (rate_write - rate_in)
                premium += cost
                entry["saving_usd"] -= float(cost)
    value = float(saving - premium)
    sample = len(rows)
    evidence = {"calls_with_long_prompts": sample, "calls_with_a_cached_prefix_available": cacheable_calls,
                "repeat_share": cacheable_calls / sample, "repeat_share_95ci": list(wilson(cacheable_calls, sample)),
                "tokens_cacheable": tokens_cacheable, "tokens_already_read_from_cache": tokens_already,
                "cache_write_premium_usd": float(premium), "ttl_seconds": ttl_s, "per_model": per_model}
    if value <= 0:
        summary = (f"{cacheable_calls} of {sample} long prompts repeat a prefix within {ttl_s:.0f}s; "
                   "the provider cache already reads what it can (or writes would cost more than reads save)")
        value = max(value, 0.0)
    else:
        summary = (f"{cacheable_calls} of {sample} long prompts repeat a prefix over the model's minimum within "
                   f"{ttl_s:.0f}s; {tokens_cacheable - tokens_already:,} more input tokens could be read from "
                   f"the provider cache: ${value:,.2f} in the period (Anthropic: mark the shared prefix with "
                   "cache_control; OpenAI/Gemini: keep the stable part first, use prompt_cache_key)")
    return Recommendation("prompt_caching", title, value, _monthly(value, days), sample, confidence(sample),
                          summary, evidence)


# --- application caching ---------------------------------------------------------------------------------
def advise_app_caching(frame: pd.DataFrame, days: int, ttl_s: float = DEFAULT_APP_CACHE_TTL_S) -> Recommendation:
    title = "Cache answers in the application (exact and semantic)"
    rows = frame[(frame["calls"] == 1) & (frame["errors"] == 0)]
    hashed = rows[rows["query_hash"].notna()].sort_values("time", kind="stable")
    lookups = rows[rows["cache_lookups"] > 0]
    evidence: dict[str, Any] = {}
    saving = Decimal(0)
    parts: list[str] = []
    duplicates = 0
    duplicate_ids: set[int] = set()
    if not hashed.empty:
        seen: dict[tuple[Any, Any, str], float] = {}
        for row in hashed.itertuples():
            when = row.time.timestamp()
            key = (row.tenant, row.user, str(row.query_hash))  # the response cache is per tenant and user
            previous = seen.get(key)
            served = row.exact_hits + row.semantic_hits > 0
            if previous is not None and when - previous <= ttl_s and not served:
                duplicates += 1
                duplicate_ids.add(int(row.Index))
                saving += Decimal(repr(float(row.cost_usd)))
            if not served:
                seen[key] = when
        served_now = int((hashed["exact_hits"] > 0).sum())
        evidence.update({"calls_with_query_hash": len(hashed), "exact_duplicates": duplicates,
                         "exact_duplicate_share": duplicates / len(hashed),
                         "exact_duplicate_share_95ci": list(wilson(duplicates, len(hashed))),
                         "already_served_by_exact_cache": served_now, "ttl_seconds": ttl_s,
                         "exact_saving_usd": float(saving)})
        parts.append(f"{duplicates} of {len(hashed)} calls ({duplicates / len(hashed):.1%}) repeat a request "
                     f"answered within {ttl_s / 3600:g}h: an exact cache saves ${float(saving):,.2f}")
    else:
        parts.append("no query hashes recorded: exact-duplicate share unknown")
    semantic_value = Decimal(0)
    if not lookups.empty:
        hits = int(lookups["semantic_hits"].sum())
        total = int(lookups["cache_lookups"].sum())
        rate = hits / total
        unseen = rows[(rows["cache_lookups"] == 0) & ~rows.index.isin(duplicate_ids)]
        unseen_cost = Decimal(repr(float(unseen["cost_usd"].sum())))
        semantic_value = unseen_cost * Decimal(repr(rate))
        similarities = lookups.loc[lookups["semantic_hits"] > 0, "cache_similarity"].dropna()
        evidence.update({"semantic_lookups": total, "semantic_hits": hits, "semantic_hit_rate": rate,
                         "semantic_hit_rate_95ci": list(wilson(hits, total)),
                         "semantic_saved_already_usd": float(lookups["saved_usd"].sum()),
                         "calls_without_the_cache": len(unseen), "their_cost_usd": float(unseen_cost),
                         "median_hit_similarity": float(similarities.median()) if len(similarities) else None,
                         "semantic_saving_usd": float(semantic_value)})
        if len(unseen):
            parts.append(f"the semantic cache answered {rate:.1%} of {total} lookups; at that rate the "
                         f"{len(unseen)} calls it did not see would save ${float(semantic_value):,.2f}")
        else:
            parts.append(f"the semantic cache answered {rate:.1%} of {total} lookups and already sees every call")
    else:
        parts.append("no semantic cache ran: no data on reworded duplicates")
    sample = max(len(hashed), len(lookups))
    if hashed.empty and lookups.empty:
        return Recommendation("app_caching", title, None, None, 0, "no data", "; ".join(parts), evidence)
    value = float(saving + semantic_value)
    return Recommendation("app_caching", title, value, _monthly(value, days), sample, confidence(sample),
                          "; ".join(parts), evidence)


# --- batching --------------------------------------------------------------------------------------------
def _batchable(features: Iterable[Any], chosen: Sequence[str] | None) -> Callable[[Any], bool]:
    if chosen is not None:
        wanted = {f.strip() for f in chosen if f.strip()}
        return lambda feature: feature in wanted
    return lambda feature: isinstance(feature, str) and bool(BATCHABLE_FEATURES.search(feature))


def advise_batching(frame: pd.DataFrame, catalog: PriceCatalog, days: int,
                    batch_features: Sequence[str] | None = None) -> Recommendation:
    title = "Send traffic that can wait through the batch APIs"
    # Batch prices are the normal ones times the provider's multiplier, so aggregated rows (Prometheus)
    # are priced as exactly as single calls.
    rows = frame[(frame["unpriced_calls"] == 0) & (frame["errors"] == 0)]
    rows = rows[rows["feature"].notna() & ~rows["batch"]]
    is_batchable = _batchable(rows["feature"].unique(), batch_features)
    chosen = rows[rows["feature"].map(is_batchable)]
    if frame["feature"].isna().all():
        return Recommendation("batching", title, None, None, 0, "no data",
                              "no call carries a feature tag (otel_llmcost.attributes(feature=...)): "
                              "cannot tell which traffic can wait")
    sample_all = int(rows["calls"].sum())
    if chosen.empty:
        named = ", ".join(batch_features) if batch_features else "none of the feature names looks like it"
        return Recommendation("batching", title, 0.0, 0.0, sample_all, confidence(sample_all),
                              f"no latency-tolerant traffic found ({named}); pass --batch-features to name it",
                              {"features_seen": sorted(map(str, rows["feature"].unique()))})
    saving = Decimal(0)
    no_discount: set[str] = set()
    per_feature: dict[str, dict[str, Any]] = {}
    multipliers: dict[tuple[str, str], Decimal | None] = {}
    for row in chosen.itertuples(index=False):
        key = (str(row.provider), str(row.model))
        if key not in multipliers:
            try:
                multipliers[key] = catalog.prices(key[1], key[0]).batch_multiplier
            except (LookupError, ValueError):
                multipliers[key] = None
        multiplier = multipliers[key]
        if multiplier is None:
            no_discount.add(f"{key[0]}/{key[1]}")
            continue
        actual = Decimal(repr(float(row.cost_usd)))
        gain = actual * (1 - multiplier)
        saving += gain
        entry = per_feature.setdefault(str(row.feature), {"calls": 0, "cost_usd": 0.0, "saving_usd": 0.0})
        entry["calls"] += int(row.calls)
        entry["cost_usd"] += float(actual)
        entry["saving_usd"] += float(gain)
    value = float(saving)
    sample = int(chosen["calls"].sum())
    evidence = {"batchable_calls": sample, "per_feature": per_feature,
                "models_without_batch_discount": sorted(no_discount)}
    summary = (f"{sample} calls of {', '.join(sorted(per_feature)) or 'the chosen features'} are not "
               f"latency-sensitive; at batch rates they cost ${value:,.2f} less in the period")
    return Recommendation("batching", title, value, _monthly(value, days), sample, confidence(sample), summary,
                          evidence)


def advise(frame: pd.DataFrame, catalog: PriceCatalog | None = None, router: Router | None = None,
           options: AdviceOptions | None = None) -> list[Recommendation]:
    """All four recommendations, largest monthly saving first (no-data ones last)."""
    from ..pricing import PriceCatalog
    from ..routing import Router

    catalog = catalog or PriceCatalog()
    router = router or Router(prices=catalog)
    options = options or AdviceOptions()
    days = observed_days(frame)
    found = [
        advise_routing(frame, catalog, router, days),
        advise_prompt_caching(frame, catalog, days, options.prompt_cache_ttl_s),
        advise_app_caching(frame, days, options.app_cache_ttl_s),
        advise_batching(frame, catalog, days, options.batch_features),
    ]
    return sorted(found, key=lambda r: -1.0 if r.monthly is None else r.monthly, reverse=True)
