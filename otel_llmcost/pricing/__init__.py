"""Pricing: normalised usage in, Decimal USD out, with the source of every price."""

from __future__ import annotations

import os

from ..environment_variables import OTEL_LLMCOST_PRICES_FILE
from .catalog import Cost, ModelPrices, PriceCatalog, UnknownPriceError, compute, provider_id
from .overrides import PriceOverrides, load_price_file
from .usage import Usage

__all__ = [
    "Cost",
    "ModelPrices",
    "PriceCatalog",
    "PriceOverrides",
    "UnknownPriceError",
    "Usage",
    "compute",
    "load_catalog",
    "load_price_file",
    "provider_id",
]


def load_catalog(prices_file: str | None = None) -> PriceCatalog:
    """A catalog with the price file given, or the one named by OTEL_LLMCOST_PRICES_FILE.

    A broken file raises `PriceFileError` here, at startup, rather than mispricing calls later.
    """
    path = prices_file or os.environ.get(OTEL_LLMCOST_PRICES_FILE)
    return PriceCatalog(load_price_file(path) if path else None)
