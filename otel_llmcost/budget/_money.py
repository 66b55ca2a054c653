"""Money as `Decimal` for people and as integer nano-dollars for ledgers.

Ledgers store integers so that every backend adds exactly (SQLite INTEGER, Redis HINCRBY, Lua numbers
up to 2**53): one unit is 1e-9 USD, so a key holds up to about 9 million USD exactly.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

UNITS_PER_USD = 10**9


def parse_decimal(value: object) -> Decimal | None:
    """A finite Decimal from int, str, float (through its shortest repr) or Decimal; None if not one."""
    if isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip().replace("_", ""))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


def to_units(amount: Decimal) -> int:
    """USD → integer nano-dollars (rounded half to even)."""
    return int(amount.scaleb(9).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_units(units: int) -> Decimal:
    """Integer nano-dollars → USD, without trailing zeros (``Decimal('0.95')``, ``Decimal('3')``)."""
    units = int(units)
    if units % UNITS_PER_USD == 0:
        return Decimal(units // UNITS_PER_USD)
    return Decimal(units).scaleb(-9).normalize()


def quantize(amount: Decimal) -> Decimal:
    """Round to the ledger's precision (1e-9 USD), without trailing zeros."""
    return from_units(to_units(amount))


def usd(amount: Decimal) -> str:
    """Money for people: cents from $1 up, four decimals below ($0.0042, $1.50, $1,234.57)."""
    step = Decimal("0.01") if abs(amount) >= 1 else Decimal("0.0001")
    rounded = amount.quantize(step, rounding=ROUND_HALF_EVEN)
    if abs(amount) >= 1:
        return f"${rounded:,.2f}"
    text = f"{rounded.normalize():f}"
    if "." not in text:
        return f"${text}.00"
    whole, frac = text.split(".")
    return f"${whole}.{frac.ljust(2, '0')}"
