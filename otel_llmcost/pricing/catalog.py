"""Prices for a call: the maintained genai-prices data, the user's overrides, batch discounts.

genai-prices finds the model and the price in force at the call's date; the token arithmetic is done
here, because its general calculator costs ~200 µs a call and this runs on every instrumented call.
`tests/test_pricing.py` checks that both agree. A model nobody has a price for raises
`UnknownPriceError`: the caller marks the call as unpriced, never as free.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import version
from typing import Any

from .batch import BATCH_MULTIPLIERS
from .overrides import PriceOverrides, PriceRule
from .usage import Usage

_log = logging.getLogger(__name__)
_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)

# gen_ai.provider.name (semantic conventions) → genai-prices provider id.
_PROVIDER_IDS: Mapping[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "google": "google",
    "aws.bedrock": "aws",
    "x_ai": "x-ai",
    "mistral_ai": "mistral",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
}


class UnknownPriceError(LookupError):
    """No price is known for this model: the call's cost is unknown, not zero."""


@dataclass(frozen=True, slots=True)
class Cost:
    """What a call cost and which prices said so."""

    total: Decimal
    input: Decimal
    output: Decimal
    model: str
    provider: str | None
    source: str
    batch_multiplier: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per million tokens for one model at one date (None: the catalog has no such price)."""

    model: str
    provider: str | None
    source: str
    input_mtok: Any
    output_mtok: Any
    cache_read_mtok: Any = None
    cache_write_mtok: Any = None
    cache_write_1h_mtok: Any = None
    batch_multiplier: Decimal | None = None


def provider_id(provider_name: str | None) -> str | None:
    """The catalog's provider id for a GenAI `gen_ai.provider.name` value."""
    if provider_name is None:
        return None
    return _PROVIDER_IDS.get(provider_name, provider_name)


def _normalise_model(model: str) -> str:
    # google-genai accepts and reports "models/gemini-2.5-flash"; prices are under the bare name.
    return model[len("models/"):] if model.startswith("models/") else model


def _rate(price: Any, total_input: int) -> Decimal | None:
    """The per-million rate of one price key; tiered prices use the tier of the call's input size."""
    if price is None:
        return None
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return price
    rate = price.base
    for tier in reversed(tiers):
        if total_input > tier.start:
            return tier.price
    return rate


def compute(prices: ModelPrices, usage: Usage, batch: bool = False) -> Cost:
    """The cost of `usage` at `prices`: the arithmetic, with no look-up."""
    total_input = usage.input_tokens
    input_rate = _rate(prices.input_mtok, total_input) or _ZERO
    read_rate = _rate(prices.cache_read_mtok, total_input)
    write_rate = _rate(prices.cache_write_mtok, total_input)
    write_1h_rate = _rate(prices.cache_write_1h_mtok, total_input)
    output_rate = _rate(prices.output_mtok, total_input) or _ZERO
    write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
    input_cost = (
        usage.uncached_input_tokens * input_rate
        + usage.cache_read_tokens * (input_rate if read_rate is None else read_rate)
        + write_5m * (input_rate if write_rate is None else write_rate)
        + usage.cache_write_1h_tokens
        * (write_1h_rate if write_1h_rate is not None else write_rate if write_rate is not None else input_rate)
    ) / _MILLION
    output_cost = usage.output_tokens * output_rate / _MILLION
    multiplier = prices.batch_multiplier if batch else None
    if multiplier is not None:
        input_cost *= multiplier
        output_cost *= multiplier
    return Cost(
        total=input_cost + output_cost,
        input=input_cost,
        output=output_cost,
        model=prices.model,
        provider=prices.provider,
        source=prices.source,
        batch_multiplier=multiplier,
    )


class PriceCatalog:
    """Finds the prices of a model: the user's price file first, then genai-prices' bundled data.

    Look-ups are cached per (model, provider, day) because prices change by date, not by call.
    """

    def __init__(self, overrides: PriceOverrides | None = None) -> None:
        self.overrides = overrides or PriceOverrides()
        self._cache: dict[tuple[str, str | None, int], ModelPrices] = {}
        self._lock = threading.Lock()
        self._data_source = f"genai-prices {version('genai-prices')}"

    def cost(
        self,
        usage: Usage,
        model: str,
        provider: str | None = None,
        *,
        at: datetime | None = None,
        batch: bool = False,
    ) -> Cost:
        """Price one call. `provider` is a `gen_ai.provider.name`; `at` picks the price in force then."""
        return compute(self.prices(model, provider, at=at), usage, batch)

    def prices(self, model: str, provider: str | None = None, *, at: datetime | None = None) -> ModelPrices:
        """The prices that `cost()` would use, with their source; `UnknownPriceError` when there are none."""
        day = at.toordinal() if at is not None else int(time.time() // 86400)  # prices change by date
        key = (model, provider, day)
        found = self._cache.get(key)
        if found is None:
            found = self._lookup(model, provider, at or datetime.now(timezone.utc))
            with self._lock:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[key] = found
        return found

    def _lookup(self, model: str, provider: str | None, when: datetime) -> ModelPrices:
        pid = provider_id(provider)
        name = _normalise_model(model)
        alias = self.overrides.aliases.get(name) or self.overrides.aliases.get(model)
        if alias is not None:
            name = alias.model
            pid = provider_id(alias.provider) if alias.provider else pid
        rule = self.overrides.find(name, pid) or (self.overrides.find(model, pid) if name != model else None)
        if rule is not None:
            return self._from_rule(rule, name, pid)
        return self._from_catalog(name, pid, when, original=model)

    def _batch_multiplier(self, pid: str | None) -> Decimal | None:
        if pid is None:
            return None
        return self.overrides.batch.get(pid, BATCH_MULTIPLIERS.get(pid))

    def _from_rule(self, rule: PriceRule, name: str, pid: str | None) -> ModelPrices:
        return ModelPrices(
            model=name,
            provider=pid,
            source=f"price file {rule.where}",
            batch_multiplier=self._batch_multiplier(pid),
            **{key: rule.prices.get(key) for key in
               ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")},
        )

    def _from_catalog(self, name: str, pid: str | None, when: datetime, original: str) -> ModelPrices:
        from genai_prices import data_snapshot

        try:
            provider, info = data_snapshot.get_snapshot().find_provider_model(name, None, pid, None)
        except LookupError as exc:
            where = f" from provider {pid!r}" if pid else ""
            raise UnknownPriceError(
                f"no price for model {original!r}{where}: add it to a price file (OTEL_LLMCOST_PRICES_FILE) "
                "or update genai-prices"
            ) from exc
        price = info.get_prices(when)
        if price.input_mtok is None and price.output_mtok is None:
            raise UnknownPriceError(
                f"model {original!r} has no per-token price in {self._data_source}; add it to a price file"
            )
        return ModelPrices(
            model=info.id,
            provider=provider.id,
            source=f"{self._data_source}: {provider.id}/{info.id}",
            input_mtok=price.input_mtok,
            output_mtok=price.output_mtok,
            cache_read_mtok=price.cache_read_mtok,
            cache_write_mtok=price.cache_write_mtok,
            cache_write_1h_mtok=price.cache_write_1h_mtok,
            batch_multiplier=self._batch_multiplier(provider.id),
        )
