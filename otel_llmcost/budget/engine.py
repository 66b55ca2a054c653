"""The budget engine: turns cost events into spend per budget scope, levels, alerts and hints.

    engine = BudgetEngine.from_config()                  # $OTEL_LLMCOST_CONFIG
    engine.record_cost(Decimal("0.0042"), {"llmcost.user.id": "alice"})      # spend seen (metrics)
    ticket = engine.reserve(Decimal("0.02"), attributes)  # before a call: BudgetExceededError at stop
    engine.settle(ticket, actual_cost)                    # after it
    engine.hints(attributes)                              # level, substitutes, cache_only, reset time

Every budget whose scope matches a call's attributes counts it. `level()` and `hints()` report the
tightest of them. Alerts fire once per level per window per budget scope key (see `alerts.py`).
The engine never raises into the code it observes: `record_cost`, `settle`, `level` and `hints` log
and count ledger errors and fail open; only `reserve` raises, and only `BudgetExceededError`.

Spend the ledger could not take (an outage, a freeze past the socket timeout) is not dropped: it waits
in a bounded backlog (`ledger/backlog.py`, `BacklogPolicy`) and is replayed in order once the ledger
answers, each write applied once by its id even when a first attempt's reply was lost. `close()`
makes a last attempt and logs what is left. With a journal (`BacklogPolicy(journal=path)`, or
`backlog: {journal: path}` in the config file) that spend also survives a crash of the app: the next
engine started on the same journal replays it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ._money import parse_decimal
from .alerts import Alert, AlertSink, LoggingSink
from .config import load_budget_config
from .errors import BudgetExceededError, ConfigError
from .ledger import BudgetKey, Ledger, Refusal, Reservation, open_ledger
from .ledger.backlog import Backlog, BacklogPolicy, PendingOp
from .levels import FORECAST, AlertLevel, Level
from .policy import Budget, BudgetConfig
from .webhook import WebhookSink
from .windows import RollingWindow, Window

_log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_LEVEL_ALERTS: tuple[tuple[Level, AlertLevel], ...] = (
    (Level.WARN, "warn"),
    (Level.THROTTLE, "throttle"),
    (Level.STOP, "stop"),
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class BudgetStatus:
    """One budget scope in its current window: spend, reservations in flight, level, forecast."""

    budget: str
    scope_key: str
    spend: Decimal
    reserved: Decimal
    limit: Decimal
    utilization: float
    level: Level
    window_start: datetime
    window_end: datetime
    forecast: Decimal | None = None


@dataclass(frozen=True)
class Hints:
    """What the call path may do about budgets, from the tightest budget matching a call.

    `substitutes` (model → cheaper model) is filled from `throttle` on, `cache_only` is True at `stop`,
    `allowed_models` is the budget's list from `throttle` on (None: no restriction).
    """

    level: Level = Level.OK
    budget: str | None = None
    scope_key: str | None = None
    utilization: float = 0.0
    substitutes: dict[str, str] = field(default_factory=dict)
    cache_only: bool = False
    allowed_models: tuple[str, ...] | None = None
    reset_at: datetime | None = None


@dataclass(frozen=True)
class _Match:
    budget: Budget
    key: BudgetKey
    window: Window


@dataclass
class _Hold:
    match: _Match
    reservation: Reservation | None  # None: the ledger failed, the call went ahead (fail open)


@dataclass
class Ticket:
    """The reservations made for one call; hand it to `settle` (or `release`) exactly once."""

    estimate: Decimal
    at: datetime
    holds: list[_Hold] = field(default_factory=list)
    settled: bool = False

    @property
    def budgets(self) -> list[tuple[str, str]]:
        """(budget, scope key) pairs this call was reserved against."""
        return [(h.match.key.budget, h.match.key.scope) for h in self.holds]


@dataclass
class EngineStats:
    """Counters of what went wrong or was refused (the engine's own health).

    `errors` counts failed ledger calls made on the call path (and bad input). The backlog of spend the
    ledger could not take counts writes queued (`backlogged`), replayed (`replayed`), background
    retries that failed (`replay_errors`), and writes dropped for good (`dropped`, `lost_usd`); with a
    journal, writes a previous process left and this one took over (`restored`) and journal writes the
    disk refused (`journal_errors`: those costs wait in memory only).
    """

    errors: int = 0
    refusals: int = 0
    alerts_sent: int = 0
    sink_errors: int = 0
    backlogged: int = 0
    replayed: int = 0
    replay_errors: int = 0
    dropped: int = 0
    lost_usd: Decimal = Decimal(0)
    restored: int = 0
    journal_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, amount: int | Decimal = 1) -> None:
        """Add to a counter (safe from any thread)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


class BudgetEngine:
    """Budgets applied to a stream of cost events (see the module doc)."""

    def __init__(
        self,
        config: BudgetConfig | Sequence[Budget],
        ledger: Ledger | str | None = None,
        sinks: Sequence[AlertSink] | None = None,
        *,
        clock: Clock = _utcnow,
        backlog: BacklogPolicy | None = None,
    ) -> None:
        """`backlog` (default: the config's `backlog:` section, else `BacklogPolicy()`) bounds the spend
        that waits for the ledger; a journal in it that another process holds is a `ConfigError`."""
        self.config = config if isinstance(config, BudgetConfig) else BudgetConfig(budgets=tuple(config))
        self._owned: list[Any] = []
        if ledger is None or isinstance(ledger, str):
            ledger = open_ledger(ledger or self.config.ledger or "memory://")
            self._owned.append(ledger)
        self.ledger: Ledger = ledger
        if sinks is None:
            sinks = self._sinks_from_config()
        self.sinks: list[AlertSink] = list(sinks)
        self.clock = clock
        self.stats = EngineStats()
        self._ttl = self.config.reservation_ttl.total_seconds()
        self._fired: dict[tuple[str, str], tuple[str, set[str]]] = {}
        self._lock = threading.Lock()
        try:
            policy = backlog if backlog is not None else self.config.backlog
            self._backlog = Backlog(self.ledger, self._spend_applied, self.stats.count, policy)
        except BaseException:
            self._close_owned()
            raise

    @classmethod
    def from_config(
        cls,
        config: BudgetConfig | str | os.PathLike[str] | None = None,
        *,
        ledger: Ledger | str | None = None,
        sinks: Sequence[AlertSink] | None = None,
        clock: Clock = _utcnow,
        backlog: BacklogPolicy | None = None,
    ) -> BudgetEngine:
        """An engine from a config object or YAML path (default `$OTEL_LLMCOST_CONFIG`), with the
        ledger and alert sinks it names."""
        if not isinstance(config, BudgetConfig):
            config = load_budget_config(config)
        return cls(config, ledger, sinks, clock=clock, backlog=backlog)

    def _sinks_from_config(self) -> list[AlertSink]:
        sinks: list[AlertSink] = [LoggingSink()] if self.config.alerts.log else []
        for hook in self.config.alerts.webhooks:
            secret = None
            if hook.secret_env:
                secret = os.environ.get(hook.secret_env)
                if not secret:
                    raise ConfigError(
                        f"environment variable {hook.secret_env} (the webhook's signing secret) is not set",
                        field="alerts.webhooks.secret_env",
                        source=self.config.source,
                    )
            sink = WebhookSink(
                hook.url,
                secret=secret,
                format=hook.format,
                timeout=hook.timeout,
                max_attempts=hook.max_attempts,
            )
            sinks.append(sink)
            self._owned.append(sink)
        return sinks

    # -- matching --
    def _matches(self, attributes: Mapping[str, str], at: datetime) -> list[_Match]:
        found = []
        for budget in self.config.budgets:
            scope_key = budget.scope.key_for(attributes)
            if scope_key is not None:
                found.append(_Match(budget, BudgetKey(budget.name, scope_key), budget.window.at(at)))
        return found

    def _now(self) -> datetime:
        return _aware(self.clock())

    # -- spend --
    def record_cost(self, cost: Decimal, attributes: Mapping[str, str], at: datetime | None = None) -> None:
        """Count a call's cost against every matching budget; never raises (errors are logged, counted)."""
        try:
            amount = parse_decimal(cost)
            if amount is None or amount < 0:
                raise ValueError(f"cost {cost!r} is not a non-negative number")
            now = self._now()
            when = _aware(at) if at is not None else now
            matches = self._matches(attributes, when)
        except Exception:
            self.stats.count("errors")
            _log.exception("budget engine: cost event dropped")
            return
        for match in matches:
            self._backlog.submit(self._op(match, amount, now, when))

    def reserve(self, estimate: Decimal, attributes: Mapping[str, str]) -> Ticket:
        """Hold `estimate` USD on every matching budget before a call.

        Raises `BudgetExceededError` (and holds nothing) if a budget's stop limit leaves no room. A
        ledger that fails does not stop the call: that budget is skipped, logged and counted, and the
        actual cost is recorded at `settle`.
        """
        amount = parse_decimal(estimate)
        if amount is None or amount < 0:
            raise ValueError(f"estimate {estimate!r} is not a non-negative number of USD")
        now = self._now()
        ticket = Ticket(amount, now)
        answered = False
        try:
            for match in self._matches(attributes, now):
                try:
                    result = self.ledger.reserve(
                        match.key,
                        match.window,
                        amount,
                        match.budget.stop_limit,
                        ttl=self._ttl,
                        now=now.timestamp(),
                    )
                except Exception:
                    self.stats.count("errors")
                    _log.exception("budget engine: reserving on %s failed; the call goes ahead", match.key)
                    ticket.holds.append(_Hold(match, None))
                    continue
                answered = True
                if isinstance(result, Refusal):
                    self.stats.count("refusals")
                    self._release(ticket, now)
                    raise BudgetExceededError(
                        budget=match.key.budget,
                        scope_key=match.key.scope,
                        spend=result.spent,
                        reserved=result.reserved,
                        requested=amount,
                        limit=match.budget.stop_limit,
                        amount=match.budget.amount,
                        reset_at=match.window.end,
                    )
                ticket.holds.append(_Hold(match, result))
            return ticket
        finally:
            if answered:  # the ledger is up: spend waiting in the backlog goes first
                self._backlog.answered()

    def settle(self, ticket: Ticket, actual: Decimal) -> None:
        """Replace the ticket's holds by the call's actual cost; never raises."""
        with self._lock:
            if ticket.settled:
                _log.warning("budget engine: a ticket was settled twice; the second time is ignored")
                return
            ticket.settled = True
        amount = parse_decimal(actual)
        if amount is None or amount < 0:
            self.stats.count("errors")
            _log.error("budget engine: actual cost %r is not a non-negative number; counted as 0", actual)
            amount = Decimal(0)
        now = self._now()
        for hold in ticket.holds:
            self._backlog.submit(self._op(hold.match, amount, now, now, hold.reservation))

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket's holds without spend (the call was not made, or was served from cache)."""
        self.settle(ticket, Decimal(0))

    def _op(
        self, match: _Match, amount: Decimal, now: datetime, at: datetime, reservation: Reservation | None = None
    ) -> PendingOp:
        """One write of spend, with an id of its own so that a retry of it counts once."""
        return PendingOp(
            uuid.uuid4().hex, match.key, match.window, amount, now.timestamp(), reservation, (match, at)
        )

    def _spend_applied(self, op: PendingOp, spent: Decimal) -> None:
        if op.context is not None:
            match, at = op.context
        else:  # a write another process queued (read from the journal): alerts from today's config
            try:
                budget = self.config.budget(op.key.budget)
            except KeyError:
                return  # the budget is gone from the config: its spend counts in the ledger, no alert
            match, at = _Match(budget, op.key, op.window), datetime.fromtimestamp(op.now, timezone.utc)
        self._after_spend(match, spent, at)

    def pending(self) -> tuple[int, Decimal]:
        """Spend waiting for the ledger: (writes, USD). Non-zero only during and just after an outage."""
        return self._backlog.pending()

    def _release(self, ticket: Ticket, now: datetime) -> None:
        for hold in ticket.holds:
            if hold.reservation is not None:
                try:
                    self.ledger.settle(hold.reservation, Decimal(0), now=now.timestamp())
                except Exception:
                    self.stats.count("errors")
                    _log.exception("budget engine: releasing a hold on %s failed", hold.match.key)
        ticket.holds.clear()
        ticket.settled = True

    # -- alerts --
    def _projection(self, match: _Match, spent: Decimal, at: datetime) -> Decimal | None:
        policy = match.budget.forecast
        if policy is None or isinstance(match.budget.window, RollingWindow):
            return None
        return policy.projection(spent, match.window.elapsed(at), match.window.length)

    def _after_spend(self, match: _Match, spent: Decimal, at: datetime) -> None:
        budget = match.budget
        level = budget.thresholds.level(spent, budget.amount)
        projected = self._projection(match, spent, at)
        for crossed, name in _LEVEL_ALERTS:
            if crossed <= level:
                self._fire(match, name, spent, budget.thresholds.fraction(crossed), projected, at)
        policy = budget.forecast
        if (
            policy is not None
            and projected is not None
            and spent < budget.amount
            and policy.exceeded(projected, budget.amount)
        ):
            self._fire(match, FORECAST, spent, 1 + policy.margin, projected, at)

    def _fire(
        self,
        match: _Match,
        level: AlertLevel,
        spent: Decimal,
        threshold: Decimal,
        projected: Decimal | None,
        at: datetime,
    ) -> None:
        cache_key = (match.key.budget, match.key.scope)
        alert_id = match.window.alert_id
        with self._lock:
            known = self._fired.get(cache_key)
            if known is not None and known[0] == alert_id and level in known[1]:
                return
        first = self.ledger.mark_alert(match.key, alert_id, level, keep_until=match.window.keep_until)
        with self._lock:
            known = self._fired.get(cache_key)
            if known is None or known[0] != alert_id:
                known = (alert_id, set())
                self._fired[cache_key] = known
            known[1].add(level)
        if not first:
            return
        alert = Alert(
            budget=match.key.budget,
            scope_key=match.key.scope,
            level=level,
            spend=spent,
            limit=match.budget.amount,
            threshold=threshold,
            window_start=match.window.start,
            window_end=match.window.end,
            forecast=projected,
            at=at,
        )
        self.stats.count("alerts_sent")
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception:
                self.stats.count("sink_errors")
                _log.exception("budget engine: alert sink %r failed", sink)

    # -- state --
    def _status(self, match: _Match, now: datetime) -> BudgetStatus:
        spend = self.ledger.spend(match.key, match.window, now=now.timestamp())
        budget = match.budget
        return BudgetStatus(
            budget=budget.name,
            scope_key=match.key.scope,
            spend=spend.spent,
            reserved=spend.reserved,
            limit=budget.amount,
            utilization=float(spend.spent / budget.amount),
            level=budget.thresholds.level(spend.spent, budget.amount),
            window_start=match.window.start,
            window_end=match.window.end,
            forecast=self._projection(match, spend.spent, now),
        )

    def status(self, attributes: Mapping[str, str]) -> list[BudgetStatus]:
        """Every budget scope that a call with these attributes counts against, now."""
        now = self._now()
        matches = self._matches(attributes, now)
        result = [self._status(match, now) for match in matches]
        if matches and self._backlog.answered():  # spend that waited for the ledger is in now
            result = [self._status(match, now) for match in matches]
        return result

    def _tightest(self, attributes: Mapping[str, str]) -> tuple[BudgetStatus | None, Budget | None]:
        try:
            statuses = self.status(attributes)
        except Exception:
            self.stats.count("errors")
            _log.exception("budget engine: reading budget state failed; treating as ok")
            return None, None
        if not statuses:
            return None, None
        tightest = max(statuses, key=lambda s: (s.level, s.utilization))
        return tightest, self.config.budget(tightest.budget)

    def level(self, attributes: Mapping[str, str]) -> Level:
        """The tightest level among the budgets matching these attributes (ok if none; fails open)."""
        tightest, _ = self._tightest(attributes)
        return Level.OK if tightest is None else tightest.level

    def hints(self, attributes: Mapping[str, str]) -> Hints:
        """What the call path may do, from the tightest matching budget (see `Hints`)."""
        tightest, budget = self._tightest(attributes)
        if tightest is None or budget is None:
            return Hints()
        throttled = tightest.level >= Level.THROTTLE
        return Hints(
            level=tightest.level,
            budget=tightest.budget,
            scope_key=tightest.scope_key,
            utilization=tightest.utilization,
            substitutes=dict(self.config.routing.substitutes) if throttled else {},
            cache_only=tightest.level >= Level.STOP,
            allowed_models=budget.allowed_models if throttled else None,
            reset_at=tightest.window_end,
        )

    def state(self) -> list[BudgetStatus]:
        """Every budget scope in its current window (for export: gauges, `/v1/hints`, reports).

        Scopes split `by` a dimension list the keys that have spend or reservations in the window.
        """
        now = self._now()
        result, answered = self._state(now)
        if answered and self._backlog.answered():  # spend that waited for the ledger is in now
            result, _ = self._state(now)
        return result

    def _state(self, now: datetime) -> tuple[list[BudgetStatus], bool]:
        result: list[BudgetStatus] = []
        answered = False
        for budget in self.config.budgets:
            window = budget.window.at(now)
            fixed = budget.scope.fixed_key()
            try:
                keys = [fixed] if fixed is not None else self.ledger.scopes(budget.name, window)
                for scope_key in keys:
                    result.append(
                        self._status(_Match(budget, BudgetKey(budget.name, scope_key), window), now)
                    )
                answered = True
            except Exception:
                self.stats.count("errors")
                _log.exception("budget engine: reading the state of budget %r failed", budget.name)
        return result, answered

    # -- lifecycle --
    def flush(self, timeout: float | None = None) -> bool:
        """Wait for alert sinks that queue (webhooks) to deliver; False if one timed out."""
        ok = True
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if callable(flush):
                ok = bool(flush(timeout)) and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        """Replay what waits for the ledger (a last attempt; what is left is logged as lost), flush the
        sinks, and close the ledger and sinks this engine opened itself."""
        self._backlog.close(timeout)
        self.flush(timeout)
        self._close_owned()

    def _close_owned(self) -> None:
        for owned in self._owned:
            try:
                owned.close()
            except Exception:
                _log.exception("budget engine: closing %r failed", owned)
        self._owned.clear()

    def __enter__(self) -> BudgetEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BacklogPolicy", "BudgetEngine", "BudgetStatus", "EngineStats", "Hints", "Ticket"]
