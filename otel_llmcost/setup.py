"""One call, or one config file, for the whole call-path setup: instrumentation, budgets, cost guard.

```yaml
# llmcost.yaml ($OTEL_LLMCOST_CONFIG); budgets:, routing: and the rest are read by their own parts
guard:
  rate_limits:                  # the lesson's free / pro / enterprise tiers unless `tiers` is given
    storage: redis://localhost:6379/0
    key: user                   # user | tenant | feature | any attribute name
    default_tier: free
    on_storage_error: open      # open | closed
    tiers: {free: {requests_per_minute: 10, tokens_per_day: 50000}}
  budgets: enforce              # enforce (breaker in the call path) | observe (alerts, gauges only)
  cache:
    exact: {storage: "sqlite:///llmcost-cache.db", ttl: 3600, max_entries: 10000}
    semantic: {storage: "memory://", embedder: minilm, threshold: 0.78}   # embedder: minilm | hashing
    cache_all: false            # also cache sampled calls (temperature > 0 without a seed)
    retry_interval: 2           # seconds a failed cache storage is left alone (doubling up to max_retry_interval: 30)
  routing: true                 # route with the `routing:` section (or its defaults)
  hints:                        # budget levels from the shared processor service instead of a local ledger
    url: http://processor:4319  # token from $OTEL_LLMCOST_PROCESSOR_TOKEN
    interval: 5                 # seconds between polls
    max_age: 60                 # after this long without an answer, use `default_level`
    default_level: ok           # ok | warn | throttle | stop
```
`hints` and a local `budgets: enforce` exclude each other: one process follows one source of budget levels.
Every key is checked; a mistake is a `ConfigError` naming the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .budget.errors import ConfigError
from .environment_variables import OTEL_LLMCOST_CONFIG
from .telemetry import Telemetry

_GUARD_KEYS = {"rate_limits", "budgets", "cache", "routing", "hints"}
_HINTS_KEYS = {"url", "interval", "timeout", "max_age", "default_level"}
_RATE_KEYS = {"storage", "key", "default_tier", "on_storage_error", "tiers"}
_CACHE_KEYS = {"exact", "semantic", "cache_all", "medium_hits", "retry_interval", "max_retry_interval"}


@dataclass
class Setup:
    """What `configure` turned on; keep it to reach the engine, the guard, or to shut down."""

    telemetry: Telemetry
    budget_processor: Any = None
    guard: Any = None
    hints_client: Any = None

    def shutdown(self) -> None:
        import otel_llmcost

        if self.hints_client is not None:
            self.hints_client.close()
        if self.budget_processor is not None:
            self.budget_processor.shutdown()
            self.budget_processor.engine.close()
        otel_llmcost.uninstrument()


def _mapping(value: Any, field: str, source: str | None, allowed: set[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {value!r}", field=field, source=source)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}",
                          field=f"{field}.{unknown[0]}", source=source)
    return value


def configure(
    config: str | os.PathLike[str] | None = None,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    **instrument_kwargs: Any,
) -> Setup:
    """Instrument every installed SDK and turn on what the config file's `guard:` section asks for."""
    import otel_llmcost

    path = config or os.environ.get(OTEL_LLMCOST_CONFIG)
    if not path:
        raise ConfigError(f"no config file: pass one or set {OTEL_LLMCOST_CONFIG}")
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the config: {exc}", source=source) from None
    if not isinstance(data, Mapping):
        raise ConfigError("the top level must be a mapping", source=source)
    guard = _mapping(data.get("guard"), "guard", source, _GUARD_KEYS)
    telemetry = otel_llmcost.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider,
                                        **instrument_kwargs)
    setup = Setup(telemetry)
    try:
        _apply(setup, guard, data, source, path, tracer_provider, meter_provider)
    except Exception:
        otel_llmcost.uninstrument()
        raise
    return setup


def _apply(setup: Setup, guard: Mapping[str, Any], data: Mapping[str, Any], source: str, path: Any,
           tracer_provider: Any, meter_provider: Any) -> None:
    from .budget.processor import enable_budgets

    hints_config = guard.get("hints")
    budgets_mode = guard.get("budgets", "enforce" if data.get("budgets") and not hints_config else None)
    if budgets_mode not in (None, False, "enforce", "observe"):
        raise ConfigError(f"{budgets_mode!r} is not enforce or observe", field="guard.budgets", source=source)
    if hints_config and budgets_mode == "enforce":
        raise ConfigError("guard.hints and guard.budgets: enforce both set the budget level; keep one "
                          "(hints: the shared processor service decides; enforce: this process's ledger)",
                          field="guard.hints", source=source)
    engine = None
    if budgets_mode:
        setup.budget_processor = enable_budgets(path, telemetry=setup.telemetry, tracer_provider=tracer_provider,
                                                meter_provider=meter_provider)
        engine = setup.budget_processor.engine
    if hints_config:
        setup.hints_client = _hints(hints_config, source)
    limiter, policy = _rate_limits(guard.get("rate_limits"), source)
    cache = _cache(guard.get("cache"), source, setup.telemetry)
    router = None
    if guard.get("routing"):
        from .routing import Router

        router = Router.from_config(path, prices=setup.telemetry.catalog)
    if limiter or cache or router or budgets_mode == "enforce" or setup.hints_client:
        from .guard import install_guard

        setup.guard = install_guard(telemetry=setup.telemetry, limiter=limiter, rate_limit_policy=policy,
                                    budget=engine if budgets_mode == "enforce" else None,
                                    cache=cache, router=router, hints=setup.hints_client)


def _hints(value: Any, source: str) -> Any:
    from .budget.engine import Hints
    from .budget.levels import Level
    from .hints import HintsClient

    config = _mapping(value, "guard.hints", source, _HINTS_KEYS)
    url = config.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"expected the processor's base URL (http://host:port), got {url!r}",
                          field="guard.hints.url", source=source)
    numbers: dict[str, float] = {}
    for key in ("interval", "timeout", "max_age"):
        if key in config:
            number = config[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
                raise ConfigError(f"expected a positive number of seconds, got {number!r}",
                                  field=f"guard.hints.{key}", source=source)
            numbers[key] = float(number)
    default = None
    if "default_level" in config:
        labels = {level.label: level for level in Level}
        label = config["default_level"]
        if label not in labels:
            raise ConfigError(f"{label!r} is not one of {', '.join(labels)}", field="guard.hints.default_level",
                              source=source)
        level = labels[label]
        default = Hints(level=level, cache_only=level >= Level.STOP)
    try:
        return HintsClient(url, default=default, interval=numbers.get("interval", 5.0),
                           timeout=numbers.get("timeout", 2.0), max_age=numbers.get("max_age"))
    except ValueError as exc:
        raise ConfigError(str(exc), field="guard.hints", source=source) from None


def _rate_limits(value: Any, source: str) -> tuple[Any, Any]:
    if not value:
        return None, None
    from .guard import RateLimitPolicy
    from .ratelimit import RateLimiter
    from .ratelimit.tiers import DEFAULT_TIERS

    section = _mapping({} if value is True else value, "guard.rate_limits", source, _RATE_KEYS)
    try:
        limiter = RateLimiter(section.get("tiers") or DEFAULT_TIERS, str(section.get("storage", "memory://")),
                              on_storage_error=section.get("on_storage_error", "open"))
        policy = RateLimitPolicy(key=str(section.get("key", "user")),
                                 default_tier=str(section.get("default_tier", "free")))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), field="guard.rate_limits", source=source) from None
    return limiter, policy


def _cache(value: Any, source: str, telemetry: Telemetry) -> Any:
    if not value:
        return None
    from .cache import ExactCache, SemanticCache
    from .cache.callpath import ResponseCache

    section = _mapping({"exact": True} if value is True else value, "guard.cache", source, _CACHE_KEYS)
    exact = semantic = None
    try:
        if section.get("exact"):
            options = _mapping({} if section["exact"] is True else section["exact"], "guard.cache.exact", source,
                               {"storage", "ttl", "max_entries"})
            exact = ExactCache(str(options.get("storage", "memory://")), options.get("ttl", 3600),
                               options.get("max_entries", 10_000))
        if section.get("semantic"):
            from .cache.embedders import HashingEmbedder, MiniLMEmbedder
            from .cache.policy import GuardedPolicy, ThresholdPolicy

            options = _mapping({} if section["semantic"] is True else section["semantic"], "guard.cache.semantic",
                               source, {"storage", "ttl", "max_entries", "embedder", "threshold"})
            kind = options.get("embedder", "minilm")
            if kind not in ("minilm", "hashing"):
                raise ConfigError(f"unknown embedder {kind!r}; use minilm or hashing",
                                  field="guard.cache.semantic.embedder", source=source)
            embedder = MiniLMEmbedder() if kind == "minilm" else HashingEmbedder()
            policy = GuardedPolicy(ThresholdPolicy(float(options.get("threshold", 0.78))))
            semantic = SemanticCache(embedder, policy, str(options.get("storage", "memory://")),
                                     options.get("ttl", 3600), options.get("max_entries", 10_000))
        if exact is None and semantic is None:
            return None
        waits = {k: section[k] for k in ("retry_interval", "max_retry_interval") if k in section}
        return ResponseCache(exact, semantic, cache_all=bool(section.get("cache_all", False)),
                             medium_hits=bool(section.get("medium_hits", False)), catalog=telemetry.catalog,
                             **waits)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), field="guard.cache", source=source) from None
