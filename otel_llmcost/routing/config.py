"""Reading the `routing:` section of the config file (`OTEL_LLMCOST_CONFIG`, shared with budgets).

    routing:
      substitutes: {gpt-4o: gpt-4o-mini}      # the budget engine's (used at throttle); not read here
      classifier: knn                         # heuristic (default) or knn
      examples: routing-examples.jsonl        # knn training data, relative to this file (default: shipped)
      k: 5
      upgrade: false                          # may routing pick a dearer model than requested? (no)
      default_tier: free                      # rules for a tier name not listed below (default: none)
      tiers:
        free: {allowed: [gpt-4o-mini]}
        pro: {allowed: [gpt-4o-mini, gpt-4o, claude-haiku-4-5, claude-sonnet-4-6, gemini-2.5-flash]}
        enterprise: {allowed: "*"}
      complexity:
        simple: {openai: gpt-4o-mini, anthropic: claude-haiku-4-5, gcp.gemini: gemini-2.5-flash}
        medium: {openai: gpt-4o, anthropic: claude-sonnet-4-6, gcp.gemini: gemini-2.5-pro}
        complex: {openai: requested, anthropic: requested, gcp.gemini: requested}

A key left out takes the default table's value (`table.default_table`); `tiers` and `complexity`, when
given, replace the defaults whole (a level left out of `complexity` keeps the requested model). Other
top-level sections belong to other parts and are ignored. A mistake raises `ConfigError` naming the
file, the line and the field (``llmcost.yaml:7: routing.classifier: 'nn' is not heuristic or knn``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._yaml_lines import At as _At
from .._yaml_lines import read_yaml
from ..budget.errors import ConfigError
from ..environment_variables import OTEL_LLMCOST_CONFIG
from .complexity import COMPLEXITIES, Classifier, Complexity
from .table import ALL_MODELS, RoutingTable, TierRule, default_table

if TYPE_CHECKING:
    from ..cache.embedders import Embedder

ClassifierName = Literal["heuristic", "knn"]
_KEYS = ("tiers", "complexity", "classifier", "examples", "k", "upgrade", "default_tier", "substitutes")
_NOT_OURS = ("substitutes",)  # read by the budget engine


@dataclass(frozen=True)
class RoutingConfig:
    """The routing table and the classifier choice read from a config file."""

    table: RoutingTable
    classifier: ClassifierName = "heuristic"
    examples: Path | None = None
    k: int = 5
    source: str | None = None

    def build_classifier(self, embedder: Embedder | None = None) -> Classifier:
        """The configured classifier; for knn, embeds the examples now (default embedder: MiniLM)."""
        from .classifier import HeuristicClassifier

        if self.classifier == "heuristic":
            return HeuristicClassifier()
        from .examples import default_examples, load_examples
        from .knn import KNNClassifier

        examples = load_examples(self.examples) if self.examples is not None else default_examples()
        if embedder is None:
            from ..cache.embedders import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        return KNNClassifier(embedder, examples, k=self.k)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _mapping(value: object, at: _At, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise at.error(f"expected {what}, got {_kind(value)}")
    return value


def _known_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], at: _At) -> None:
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(allowed)}"
            raise at.key(mapping, key).error(f"unknown key {key!r}{suggestion}")


# --- sections -------------------------------------------------------------------------------------------
def _tiers(value: object, at: _At) -> dict[str, TierRule]:
    section = _mapping(value, at, "a mapping of tier name: {allowed: [models]}")
    tiers: dict[str, TierRule] = {}
    for name, body in section.items():
        tier_at = at.key(section, name)
        if not isinstance(name, str) or not name:
            raise tier_at.error(f"{name!r} is not a tier name")
        spec = _mapping(body, tier_at, 'a mapping such as {allowed: [gpt-4o-mini]} or {allowed: "*"}')
        _known_keys(spec, ("allowed",), tier_at)
        if "allowed" not in spec:
            raise tier_at.error('missing \'allowed\' (a list of models, or "*" for all)')
        raw = spec["allowed"]
        allowed_at = tier_at.key(spec, "allowed")
        if raw == ALL_MODELS or raw == "all":
            allowed: tuple[str, ...] | None = None
        elif isinstance(raw, list):
            for i, model in enumerate(raw):
                if not isinstance(model, str) or not model.strip():
                    raise _At(at.source, f"{allowed_at.path}[{i}]", allowed_at.line).error(
                        f"expected a model name, got {_kind(model)}"
                    )
            allowed = tuple(model.strip() for model in raw)
        else:
            raise allowed_at.error(f'expected a list of model names or "*", got {_kind(raw)}')
        tiers[name] = TierRule(name, allowed)
    return tiers


def _complexity(value: object, at: _At) -> dict[Complexity, dict[str, str]]:
    section = _mapping(value, at, "a mapping of simple/medium/complex: {provider: model}")
    _known_keys(section, COMPLEXITIES, at)
    result: dict[Complexity, dict[str, str]] = {}
    for level in COMPLEXITIES:
        if level not in section:
            continue
        level_at = at.key(section, level)
        mapping = _mapping(section[level], level_at, "a mapping of provider: model, e.g. {openai: gpt-4o-mini}")
        result[level] = {}
        for provider, model in mapping.items():
            if not isinstance(model, str) or not model.strip():
                raise level_at.key(mapping, provider).error(f"expected a model name or 'requested', got {_kind(model)}")
            result[level][str(provider)] = model
        try:
            RoutingTable(complexity={level: result[level]})
        except ConfigError as err:
            provider = (err.field or "").removeprefix(f"complexity.{level}.")
            where = level_at.key(mapping, provider) if provider in mapping else level_at
            raise where.error(err.message) from None
    return result


def parse_routing_config(data: Mapping[str, Any] | None, source: str | None = None) -> RoutingConfig:
    """A `RoutingConfig` from the whole parsed config document (only `routing:` is read)."""
    base = default_table()
    if data is None:
        return RoutingConfig(base, source=source)
    top_at = _At(source, "", getattr(data, "line", None))
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {_kind(data)}", source=source)
    if data.get("routing") is None:
        return RoutingConfig(base, source=source)
    at = _At(source, "routing", top_at.key(data, "routing").line)
    section = _mapping(data["routing"], at, "a mapping")
    _known_keys(section, _KEYS, at)

    tiers = _tiers(section["tiers"], at.key(section, "tiers")) if "tiers" in section else dict(base.tiers)
    complexity = (
        _complexity(section["complexity"], at.key(section, "complexity"))
        if "complexity" in section
        else {level: dict(mapping) for level, mapping in base.complexity.items()}
    )
    default_tier = section.get("default_tier")
    if default_tier is not None and (not isinstance(default_tier, str) or default_tier not in tiers):
        raise at.key(section, "default_tier").error(
            f"{default_tier!r} is not one of the tiers ({', '.join(tiers) or 'none defined'})"
        )
    upgrade = section.get("upgrade", False)
    if not isinstance(upgrade, bool):
        raise at.key(section, "upgrade").error(f"expected true or false, got {_kind(upgrade)}")

    classifier = section.get("classifier", "heuristic")
    if classifier not in ("heuristic", "knn"):
        raise at.key(section, "classifier").error(f"{classifier!r} is not heuristic or knn")
    k = section.get("k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise at.key(section, "k").error(f"expected a whole number >= 1, got {_kind(k)}")
    examples: Path | None = None
    if section.get("examples") is not None:
        raw = section["examples"]
        if not isinstance(raw, str) or not raw.strip():
            raise at.key(section, "examples").error(f"expected the path of a JSONL file, got {_kind(raw)}")
        examples = Path(raw.strip()).expanduser()
        if not examples.is_absolute() and source is not None:
            examples = Path(source).resolve().parent / examples

    table = RoutingTable(tiers=tiers, complexity=complexity, default_tier=default_tier, upgrade=upgrade)
    return RoutingConfig(table, classifier, examples, k, source)


def load_routing_config(path: str | os.PathLike[str] | None = None) -> RoutingConfig:
    """Read the config file at `path` (default `$OTEL_LLMCOST_CONFIG`; neither: the default table)."""
    if path is None:
        path = os.environ.get(OTEL_LLMCOST_CONFIG) or None
        if path is None:
            return RoutingConfig(default_table())
    source = str(path)
    data = read_yaml(path)
    return parse_routing_config(data, source)
