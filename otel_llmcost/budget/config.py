"""Reading budgets from the YAML config file (`OTEL_LLMCOST_CONFIG`).

Every value is checked; a mistake raises `ConfigError` naming the file, the line and the field
(``llmcost.yaml:14: budgets[1].window: unknown window 'fortnight'; ...``). Numbers are read as Decimal
from their text, so ``amount: 0.1`` is exactly one tenth. Top-level sections that belong to other parts
of otel-llmcost (cache, rate limits, ...) are left alone; a key that looks like a misspelling of one of
ours (``budget:``) is an error.

    timezone: America/New_York          # calendar windows (default UTC)
    ledger: sqlite:///llmcost-ledger.db # memory:// (default), sqlite:///path, redis://host:6379/0
    backlog:                            # spend waiting for the ledger during an outage
      journal: /var/lib/app/llmcost-backlog-${HOSTNAME}   # on disk, survives a crash; one per process
      # journal: /var/lib/app/llmcost-backlog/          # ending in /: a slot per process (unnamed workers)
      journal_sync: interval            # or always: synced before each call returns (also outlives a power loss)
      journal_sync_interval: 0.05       # seconds (interval mode): what a power loss could take at most
      size: 10000                       # writes that may wait
      max_age: 1h                       # the longest one may wait
    thresholds: {warn: 0.70, throttle: 0.85, stop: 0.95}   # defaults for every budget
    forecast: {margin: 0.20, min_elapsed: 0.10}            # or false
    reservation_ttl: 10m
    budgets:
      - name: company-monthly
        amount: 5000
        window: month
      - name: per-user-daily
        amount: 2.50
        window: day
        scope: {by: user}
        thresholds: {warn: 0.5}
        allowed_models: [gpt-4o-mini, claude-haiku-4-5]
      - name: acme-rolling
        amount: 40
        window: {rolling: 24h}
        scope: {tenant: acme}
    routing:
      substitutes: {gpt-4o: gpt-4o-mini, claude-sonnet-4-5: claude-haiku-4-5}
    alerts:
      log: true
      webhooks:
        - {url: "https://hooks.example.com/T000/B000", format: slack, secret_env: LLMCOST_WEBHOOK_SECRET}
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._yaml_lines import At as _At
from .._yaml_lines import DecimalLineLoader, read_yaml
from .._yaml_lines import YList as _YList
from .._yaml_lines import YMap as _YMap
from ..environment_variables import OTEL_LLMCOST_CONFIG
from .errors import ConfigError
from .ledger.backlog import BacklogPolicy, check_sync
from .levels import ForecastPolicy, Thresholds
from .policy import AlertsConfig, Budget, BudgetConfig, Routing, Scope, WebhookConfig
from .windows import CALENDAR_UNITS, CalendarWindow, RollingWindow, WindowSpec, parse_duration

T = TypeVar("T")

_TOP_KEYS = (
    "timezone",
    "ledger",
    "thresholds",
    "forecast",
    "reservation_ttl",
    "backlog",
    "budgets",
    "routing",
    "alerts",
)
_BACKLOG_KEYS = (
    "journal",
    "journal_sync",
    "journal_sync_interval",
    "size",
    "max_age",
    "retry_initial",
    "retry_max",
    "replay_inline",
    "inline_wait",
)
_ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_BUDGET_KEYS = ("name", "amount", "window", "timezone", "scope", "thresholds", "forecast", "allowed_models")


# --- Reading the document ------------------------------------------------------------------------
def _mapping(value: object, at: _At, what: str = "a mapping") -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise at.error(f"expected {what}, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _known_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], at: _At) -> None:
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(allowed)}"
            raise at.key(mapping, key).error(f"unknown key {key!r}{suggestion}")


def _string(value: object, at: _At) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at.error(f"expected text, got {_kind(value)}")
    return value.strip()


def _duration(value: object, at: _At) -> timedelta:
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        if value <= 0:
            raise at.error(f"{value} is not a positive number of seconds")
        try:
            return timedelta(seconds=float(value))
        except OverflowError:
            raise at.error(f"{value} seconds is longer than any duration we can use") from None
    if isinstance(value, str):
        try:
            result = parse_duration(value)
        except OverflowError:
            raise at.error(f"{value!r} is longer than any duration we can use") from None
        except ValueError as exc:
            raise at.error(str(exc)) from None
        if result.total_seconds() <= 0:
            raise at.error(f"{value!r} is not a positive duration")
        return result
    raise at.error(f"expected a duration such as 30m or 24h, got {_kind(value)}")


def _timezone(value: object, at: _At) -> str:
    name = _string(value, at)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise at.error(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from exc
    return name


# --- Sections ---------------------------------------------------------------------------------------
def _thresholds(value: object, base: Thresholds, at: _At) -> Thresholds:
    section = _mapping(value, at, "a mapping of warn/throttle/stop fractions")
    _known_keys(section, ("warn", "throttle", "stop"), at)
    given = {k: section[k] for k in ("warn", "throttle", "stop") if k in section}
    return _build_at(at, section, "thresholds", lambda: replace(base, **given))


def _build_at(at: _At, section: object, name: str, make: Callable[[], T]) -> T:
    """Build a sub-section whose dataclass reports fields as `<name>.<field>`."""
    parent = _At(at.source, at.path[: -len(name)].rstrip("."), at.line)
    holder = _YMap({name: section})
    holder.key_lines = {name: at.line or 0}
    return parent.build(holder, make)


def _forecast(value: object, base: ForecastPolicy | None, at: _At) -> ForecastPolicy | None:
    if value is False or value is None:
        return None
    if value is True:
        return base or ForecastPolicy()
    section = _mapping(value, at, "false or a mapping of margin/min_elapsed")
    _known_keys(section, ("margin", "min_elapsed"), at)
    given = {k: section[k] for k in ("margin", "min_elapsed") if k in section}
    return _build_at(at, section, "forecast", lambda: replace(base or ForecastPolicy(), **given))


def _window(value: object, timezone: str, at: _At) -> WindowSpec:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in CALENDAR_UNITS:
            return CalendarWindow(text, timezone)
        if text.startswith("rolling"):
            return _window({"rolling": text[len("rolling") :].strip(" :")}, timezone, at)
        raise at.error(f"unknown window {value!r}; use day, week, month or {{rolling: <duration>}}")
    if isinstance(value, Mapping) and "rolling" in value:
        _known_keys(value, ("rolling", "buckets"), at)
        length = _duration(value["rolling"], at.key(value, "rolling"))
        buckets = value.get("buckets")
        if buckets is not None and (isinstance(buckets, bool) or not isinstance(buckets, int)):
            raise at.key(value, "buckets").error(f"expected a whole number, got {_kind(buckets)}")
        return _build_at(at, value, "window", lambda: RollingWindow(length, buckets))
    raise at.error(f"expected day, week, month or {{rolling: <duration>}}, got {_kind(value)}")


def _scope(value: object, at: _At) -> Scope:
    if value is None or value == "global":
        return Scope()
    section = _mapping(value, at, "'global' or a mapping such as {by: user} or {tenant: acme}")
    by_raw = section.get("by", ())
    if isinstance(by_raw, str):
        by: tuple[Any, ...] = (by_raw,)
    elif isinstance(by_raw, (list, tuple)):
        by = tuple(by_raw)
    else:
        raise at.key(section, "by").error(f"expected a dimension or a list of them, got {_kind(by_raw)}")
    match = {k: v for k, v in section.items() if k != "by"}
    for key, item in match.items():
        if isinstance(item, (Mapping, list)) or item is None:
            raise at.key(section, key).error(f"expected one value, got {_kind(item)}")
    node: object = section
    if isinstance(section, _YMap) and isinstance(by_raw, str):
        # `by: user` is reported as scope.by[0]: point that at the line of `by`.
        copy = _YMap(section)
        copy.key_lines = dict(section.key_lines)
        items = _YList([by_raw])
        items.item_lines = [section.key_lines.get("by", at.line or 0)]
        copy["by"] = items
        node = copy
    return _build_at(at, node, "scope", lambda: Scope(by=by, match=match))


def _budget(value: object, defaults: dict[str, Any], at: _At) -> Budget:
    section = _mapping(value, at, "a budget mapping with name, amount, window, scope")
    if isinstance(section, _YMap):
        at = _At(at.source, at.path, section.line or at.line)
    _known_keys(section, _BUDGET_KEYS, at)
    for required in ("name", "amount"):
        if required not in section:
            raise at.error(f"missing {required!r}")
    timezone = defaults["timezone"]
    if "timezone" in section:
        timezone = _timezone(section["timezone"], at.key(section, "timezone"))
    window: WindowSpec = CalendarWindow("month", timezone)
    if "window" in section:
        window = _window(section["window"], timezone, at.key(section, "window"))
    thresholds = defaults["thresholds"]
    if "thresholds" in section:
        thresholds = _thresholds(section["thresholds"], thresholds, at.key(section, "thresholds"))
    forecast = defaults["forecast"]
    if "forecast" in section:
        forecast = _forecast(section["forecast"], forecast, at.key(section, "forecast"))
    scope = _scope(section.get("scope"), at.key(section, "scope"))
    allowed = section.get("allowed_models")
    if allowed is not None and not isinstance(allowed, (list, str)):
        raise at.key(section, "allowed_models").error(f"expected a list of model names, got {_kind(allowed)}")
    models = None if allowed is None else (allowed,) if isinstance(allowed, str) else tuple(allowed)
    amount = section["amount"]
    if isinstance(amount, float):  # .inf / .nan
        raise at.key(section, "amount").error(f"{amount!r} is not a positive amount of USD")
    return at.build(
        section,
        lambda: Budget(
            name=section["name"],
            amount=amount,
            window=window,
            scope=scope,
            thresholds=thresholds,
            forecast=forecast,
            allowed_models=models,
        ),
    )


def _journal_path(value: object, at: _At) -> str:
    """The journal path with ``~`` and ``$VAR`` / ``${VAR}`` expanded, so one config file can give each
    replica its own journal (``${HOSTNAME}``); an unset variable is an error, never a literal ``$X``."""
    text = _string(value, at)

    def expand(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        if not os.environ.get(name):
            raise at.error(f"environment variable {name} (used in the journal path {text!r}) is not set")
        return os.environ[name]

    return os.path.expanduser(_ENV_REFERENCE.sub(expand, text))


def _check_sync(mode: object, interval: float, at: _At) -> None:
    try:
        check_sync(mode, interval)
    except ValueError as exc:
        raise at.error(str(exc)) from None


def _backlog(value: object, at: _At) -> BacklogPolicy:
    section = _mapping(value, at, "a mapping such as {journal: /var/lib/app/llmcost-backlog, max_age: 1h}")
    _known_keys(section, _BACKLOG_KEYS, at)
    given: dict[str, Any] = {}
    if section.get("journal") is not None:
        given["journal"] = _journal_path(section["journal"], at.key(section, "journal"))
    for name in ("journal_sync", "journal_sync_interval"):
        if name in section and "journal" not in given:
            raise at.key(section, name).error(
                f"{name} is set but there is no journal: add backlog.journal (a file path), or remove {name}"
            )
    if "journal_sync" in section:
        given["journal_sync"] = section["journal_sync"]
        _check_sync(section["journal_sync"], 0.05, at.key(section, "journal_sync"))
    if "journal_sync_interval" in section:
        interval_at = at.key(section, "journal_sync_interval")
        given["journal_sync_interval"] = _duration(section["journal_sync_interval"], interval_at).total_seconds()
        _check_sync("interval", given["journal_sync_interval"], interval_at)
    for name in ("size", "replay_inline"):
        if name in section:
            number = section[name]
            if isinstance(number, bool) or not isinstance(number, int):
                raise at.key(section, name).error(f"expected a whole number, got {_kind(number)}")
            given[name] = number
    for name in ("max_age", "retry_initial", "retry_max", "inline_wait"):
        if name in section:
            given[name] = _duration(section[name], at.key(section, name)).total_seconds()
    try:
        return BacklogPolicy(**given)
    except ValueError as exc:
        raise at.error(str(exc)) from None


def _routing(value: object, at: _At) -> Routing:
    section = _mapping(value, at)
    substitutes = section.get("substitutes", {})
    table = _mapping(substitutes, at.key(section, "substitutes"), "a mapping of model: cheaper model")
    for source, target in table.items():
        if not isinstance(source, str) or not isinstance(target, str) or not target:
            raise (
                at.key(section, "substitutes")
                .key(table, str(source))
                .error(f"expected model: model name, got {source!r}: {target!r}")
            )
    return Routing(substitutes=dict(table))


def _alerts(value: object, at: _At) -> AlertsConfig:
    section = _mapping(value, at)
    _known_keys(section, ("log", "webhooks"), at)
    log = section.get("log", True)
    if not isinstance(log, bool):
        raise at.key(section, "log").error(f"expected true or false, got {_kind(log)}")
    hooks_raw = section.get("webhooks", [])
    hooks_at = at.key(section, "webhooks")
    if not isinstance(hooks_raw, list):
        raise hooks_at.error(f"expected a list of webhooks, got {_kind(hooks_raw)}")
    allowed = tuple(f.name for f in fields(WebhookConfig))
    hooks = []
    for i, raw in enumerate(hooks_raw):
        item_at = hooks_at.item(hooks_raw, i)
        hook = _mapping(raw, item_at, "a webhook mapping with url")
        item_at = _At(item_at.source, item_at.path, getattr(hook, "line", None) or item_at.line)
        _known_keys(hook, allowed, item_at)
        if "url" not in hook:
            raise item_at.error("missing 'url'")
        hooks.append(item_at.build(hook, _webhook_maker(hook)))
    return AlertsConfig(log=log, webhooks=tuple(hooks))


def _webhook_maker(hook: Mapping[str, Any]) -> Callable[[], WebhookConfig]:
    return lambda: WebhookConfig(**hook)


def parse_budget_config(data: Mapping[str, Any] | None, source: str | None = None) -> BudgetConfig:
    """Build a `BudgetConfig` from parsed YAML/JSON data (a mapping); ConfigError names what is wrong."""
    at = _At(source, "", getattr(data, "line", None))
    if data is None:
        return BudgetConfig(source=source)
    top = _mapping(data, at, "a mapping at the top level")
    for key in top:
        hint = difflib.get_close_matches(str(key), _TOP_KEYS, n=1, cutoff=0.8)
        if key not in _TOP_KEYS and hint:
            raise at.key(top, str(key)).error(f"unknown key {key!r}; did you mean {hint[0]!r}?")
    defaults: dict[str, Any] = {"timezone": "UTC", "thresholds": Thresholds(), "forecast": ForecastPolicy()}
    if "timezone" in top:
        defaults["timezone"] = _timezone(top["timezone"], at.key(top, "timezone"))
    if "thresholds" in top:
        defaults["thresholds"] = _thresholds(top["thresholds"], Thresholds(), at.key(top, "thresholds"))
    if "forecast" in top:
        defaults["forecast"] = _forecast(top["forecast"], ForecastPolicy(), at.key(top, "forecast"))
    ledger = None
    if top.get("ledger") is not None:
        ledger = _string(top["ledger"], at.key(top, "ledger"))
        if "://" not in ledger:
            raise at.key(top, "ledger").error(
                f"{ledger!r} is not a ledger URI; use memory://, sqlite:///path or redis://host:6379/0"
            )
    ttl = BudgetConfig.reservation_ttl
    if "reservation_ttl" in top:
        ttl = _duration(top["reservation_ttl"], at.key(top, "reservation_ttl"))
    backlog = _backlog(top["backlog"], at.key(top, "backlog")) if top.get("backlog") is not None else None
    budgets_raw = top.get("budgets", [])
    budgets_at = at.key(top, "budgets")
    if budgets_raw is None:
        budgets_raw = []
    if not isinstance(budgets_raw, list):
        raise budgets_at.error(f"expected a list of budgets, got {_kind(budgets_raw)}")
    budgets = [_budget(raw, defaults, budgets_at.item(budgets_raw, i)) for i, raw in enumerate(budgets_raw)]
    names_seen: dict[str, int] = {}
    for i, budget in enumerate(budgets):
        if budget.name in names_seen:
            item_at = budgets_at.item(budgets_raw, i)
            raise item_at.key(budgets_raw[i], "name").error(
                f"budget name {budget.name!r} is already used by budgets[{names_seen[budget.name]}]"
            )
        names_seen[budget.name] = i
    routing = (
        _routing(top["routing"], at.key(top, "routing")) if top.get("routing") is not None else Routing()
    )
    alerts = (
        _alerts(top["alerts"], at.key(top, "alerts")) if top.get("alerts") is not None else AlertsConfig()
    )
    return BudgetConfig(
        budgets=tuple(budgets),
        routing=routing,
        alerts=alerts,
        ledger=ledger,
        reservation_ttl=ttl,
        source=source,
        backlog=backlog,
    )


def load_budget_config(path: str | os.PathLike[str] | None = None) -> BudgetConfig:
    """Read the YAML config at `path` (default: `$OTEL_LLMCOST_CONFIG`); ConfigError if it is wrong."""
    if path is None:
        path = os.environ.get(OTEL_LLMCOST_CONFIG) or None
        if path is None:
            raise ConfigError(f"no config file given and {OTEL_LLMCOST_CONFIG} is not set")
    source = str(path)
    data = read_yaml(path, DecimalLineLoader)
    return parse_budget_config(data, source)
