"""Prices for what other instrumentations report: token metrics by model, spans by their usage.

The catalog is the same one the SDK-side instrumentation uses (price files included), so a call costs
the same whether our wrapper or the service priced it. Look-ups and whole-call costs are memoised:
the ingest path prices tens of thousands of spans a second and most of them repeat a few models and
token shapes. A model without a price is unknown, never free: it is counted and warned about once.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any

from ..pricing import ModelPrices, PriceCatalog, UnknownPriceError, Usage, compute

_log = logging.getLogger(__name__)
_MEMO_LIMIT = 65536
_NO_LIMIT = 2**62  # input tokens: no price tier above
_NANO_PER_MTOK = Decimal(1000)  # USD per million tokens → nano-USD per token


class ServicePricer:
    """Per-token rates and per-call costs in nano-USD, memoised (see the module doc)."""

    def __init__(self, catalog: PriceCatalog | None = None) -> None:
        self.catalog = catalog or PriceCatalog()
        self.unknown_models: set[tuple[str, str | None]] = set()
        self._prices: dict[tuple[str, str | None, int], ModelPrices | None] = {}
        self._calls: dict[tuple[object, ...], int | None] = {}
        self._lock = threading.Lock()
        self._rates_day = -1
        self._rates: dict[tuple[str, str | None], tuple[int, int, int, int, int] | None] = {}

    def prices(self, model: str, provider: str | None) -> ModelPrices | None:
        """The model's prices today, or None (unknown: counted by the caller, warned about once)."""
        key = (model, provider, int(time.time() // 86400))
        try:
            return self._prices[key]
        except KeyError:
            pass
        try:
            found: ModelPrices | None = self.catalog.prices(model, provider)
        except UnknownPriceError as exc:
            found = None
            with self._lock:
                if (model, provider) not in self.unknown_models:
                    self.unknown_models.add((model, provider))
                    _log.warning("otel-llmcost processor: %s; its spend is not counted", exc)
        with self._lock:
            if len(self._prices) > 4096:
                self._prices.clear()
            self._prices[key] = found
        return found

    def token_rate(self, model: str, provider: str | None, token_type: str) -> float | None:
        """Nano-USD per token of `token_type` (input or output) at the model's base rate, or None.

        Token metrics do not say which input tokens were cache reads, nor how big each call was, so
        they are priced at the plain input / output rate (an upper bound when prompt caching is on).
        """
        prices = self.prices(model, provider)
        if prices is None:
            return None
        raw = prices.input_mtok if token_type == "input" else prices.output_mtok
        if raw is None:
            return None
        rate = getattr(raw, "base", raw)  # tiered prices: the base tier
        return float(Decimal(rate) * _NANO_PER_MTOK)

    def integer_rates_today(self) -> dict[tuple[str, str | None], tuple[int, int, int, int, int] | None]:
        """A cache (model, provider) → `integer_rates`, valid for today (cleared when the day changes,
        as prices change by date); the ingest loop reads it directly and fills it through `_integer_rates`."""
        day = int(time.time() // 86400)
        if day != self._rates_day:
            self._rates_day = day
            self._rates = {}
        return self._rates

    def _integer_rates(self, model: str, provider: str | None) -> tuple[int, int, int, int, int] | None:
        """Pico-USD per token (input, cache read, cache write, output) and the most input tokens they hold
        for, when every rate is a number with at most 6 decimals (per million tokens): then a call's cost
        is integer arithmetic, exactly what `compute` gives, at a fraction of the cost. Tiered prices give
        their base rates up to the first tier's start (larger calls take `compute`). None: odd prices."""
        key = ("rates", model, provider, int(time.time() // 86400))
        try:
            return self._calls[key]  # type: ignore[return-value]
        except KeyError:
            pass
        prices = self.prices(model, provider)
        rates: tuple[int, int, int, int, int] | None = None
        if prices is not None:
            raw: list[Any] = [prices.input_mtok, prices.cache_read_mtok, prices.cache_write_mtok, prices.output_mtok]
            limit = _NO_LIMIT
            for index, price in enumerate(raw):
                tiers = getattr(price, "tiers", None)
                if tiers is not None:  # the base rate holds while input tokens <= every tier's start
                    limit = min([limit, *(int(tier.start) for tier in tiers)])
                    raw[index] = price.base
            raw[0] = raw[0] if raw[0] is not None else 0
            raw[3] = raw[3] if raw[3] is not None else 0
            raw[1] = raw[1] if raw[1] is not None else raw[0]
            raw[2] = raw[2] if raw[2] is not None else raw[0]
            try:
                scaled = [Decimal(r).scaleb(6) for r in raw]
                if all(v == v.to_integral_value() for v in scaled):
                    rates = (int(scaled[0]), int(scaled[1]), int(scaled[2]), int(scaled[3]), limit)
            except (TypeError, ArithmeticError, ValueError):
                rates = None  # prices of a shape this does not know: `compute` handles them
        with self._lock:
            self._calls[key] = rates  # type: ignore[assignment]
        self.integer_rates_today()[(model, provider)] = rates
        return rates

    def call_units(self, model: str, provider: str | None, input_tokens: int, output_tokens: int,
                   cache_read: int = 0, cache_write: int = 0, reasoning: int = 0) -> int | None:
        """Nano-USD of one call's usage (the catalog's arithmetic: cache reads and writes, tiers), or None."""
        if cache_read + cache_write > input_tokens:
            cache_read = cache_write = 0  # inconsistent counts: price them all as plain input
        rates = self._integer_rates(model, provider)
        if rates is not None and input_tokens <= rates[4]:
            pico = ((input_tokens - cache_read - cache_write) * rates[0] + cache_read * rates[1]
                    + cache_write * rates[2] + output_tokens * rates[3])
            units, rest = divmod(pico, 1000)
            if rest > 500 or (rest == 500 and units % 2):  # half to even, as Decimal rounds
                units += 1
            return units
        if self.prices(model, provider) is None:
            return None
        key = (model, provider, input_tokens, output_tokens, cache_read, cache_write, reasoning)
        try:
            return self._calls[key]
        except KeyError:
            pass
        prices = self.prices(model, provider)
        found: int | None = None
        if prices is not None:
            usage = Usage(input_tokens, output_tokens, cache_read, cache_write, 0, min(reasoning, output_tokens))
            found = int(compute(prices, usage).total.scaleb(9).to_integral_value())
        with self._lock:
            if len(self._calls) > _MEMO_LIMIT:
                self._calls.clear()
            self._calls[key] = found
        return found
