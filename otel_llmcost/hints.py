"""Budget hints from the processor service, for apps that do not keep a ledger of their own.

    from otel_llmcost.hints import HintsClient
    from otel_llmcost.guard import install_guard
    hints = HintsClient("http://llmcost-processor:4319")      # token from OTEL_LLMCOST_PROCESSOR_TOKEN
    install_guard(hints=hints)                                # throttle / stop calls by the shared budgets

A background thread polls `GET /v1/hints` (every budget scope with spend, and the dimensions each
applies to) every `interval` seconds and keeps the answer; `hints(attributes)` then answers for any
call locally, with no network round trip in the call path, the way the engine's `hints()` would: the
tightest matching budget wins. When the service cannot be reached the last answer stays in use (the
spend it reflects does not go away), until `max_age` if one is set; before any answer, or past
`max_age`, the configured `default` applies (level ok unless told otherwise). Nothing here raises
into the app: failures are logged (once per outage) and counted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .budget.breaker import BudgetBreaker
from .budget.engine import Hints
from .budget.errors import BudgetExceededError
from .budget.levels import Level
from .budget.policy import DIMENSIONS
from .pricing import PriceCatalog

_log = logging.getLogger(__name__)

TOKEN_ENV = "OTEL_LLMCOST_PROCESSOR_TOKEN"
_LEVELS = {level.label: level for level in Level}
_END_OF_TIME = datetime.max.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class _Scope:
    budget: str
    scope_key: str
    match: tuple[tuple[str, str], ...]
    level: Level
    utilization: float
    cache_only: bool
    allowed_models: tuple[str, ...] | None
    reset_at: datetime | None
    spend: Decimal
    limit: Decimal
    stop_limit: Decimal


@dataclass(frozen=True)
class _Snapshot:
    scopes: tuple[_Scope, ...]
    substitutes: dict[str, str]
    received: float


def _lookup(attributes: Mapping[str, str], dimension: str) -> str | None:
    for name in DIMENSIONS.get(dimension, (dimension,)):
        value = attributes.get(name)
        if value is not None and value != "":
            return str(value)
    return None


def _parse(payload: Any) -> _Snapshot:
    """The `/v1/hints` listing; ValueError if it is not one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("scopes"), list):
        raise ValueError("the answer has no 'scopes' list: is the URL the processor's?")
    scopes = []
    for entry in payload["scopes"]:
        reset = entry.get("reset_at")
        allowed = entry.get("allowed_models")
        scopes.append(_Scope(
            budget=str(entry["budget"]), scope_key=str(entry["scope_key"]),
            match=tuple(sorted((str(k), str(v)) for k, v in dict(entry.get("match") or {}).items())),
            level=_LEVELS[entry["level"]], utilization=float(entry.get("utilization", 0.0)),
            cache_only=bool(entry.get("cache_only", False)),
            allowed_models=tuple(allowed) if allowed else None,
            reset_at=datetime.fromisoformat(reset) if reset else None,
            spend=Decimal(str(entry.get("spend", 0))), limit=Decimal(str(entry.get("limit", 0))),
            stop_limit=Decimal(str(entry.get("stop_limit", entry.get("limit", 0)))),
        ))
    substitutes = {str(k): str(v) for k, v in dict(payload.get("substitutes") or {}).items()}
    return _Snapshot(tuple(scopes), substitutes, time.monotonic())


class HintsClient:
    """Polls the processor's `/v1/hints` and answers `hints(attributes)` from the last answer."""

    def __init__(self, url: str, *, token: str | None = None, interval: float = 5.0, timeout: float = 2.0,
                 default: Hints | None = None, max_age: float | None = None, start: bool = True) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive numbers of seconds")
        if max_age is not None and max_age < interval:
            raise ValueError(f"max_age {max_age} s is shorter than the poll interval {interval} s")
        self.url = url.rstrip("/") + "/v1/hints"
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.interval = interval
        self.timeout = timeout
        self.default = default or Hints()
        self.max_age = max_age
        self.polls = 0
        self.failures = 0
        self.last_error: str | None = None
        self._snapshot: _Snapshot | None = None
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- polling ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll now, then every `interval` seconds on a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="llmcost-hints", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval):
                return

    def refresh(self) -> bool:
        """Poll once; True if a fresh answer was stored. Never raises."""
        self.polls += 1
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                snapshot = _parse(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            hint = " (check the bearer token)" if exc.code in (401, 403) else ""
            return self._failed(f"the processor answered {exc.code}{hint}")
        except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        self._snapshot = snapshot
        if self._failing:
            _log.info("otel-llmcost hints: %s answers again", self.url)
        self._failing = False
        self.last_error = None
        return True

    def _failed(self, reason: str) -> bool:
        self.failures += 1
        self.last_error = reason
        if not self._failing:
            fallback = "the last known hints" if self._snapshot is not None else "the default hints"
            _log.warning("otel-llmcost hints: cannot poll %s (%s); using %s", self.url, reason, fallback)
        self._failing = True
        return False

    # -- answering ----------------------------------------------------------------------------------
    @property
    def age(self) -> float | None:
        """Seconds since the last good answer (None: never had one)."""
        snapshot = self._snapshot
        return None if snapshot is None else time.monotonic() - snapshot.received

    def hints(self, attributes: Mapping[str, str]) -> Hints:
        """The hints for a call with these attributes (see the module doc); never raises."""
        try:
            snapshot = self._snapshot
            if snapshot is None or (self.max_age is not None and time.monotonic() - snapshot.received > self.max_age):
                return self.default
            tightest: _Scope | None = None
            for scope in snapshot.scopes:
                tighter = tightest is None or (scope.level, scope.utilization) > (tightest.level, tightest.utilization)
                if tighter and all(_lookup(attributes, dimension) == value for dimension, value in scope.match):
                    tightest = scope
            if tightest is None:
                return Hints()
            throttled = tightest.level >= Level.THROTTLE
            return Hints(level=tightest.level, budget=tightest.budget, scope_key=tightest.scope_key,
                         utilization=tightest.utilization,
                         substitutes=dict(snapshot.substitutes) if throttled else {},
                         cache_only=tightest.cache_only, allowed_models=tightest.allowed_models if throttled else None,
                         reset_at=tightest.reset_at)
        except Exception:
            _log.exception("otel-llmcost hints: answering failed; using the default hints")
            return self.default

    def exceeded(self, hints: Hints) -> BudgetExceededError:
        """The refusal for a call at `stop`, quoting the spend and limits of the last answer."""
        snapshot = self._snapshot
        for scope in snapshot.scopes if snapshot is not None else ():
            if scope.budget == hints.budget and scope.scope_key == hints.scope_key:
                return BudgetExceededError(budget=scope.budget, scope_key=scope.scope_key, spend=scope.spend,
                                           limit=scope.stop_limit, amount=scope.limit,
                                           reset_at=scope.reset_at or _END_OF_TIME)
        return BudgetExceededError(budget=hints.budget or "?", scope_key=hints.scope_key or "?",
                                   spend=Decimal(0), limit=Decimal(0), reset_at=hints.reset_at or _END_OF_TIME)

    def close(self) -> None:
        """Stop polling (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def __enter__(self) -> HintsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HintsBreaker(BudgetBreaker):
    """The budget breaker of the cost guard, fed by a `HintsClient` instead of a local engine.

    It throttles (cheaper substitutes from `throttle` on) and refuses at `stop` exactly like the local
    breaker, but reserves nothing: the processor counts the spend from the app's metrics.
    """

    def __init__(self, client: HintsClient, catalog: PriceCatalog) -> None:  # noqa: D107 - see the class
        self.client = client
        self.catalog = catalog

    def exceeded(self, attributes: dict[str, str], hints: Hints) -> BudgetExceededError:
        return self.client.exceeded(hints)
