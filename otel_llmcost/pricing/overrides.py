"""User price file: fine-tunes, negotiated and self-hosted prices, and model aliases.

A price we cannot trust is worse than none, so the loader refuses anything odd with an error that names
the file, the line and the field: a silently ignored typo would price every call at the wrong rate.

```yaml
aliases:                      # deployment or proxy names -> a model the catalog knows
  prod-gpt4o: {model: gpt-4o, provider: openai}
  my-haiku: claude-haiku-4-5  # provider optional
models:                       # prices per million tokens, USD
  - model: ft:gpt-4o-mini:acme::abc123
    provider: openai          # optional; matches any provider when left out
    input_mtok: 0.30
    output_mtok: 1.20
    cache_read_mtok: 0.15     # optional: cache_read_mtok, cache_write_mtok, cache_write_1h_mtok
  - match: {prefix: "llama-3.1-70b"}    # or {regex: "..."}
    input_mtok: 0.0
    output_mtok: 0.0          # self-hosted: a known zero, not an unknown price
batch:                        # multiplier on the standard price for batch jobs, per provider
  openai: 0.5
```
JSON with the same structure works too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from ..errors import PriceFileError

PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
_MODEL_KEYS = {"model", "match", "provider", *PRICE_KEYS}


@dataclass(frozen=True)
class Alias:
    model: str
    provider: str | None


@dataclass(frozen=True)
class PriceRule:
    """Prices for the models one rule matches; `where` says which file line it came from."""

    prices: Mapping[str, Decimal]
    provider: str | None
    exact: str | None = None
    prefix: str | None = None
    pattern: re.Pattern[str] | None = None
    where: str = ""

    def matches(self, model: str, provider: str | None) -> bool:
        if self.provider is not None and provider is not None and self.provider != provider:
            return False
        if self.exact is not None:
            return model == self.exact
        if self.prefix is not None:
            return model.startswith(self.prefix)
        return self.pattern is not None and self.pattern.fullmatch(model) is not None


@dataclass(frozen=True)
class PriceOverrides:
    """Everything a price file says; empty when there is no file."""

    aliases: Mapping[str, Alias] = field(default_factory=dict)
    rules: tuple[PriceRule, ...] = ()
    batch: Mapping[str, Decimal] = field(default_factory=dict)
    source: str = ""

    def find(self, model: str, provider: str | None) -> PriceRule | None:
        for rule in self.rules:
            if rule.matches(model, provider):
                return rule
        return None


class _Located:
    """A parsed value together with the line it started on, for error messages."""

    __slots__ = ("value", "line")

    def __init__(self, value: Any, line: int) -> None:
        self.value = value
        self.line = line


_MAX_NODES = 100_000
"""Values a price file may hold once YAML aliases are expanded: real files hold hundreds; an alias bomb
(a few lines that expand to billions of values) must end in an error, not in a hang."""


class _Walker:
    """Turns YAML nodes into `_Located` values, refusing recursive aliases and alias bombs."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = 0
        self.open: set[int] = set()
        self.scalars = yaml.constructor.SafeConstructor()  # one per file: it caches what it built

    def walk(self, node: yaml.Node) -> _Located:
        line = node.start_mark.line + 1
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise PriceFileError(f"{self.source} line {line}: more than {_MAX_NODES} values once YAML aliases "
                                 "are expanded; a price file is a list of models, write it out plainly")
        if isinstance(node, yaml.ScalarNode):
            return _Located(self.scalars.construct_object(node), line)
        if id(node) in self.open:
            raise PriceFileError(f"{self.source} line {line}: a YAML alias refers to the value that contains "
                                 "it (a recursive anchor); write the values out")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                out: dict[str, _Located] = {}
                for key_node, value_node in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        raise PriceFileError(f"{self.source} line {key_node.start_mark.line + 1}: a key must be "
                                             "a plain name, not a list or a mapping")
                    out[str(self.scalars.construct_object(key_node))] = self.walk(value_node)
                return _Located(out, line)
            return _Located([self.walk(item) for item in node.value], line)
        finally:
            self.open.discard(id(node))


def _decimal(item: _Located, where: str) -> Decimal:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PriceFileError(f"{where}: {value!r} is not a price in USD per million tokens")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PriceFileError(f"{where}: {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise PriceFileError(f"{where}: {value!r} must be a finite price of 0 or more")
    return price


def _text(item: _Located, where: str) -> str:
    if not isinstance(item.value, str) or not item.value.strip():
        raise PriceFileError(f"{where}: expected a non-empty string, got {item.value!r}")
    return item.value.strip()


def load_price_file(path: str | Path) -> PriceOverrides:
    """Read and validate a YAML or JSON price file; raise `PriceFileError` naming line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"price file {path}: cannot be read ({exc.strerror or exc})") from exc
    return parse_price_text(text, str(path))


def parse_price_text(text: str, source: str = "<prices>") -> PriceOverrides:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return PriceOverrides(source=source)
        root = _Walker(source).walk(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise PriceFileError(f"{source}{at}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise PriceFileError(f"{source}: nested too deeply to be a price file") from None
    if not isinstance(root.value, dict):
        raise PriceFileError(f"{source} line {root.line}: the top level must be a mapping with "
                             "'models', 'aliases' and/or 'batch'")
    unknown = set(root.value) - {"models", "aliases", "batch"}
    if unknown:
        key = sorted(unknown)[0]
        raise PriceFileError(f"{source} line {root.value[key].line}: unknown section {key!r}; "
                             "expected 'models', 'aliases' or 'batch'")
    aliases = _aliases(root.value.get("aliases"), source)
    rules = _rules(root.value.get("models"), source)
    batch = _batch(root.value.get("batch"), source)
    return PriceOverrides(aliases=aliases, rules=rules, batch=batch, source=source)


def _aliases(section: _Located | None, source: str) -> dict[str, Alias]:
    if section is None or section.value is None:
        return {}
    if not isinstance(section.value, dict):
        raise PriceFileError(f"{source} line {section.line}: 'aliases' must map a name to a model")
    out: dict[str, Alias] = {}
    for name, item in section.value.items():
        where = f"{source} line {item.line}: aliases.{name}"
        if isinstance(item.value, str):
            out[name] = Alias(_text(item, where), None)
        elif isinstance(item.value, dict):
            extra = set(item.value) - {"model", "provider"}
            if extra or "model" not in item.value:
                raise PriceFileError(f"{where}: expected {{model: ..., provider: ...}}")
            provider = item.value.get("provider")
            out[name] = Alias(_text(item.value["model"], where + ".model"),
                              _text(provider, where + ".provider") if provider is not None else None)
        else:
            raise PriceFileError(f"{where}: expected a model name or {{model, provider}}")
    return out


def _rules(section: _Located | None, source: str) -> tuple[PriceRule, ...]:
    if section is None or section.value is None:
        return ()
    if not isinstance(section.value, list):
        raise PriceFileError(f"{source} line {section.line}: 'models' must be a list of price entries")
    rules = []
    for index, item in enumerate(section.value):
        where = f"{source} line {item.line}: models[{index}]"
        if not isinstance(item.value, dict):
            raise PriceFileError(f"{where}: expected a mapping with 'model' and prices")
        entry: dict[str, _Located] = item.value
        unknown = set(entry) - _MODEL_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise PriceFileError(f"{source} line {entry[key].line}: models[{index}].{key} is not a known field; "
                                 f"prices are {', '.join(PRICE_KEYS)}")
        prices = {key: _decimal(entry[key], f"{source} line {entry[key].line}: models[{index}].{key}")
                  for key in PRICE_KEYS if key in entry}
        for required in ("input_mtok", "output_mtok"):
            if required not in prices:
                raise PriceFileError(f"{where}: {required} is missing; give 0 for a free model, "
                                     "never leave a price out")
        provider = _text(entry["provider"], f"{where}.provider") if "provider" in entry else None
        if ("model" in entry) == ("match" in entry):
            raise PriceFileError(f"{where}: give exactly one of 'model' (exact name) or 'match' (prefix/regex)")
        if "model" in entry:
            rules.append(PriceRule(prices, provider, exact=_text(entry["model"], f"{where}.model"), where=where))
            continue
        match = entry["match"]
        if not isinstance(match.value, dict) or len(match.value) != 1 or set(match.value) - {"prefix", "regex"}:
            raise PriceFileError(f"{source} line {match.line}: models[{index}].match must be "
                                 "{prefix: ...} or {regex: ...}")
        kind, value = next(iter(match.value.items()))
        text = _text(value, f"{where}.match.{kind}")
        if kind == "prefix":
            rules.append(PriceRule(prices, provider, prefix=text, where=where))
        else:
            try:
                pattern = re.compile(text)
            except re.error as exc:
                raise PriceFileError(f"{source} line {value.line}: models[{index}].match.regex: {exc}") from None
            rules.append(PriceRule(prices, provider, pattern=pattern, where=where))
    return tuple(rules)


def _batch(section: _Located | None, source: str) -> dict[str, Decimal]:
    if section is None or section.value is None:
        return {}
    if not isinstance(section.value, dict):
        raise PriceFileError(f"{source} line {section.line}: 'batch' must map a provider to a multiplier")
    out = {}
    for provider, item in section.value.items():
        multiplier = _decimal(item, f"{source} line {item.line}: batch.{provider}")
        if multiplier > 1:
            raise PriceFileError(f"{source} line {item.line}: batch.{provider}={multiplier} is a surcharge; "
                                 "a batch multiplier is between 0 and 1")
        out[provider] = multiplier
    return out
