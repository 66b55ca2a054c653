"""Batch discounts, which the price catalog does not carry.

Every provider below bills asynchronous batch jobs at half the standard rate for input and output
alike (checked against each provider's pricing page, 2026-11). A user may override a multiplier in the
price file (`batch:` section).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

BATCH_MULTIPLIERS: Final[dict[str, Decimal]] = {
    # OpenAI Batch API: "Save 50% on inputs and outputs" (platform pricing page, Batch column).
    "openai": Decimal("0.5"),
    # Anthropic Message Batches API: "50% discount" on all usage (docs: Batch processing, Pricing).
    "anthropic": Decimal("0.5"),
    # Gemini API Batch Mode: "50% of the standard cost" (ai.google.dev batch-mode docs).
    "google": Decimal("0.5"),
}
"""genai-prices provider id → multiplier applied to the standard price of a batch request."""
