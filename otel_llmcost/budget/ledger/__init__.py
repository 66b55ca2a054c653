"""Budget ledgers, chosen by URI: ``memory://``, ``sqlite:///path``, ``redis://host:6379/0``.

    ledger = open_ledger("sqlite:///llmcost-ledger.db")

Optional backends are imported when opened. `register_ledger(scheme, factory)` adds another.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from .base import BudgetKey, Ledger, Refusal, Reservation, Spend
from .memory import MemoryLedger

__all__ = [
    "BudgetKey",
    "Ledger",
    "MemoryLedger",
    "Refusal",
    "Reservation",
    "Spend",
    "open_ledger",
    "register_ledger",
]

LedgerFactory = Callable[[str], Ledger]


def _memory(uri: str) -> Ledger:
    return MemoryLedger()


def _sqlite(uri: str) -> Ledger:
    from .sqlite import SQLiteLedger

    rest = uri[len("sqlite://") :]
    path, _, query = rest.partition("?")
    if not path.startswith("/") or len(path) < 2:
        raise ConfigError(
            f"{uri!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db", field="ledger"
        )
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"synchronous", "timeout"}
    if unknown:
        raise ConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(unknown))}", field="ledger")
    return SQLiteLedger(
        path[1:],
        synchronous=options.get("synchronous", "NORMAL"),
        timeout=float(options.get("timeout", "30")),
    )


def _redis(uri: str) -> Ledger:
    from .redis import RedisLedger

    return RedisLedger.from_url(uri)


_REGISTRY: dict[str, LedgerFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def register_ledger(scheme: str, factory: LedgerFactory) -> None:
    """Make `open_ledger` hand URIs of `scheme` to `factory(uri)`."""
    _REGISTRY[scheme.lower()] = factory


def open_ledger(uri: str) -> Ledger:
    """A ledger for the URI; ConfigError for a scheme no backend serves."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    factory = _REGISTRY.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in _REGISTRY)
        raise ConfigError(f"{uri!r} has no ledger backend; use one of {known}", field="ledger")
    return factory(uri)
