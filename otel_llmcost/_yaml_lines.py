"""YAML that remembers where each key and item came from, so config errors name the file, line and field.

Shared by the config loaders (budgets, routing): `read_yaml` turns every way a file can fail to load —
unreadable, not YAML, a duplicate key, nesting deep enough to exhaust the stack, an alias that contains
itself — into one `ConfigError` naming the file; `At` walks the document and makes errors that name the
dotted field and its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from .budget.errors import ConfigError

T = TypeVar("T")


class YMap(dict):  # type: ignore[type-arg, unused-ignore]
    """A mapping read from YAML that remembers its own line and each key's line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.key_lines: dict[Any, int] = {}


class YList(list):  # type: ignore[type-arg, unused-ignore]
    """A sequence read from YAML that remembers the line of itself and of each item."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line: int | None = None
        self.item_lines: list[int] = []


class LineLoader(yaml.SafeLoader):
    """Safe YAML whose mappings and sequences remember their lines; duplicate keys are errors."""


class DecimalLineLoader(LineLoader):
    """`LineLoader` that reads numbers with a fraction as Decimal (money is never a binary float)."""


def _config_error() -> type[ConfigError]:
    # Imported when first needed: the budget package imports this module while it loads.
    from .budget.errors import ConfigError

    return ConfigError


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> YMap:
    ConfigError = _config_error()  # noqa: N806
    loader.flatten_mapping(node)
    result = YMap()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool, Decimal)) and key is not None:
            raise ConfigError(f"{key!r} cannot be a key", line=line)
        if key in result:
            raise ConfigError(f"key {key!r} appears twice (first on line {result.key_lines[key]})", line=line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> YList:
    result = YList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_decimal(loader: LineLoader, node: yaml.ScalarNode) -> object:
    try:
        return Decimal(str(node.value).replace("_", ""))
    except InvalidOperation:
        return loader.construct_yaml_float(node)  # .inf, .nan: rejected later as not finite


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
DecimalLineLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def read_yaml(path: str | os.PathLike[str], loader: type[LineLoader] = LineLoader) -> Any:
    """The document in `path`, or a `ConfigError` naming the file (and the line where YAML knows it)."""
    ConfigError = _config_error()  # noqa: N806
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror or exc}", source=source) from exc
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(err.message, field=err.field, line=err.line, source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem = f"{problem} ({context} started on line {context_mark.line + 1})"
        raise ConfigError(
            f"not valid YAML: {problem}", line=mark.line + 1 if mark else None, source=source
        ) from None
    except RecursionError:
        raise ConfigError("nested too deeply (or a YAML alias that contains itself)", source=source) from None


class At:
    """A position in the config: dotted field path, line, source; makes errors that name all three."""

    def __init__(self, source: str | None, path: str = "", line: int | None = None) -> None:
        self.source, self.path, self.line = source, path, line

    def key(self, mapping: Mapping[Any, Any], key: Any) -> At:
        line = mapping.key_lines.get(key) if isinstance(mapping, YMap) else None
        return At(self.source, f"{self.path}.{key}" if self.path else str(key), line or self.line)

    def item(self, seq: Any, index: int) -> At:
        line = seq.item_lines[index] if isinstance(seq, YList) else None
        return At(self.source, f"{self.path}[{index}]", line or self.line)

    def error(self, message: str) -> ConfigError:
        return _config_error()(message, field=self.path or None, line=self.line, source=self.source)

    def build(self, node: object, make: Callable[[], T]) -> T:
        """Run a dataclass constructor; its ConfigError is re-aimed at the field inside `node`."""
        try:
            return make()
        except _config_error() as err:
            if err.source is not None:
                raise
            raise self._rebase(err, node) from None

    def _rebase(self, err: ConfigError, node: object) -> ConfigError:
        line, current = self.line, node
        relative = err.field or ""
        for token in re.findall(r"\[\d+\]|[^.\[\]]+", relative):
            if token.startswith("["):
                index = int(token[1:-1])
                if not isinstance(current, YList) or index >= len(current):
                    break
                line, current = current.item_lines[index], current[index]
            else:
                if not isinstance(current, YMap) or token not in current:
                    break
                line, current = current.key_lines[token], current[token]
        path = ".".join(p for p in (self.path, relative) if p).replace(".[", "[")
        return _config_error()(err.message, field=path or None, line=line, source=self.source)
