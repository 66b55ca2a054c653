"""`otel-llmcost route-eval`: what a router would do to your traffic, and what it would trade.

    otel-llmcost route-eval LABELLED.jsonl [--classifier heuristic|knn] [--train TRAIN.jsonl]
                            [--tier pro] [--model gpt-4o] [--config llmcost.yaml]

It classifies every labelled query, routes it as a call to `--model` for `--tier`, and prints the
classifier's accuracy, precision and recall per class, the confusion matrix, how many queries went to
a cheaper model than their label says they need (the quality you trade), the share routed to each
model, and the estimated cost against sending everything to the requested model. Cost estimates use
each query's `prompt_tokens` when the file has it, else ~4 characters a token, and an assumed output
length per labelled complexity (printed with the result). Progress goes to stderr, results to stdout.
Judge a classifier on queries it was not trained on: a kNN trained on the file it is scored on is
right by construction, and route-eval warns when the two files share queries.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..budget.errors import ConfigError
from .complexity import COMPLEXITIES, Classifier, Complexity, rank
from .examples import LabelledExample, default_examples, load_examples
from .router import RouteDecision, Router, RouteRequest
from .table import model_family

if TYPE_CHECKING:
    from ..cache.embedders import Embedder
    from ..pricing import PriceCatalog

DEFAULT_OUTPUT_TOKENS: dict[Complexity, int] = {"simple": 150, "medium": 400, "complex": 800}
"""Output tokens assumed per labelled complexity for the cost estimate."""

_CHUNK = 64
_PROGRESS_FROM = 200


@dataclass(frozen=True)
class Evaluation:
    """One route-eval run: the labels, the predictions and the routing decisions, in file order."""

    examples: list[LabelledExample]
    predicted: list[Complexity]
    decisions: list[RouteDecision]

    @property
    def correct(self) -> int:
        return sum(e.label == p for e, p in zip(self.examples, self.predicted, strict=True))

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.examples) if self.examples else 0.0

    def confusion(self) -> dict[tuple[Complexity, Complexity], int]:
        """(label, predicted) → count."""
        counts = Counter(zip((e.label for e in self.examples), self.predicted, strict=True))
        return {(a, b): counts.get((a, b), 0) for a in COMPLEXITIES for b in COMPLEXITIES}

    def precision(self, level: Complexity) -> float | None:
        predicted = sum(p == level for p in self.predicted)
        if not predicted:
            return None
        return sum(e.label == p == level for e, p in zip(self.examples, self.predicted, strict=True)) / predicted

    def recall(self, level: Complexity) -> float | None:
        actual = sum(e.label == level for e in self.examples)
        if not actual:
            return None
        return sum(e.label == p == level for e, p in zip(self.examples, self.predicted, strict=True)) / actual


def evaluate(
    router: Router, examples: Sequence[LabelledExample], model: str, provider: str, tier: str | None,
    progress: TextIO | None = None,
) -> Evaluation:
    """Classify and route every example as a call to `model` on `provider` for `tier`."""
    predicted: list[Complexity] = []
    total = len(examples)
    for start in range(0, total, _CHUNK):
        chunk = examples[start : start + _CHUNK]
        predicted.extend(router.classifier.classify_batch([e.text for e in chunk]))
        if progress is not None and total >= _PROGRESS_FROM:
            print(f"route-eval: classified {len(predicted)}/{total}", file=progress, flush=True)
    decisions = [
        router.route(RouteRequest(model, provider, e.text, e.prompt_tokens), tier, complexity=level)
        for e, level in zip(examples, predicted, strict=True)
    ]
    return Evaluation(list(examples), predicted, decisions)


def input_tokens(example: LabelledExample) -> int:
    """The example's prompt size: its `prompt_tokens`, else ~4 characters a token."""
    from ..pricing.estimate import estimate_tokens

    return example.prompt_tokens if example.prompt_tokens is not None else estimate_tokens(len(example.text))


def report(
    result: Evaluation,
    *,
    name: str,
    classifier: str,
    model: str,
    provider: str,
    tier: str | None,
    catalog: PriceCatalog,
    output_tokens: dict[Complexity, int] = DEFAULT_OUTPUT_TOKENS,
) -> str:
    """The route-eval text: accuracy, per-class scores, confusion, routing shares, cost change."""
    from ..pricing import UnknownPriceError, Usage

    n = len(result.examples)
    lines = [
        f"route-eval: {n} labelled queries from {name}",
        f"classifier: {classifier}; tier: {tier or '(none)'}; requested model: {model} ({provider})",
        "",
        f"accuracy: {result.accuracy:.3f} ({result.correct}/{n})",
        "",
        f"{'class':<9}{'precision':>10}{'recall':>8}{'support':>9}",
    ]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for level in COMPLEXITIES:
        support = sum(e.label == level for e in result.examples)
        lines.append(f"{level:<9}{fmt(result.precision(level)):>10}{fmt(result.recall(level)):>8}{support:>9}")
    lines += ["", "confusion (rows: label, columns: predicted)", f"{'label':<9}" + "".join(f"{c:>9}" for c in COMPLEXITIES)]
    confusion = result.confusion()
    for label in COMPLEXITIES:
        lines.append(f"{label:<9}" + "".join(f"{confusion[(label, p)]:>9}" for p in COMPLEXITIES))
    under = sum(rank(p) < rank(e.label) for e, p in zip(result.examples, result.predicted, strict=True))
    over = sum(rank(p) > rank(e.label) for e, p in zip(result.examples, result.predicted, strict=True))
    lines += [
        "",
        f"under-classified (below the label: may get a weaker model than it needs): {under} ({_share(under, n)})",
        f"over-classified (above the label: may cost more than it needs): {over} ({_share(over, n)})",
    ]

    routed = Counter(d.model for d in result.decisions if d.allowed)
    refused = sum(not d.allowed for d in result.decisions)
    lines += ["", "routed to", f"{'model':<24}{'queries':>8}{'share':>8}"]
    for routed_model, count in sorted(routed.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"{routed_model:<24}{count:>8}{_share(count, n):>8}")
    if refused:
        lines.append(f"{'(not allowed for tier)':<24}{refused:>8}{_share(refused, n):>8}")

    assumed = ", ".join(f"{level} {output_tokens[level]}" for level in COMPLEXITIES)
    lines += [
        "",
        "estimated cost (input: prompt_tokens, else ~4 characters a token; output assumed by labelled "
        f"complexity: {assumed} tokens)",
    ]
    baseline = routed_cost = Decimal(0)
    unpriced: set[str] = set()
    priced = 0
    for example, decision in zip(result.examples, result.decisions, strict=True):
        usage = Usage(input_tokens=input_tokens(example), output_tokens=output_tokens[example.label])
        try:
            before = catalog.cost(usage, model, provider).total
            after = catalog.cost(usage, decision.model, provider).total
        except UnknownPriceError:
            unpriced.add(decision.model)
            try:
                catalog.prices(model, provider)
            except UnknownPriceError:
                unpriced.add(model)
            continue
        baseline += before
        routed_cost += after
        priced += 1
    if not priced:
        lines.append(f"unknown: no price for {', '.join(sorted(unpriced))}")
        return "\n".join(lines) + "\n"
    if unpriced:
        lines.append(f"({n - priced} queries left out: no price for {', '.join(sorted(unpriced))})")
    lines.append(f"{'always ' + model + ':':<24}${baseline:.6f}")
    lines.append(f"{'routed:':<24}${routed_cost:.6f}")
    difference = routed_cost - baseline
    change = f"{difference / baseline * 100:+.1f}%" if baseline else "-"
    lines.append(f"{'change:':<24}{change} (${difference:+.6f})")
    return "\n".join(lines) + "\n"


def _share(count: int, total: int) -> str:
    return f"{count / total * 100:.1f}%" if total else "-"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-llmcost route-eval",
        description="Score a routing classifier on labelled queries and show what routing would cost and trade.",
    )
    parser.add_argument("labelled", type=Path, help='JSONL of {"text": ..., "label": "simple|medium|complex"}')
    parser.add_argument("--classifier", choices=("heuristic", "knn"), default=None,
                        help="default: the config's routing.classifier, else heuristic")
    parser.add_argument("--train", type=Path, default=None,
                        help="knn training examples (default: the config's routing.examples, else the shipped set)")
    parser.add_argument("--k", type=int, default=None, help="knn neighbours (default 5)")
    parser.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm",
                        help="knn sentence embedder (default minilm; hashing needs no model but is weak)")
    parser.add_argument("--tier", default=None, help="route as this tier (default: no tier restriction)")
    parser.add_argument("--model", default="gpt-4o", help="the model every call asks for (default gpt-4o)")
    parser.add_argument("--provider", default=None, help="gen_ai.provider.name (default: from the model name)")
    parser.add_argument("--config", type=Path, default=None,
                        help="config file with a routing: section (default $OTEL_LLMCOST_CONFIG, else the built-in table)")
    parser.add_argument("--prices-file", default=None, help="price file with overrides (default $OTEL_LLMCOST_PRICES_FILE)")
    return parser


def main(argv: Sequence[str] | None = None, *, embedder: Embedder | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run route-eval; 0 on success, 2 on a usage or input error (printed to stderr)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    args = build_parser().parse_args(argv)
    from ..errors import PriceFileError
    from ..pricing import load_catalog
    from .config import load_routing_config

    try:
        config = load_routing_config(args.config)
        examples = load_examples(args.labelled)
        catalog = load_catalog(args.prices_file)
        provider = args.provider or model_family(args.model)
        if provider is None:
            raise ValueError(f"cannot tell the provider of {args.model!r}; pass --provider")
        classifier_name = args.classifier or config.classifier
        classifier: Classifier
        if classifier_name == "knn":
            train_path = args.train or config.examples
            train = load_examples(train_path) if train_path is not None else default_examples()
            _warn_overlap(train, examples, args.labelled, err)
            if embedder is None:
                embedder = _embedder(args.embedder)
            from .knn import KNNClassifier

            print(f"route-eval: embedding {len(train)} training examples ({args.embedder})", file=err, flush=True)
            k = args.k if args.k is not None else config.k
            classifier = KNNClassifier(embedder, train, k=k)
            classifier_label = f"knn (k={classifier.k}, {len(train)} training examples, {args.embedder})"
        else:
            from .classifier import HeuristicClassifier

            classifier = HeuristicClassifier()
            classifier_label = "heuristic"
        router = Router(config.table, classifier, prices=catalog)
        result = evaluate(router, examples, args.model, provider, args.tier, progress=err)
    except (ConfigError, PriceFileError, ValueError, ImportError) as exc:
        print(f"otel-llmcost route-eval: {exc}", file=err)
        return 2
    out.write(report(result, name=args.labelled.name, classifier=classifier_label, model=args.model,
                     provider=provider, tier=args.tier, catalog=catalog))
    return 0


def _embedder(name: str) -> Embedder:
    from ..cache.embedders import HashingEmbedder, MiniLMEmbedder

    if name == "hashing":
        return HashingEmbedder()
    return MiniLMEmbedder()


def _warn_overlap(train: Sequence[LabelledExample], test: Sequence[LabelledExample], name: os.PathLike[str] | str,
                  err: TextIO) -> None:
    seen = {" ".join(e.text.lower().split()) for e in train}
    shared = sum(" ".join(e.text.lower().split()) in seen for e in test)
    if shared:
        print(f"route-eval: warning: {shared} of {len(test)} queries in {name} are also training examples; "
              "accuracy on them says little", file=err)


if __name__ == "__main__":
    sys.exit(main())
