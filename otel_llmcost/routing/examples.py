"""Labelled example queries (JSONL): what the kNN classifier learns from and route-eval scores against.

One JSON object a line: ``{"text": "...", "label": "simple|medium|complex"}``, optionally
``"prompt_tokens"`` (the whole prompt's size, for cost estimates) and any other keys (kept out of the way,
e.g. ``"domain"``). Blank lines are skipped. A malformed line raises `ConfigError` naming the file, the
line and the field. The package ships a default set (`default_examples`), written and labelled by the
project; labelling rules are in `complexity.Complexity`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..budget.errors import ConfigError
from .complexity import Complexity, parse_complexity

DEFAULT_EXAMPLES_RESOURCE = "data/examples.jsonl"


@dataclass(frozen=True)
class LabelledExample:
    """One query and its complexity label."""

    text: str
    label: Complexity
    prompt_tokens: int | None = None
    domain: str | None = None


def parse_examples(lines: Iterable[str], source: str | None = None) -> list[LabelledExample]:
    """Examples from JSONL lines; ConfigError (with line and field) on the first malformed one."""
    examples: list[LabelledExample] = []
    seen: dict[str, tuple[Complexity, int]] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc.msg} (column {exc.colno})", line=number, source=source) from None
        if not isinstance(item, dict):
            raise ConfigError(
                f'expected an object such as {{"text": "...", "label": "simple"}}, got {type(item).__name__}',
                line=number,
                source=source,
            )
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"expected a non-empty string, got {text!r}", field="text", line=number, source=source)
        if "label" not in item:
            raise ConfigError("missing; use simple, medium or complex", field="label", line=number, source=source)
        try:
            label = parse_complexity(item["label"])
        except ValueError as exc:
            raise ConfigError(str(exc), field="label", line=number, source=source) from None
        tokens = item.get("prompt_tokens")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
            raise ConfigError(
                f"expected a whole number of tokens, got {tokens!r}", field="prompt_tokens", line=number, source=source
            )
        domain = item.get("domain")
        key = " ".join(text.lower().split())
        if key in seen and seen[key][0] != label:
            first_label, first_line = seen[key]
            raise ConfigError(
                f"the same text is labelled {first_label} on line {first_line} and {label} here",
                field="label",
                line=number,
                source=source,
            )
        seen.setdefault(key, (label, number))
        examples.append(
            LabelledExample(text=text, label=label, prompt_tokens=tokens, domain=domain if isinstance(domain, str) else None)
        )
    if not examples:
        raise ConfigError("no labelled examples found", source=source)
    return examples


def load_examples(path: str | os.PathLike[str]) -> list[LabelledExample]:
    """Examples from a JSONL file; ConfigError if it cannot be read or a line is malformed."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the examples file: {exc.strerror or exc}", source=source) from exc
    return parse_examples(text.splitlines(), source)


def default_examples() -> list[LabelledExample]:
    """The labelled examples shipped with the package (customer support, coding, analysis, small talk)."""
    resource = resources.files(__package__).joinpath(DEFAULT_EXAMPLES_RESOURCE)
    return parse_examples(resource.read_text(encoding="utf-8").splitlines(), f"otel_llmcost.routing:{DEFAULT_EXAMPLES_RESOURCE}")
