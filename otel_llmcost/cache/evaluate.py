"""Measure a semantic-cache hit policy on labelled prompt pairs.

A labelled file is JSON Lines, one pair per line::

    {"a": "Cancel my subscription", "b": "Don't cancel my subscription",
     "same_answer": false, "category": "negation"}

``a`` plays the cached prompt, ``b`` the new one. For each pair the embedder gives the
cosine similarity and the policy decides hit or miss. The report gives the *hit rate*
(share of ``same_answer: true`` pairs served from cache), the *false-hit rate* (share of
``same_answer: false`` pairs served: a wrong answer), both per category, and the lowest
threshold whose false-hit rate stays within a target, with its hit rate. That threshold is
picked on the very pairs it is scored on, so it is optimistic: confirm it on pairs you did
not tune on.

Command line (``otel-llmcost cache-eval`` calls :func:`main`)::

    otel-llmcost cache-eval PAIRS.jsonl [--threshold T] [--target-false-hit 0.02]
                            [--embedder minilm|hashing] [--policy guarded|threshold]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .embedders import Embedder
from .policy import (
    DEFAULT_GUARDED_HIGH,
    DEFAULT_HIGH,
    Decision,
    GuardedPolicy,
    HitPolicy,
    ThresholdPolicy,
)

__all__ = [
    "Pair",
    "PairResult",
    "CategoryStats",
    "ThresholdChoice",
    "Report",
    "PairsFileError",
    "load_pairs",
    "similarities",
    "evaluate",
    "best_threshold",
    "main",
]

ProgressFn = Callable[[int, int], None]


class PairsFileError(ValueError):
    """A labelled-pairs file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    """Two prompts and whether one's answer serves the other."""

    a: str
    b: str
    same_answer: bool
    category: str = "-"


@dataclass(frozen=True)
class PairResult:
    pair: Pair
    similarity: float
    decision: Decision

    @property
    def served(self) -> bool:
        return self.decision.hit


@dataclass(frozen=True)
class CategoryStats:
    """``served`` of ``n`` pairs; for same-answer categories that is hits, otherwise false hits."""

    n: int
    served: int
    same_answer: int  # how many of the n pairs are same-answer

    @property
    def rate(self) -> float:
        return self.served / self.n if self.n else float("nan")

    @property
    def kind(self) -> str:
        if self.same_answer == self.n:
            return "hits"
        if self.same_answer == 0:
            return "false hits"
        return "served"


@dataclass(frozen=True)
class ThresholdChoice:
    """The lowest threshold whose false-hit rate is within the target, and what it gives."""

    threshold: float
    hit_rate: float
    false_hit_rate: float
    target: float


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass
class Report:
    """Results of one policy on one labelled set."""

    results: list[PairResult]
    policy: str = ""
    embedder: str = ""
    threshold: float | None = None
    best: ThresholdChoice | None = None
    target_false_hit: float | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_same(self) -> int:
        return sum(r.pair.same_answer for r in self.results)

    @property
    def n_different(self) -> int:
        return sum(not r.pair.same_answer for r in self.results)

    @property
    def hits(self) -> int:
        return sum(r.served for r in self.results if r.pair.same_answer)

    @property
    def false_hits(self) -> int:
        return sum(r.served for r in self.results if not r.pair.same_answer)

    @property
    def hit_rate(self) -> float:
        """Share of same-answer pairs served from cache."""
        return _rate(self.hits, self.n_same)

    @property
    def false_hit_rate(self) -> float:
        """Share of different-answer pairs served from cache (wrong answers)."""
        return _rate(self.false_hits, self.n_different)

    def by_category(self) -> dict[str, CategoryStats]:
        """Per category, in first-seen order."""
        counts: dict[str, list[int]] = {}
        for r in self.results:
            c = counts.setdefault(r.pair.category, [0, 0, 0])
            c[0] += 1
            c[1] += int(r.served)
            c[2] += int(r.pair.same_answer)
        return {k: CategoryStats(n, s, same) for k, (n, s, same) in counts.items()}

    def reasons(self) -> dict[str, int]:
        """How often each decision reason occurred (guard detail in parentheses dropped)."""
        out: dict[str, int] = {}
        for r in self.results:
            key = r.decision.reason.split(" (")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "embedder": self.embedder,
            "threshold": self.threshold,
            "pairs": len(self.results),
            "hit_rate": self.hit_rate,
            "false_hit_rate": self.false_hit_rate,
            "by_category": {k: {"n": v.n, "served": v.served, "rate": v.rate, "kind": v.kind}
                            for k, v in self.by_category().items()},
            "best": None if self.best is None else {
                "threshold": self.best.threshold, "hit_rate": self.best.hit_rate,
                "false_hit_rate": self.best.false_hit_rate, "target": self.best.target},
            "target_false_hit": self.target_false_hit,
        }

    def format(self) -> str:
        lines = [f"{len(self.results)} pairs ({self.n_same} same-answer, {self.n_different} different-answer)"]
        if self.policy:
            lines.append(f"policy:   {self.policy}")
        if self.embedder:
            lines.append(f"embedder: {self.embedder}")
        lines += [
            "",
            f"hit rate (same-answer pairs served)         {self.hit_rate:7.1%}  ({self.hits}/{self.n_same})",
            f"false-hit rate (different-answer served)    {self.false_hit_rate:7.1%}  "
            f"({self.false_hits}/{self.n_different})",
            "",
            "per category:",
        ]
        cats = self.by_category()
        width = max([len(c) for c in cats] + [8])
        for name, st in sorted(cats.items(), key=lambda kv: (kv[1].kind != "hits", kv[0])):
            lines.append(f"  {name:<{width}}  {st.kind:<10} {st.rate:7.1%}  ({st.served}/{st.n})")
        if self.target_false_hit is not None:
            lines.append("")
            if self.best is None:
                lines.append(f"no threshold keeps false hits within {self.target_false_hit:.1%}")
            else:
                b = self.best
                lines.append(
                    f"lowest threshold with false hits <= {b.target:.1%}: {b.threshold:.4f} -> hit rate "
                    f"{b.hit_rate:.1%}, false-hit rate {b.false_hit_rate:.1%} (picked on these pairs: optimistic)"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _parse_pair(obj: Any, where: str) -> Pair:
    if not isinstance(obj, dict):
        raise PairsFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("a", "b"):
        if key not in obj:
            raise PairsFileError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise PairsFileError(f"{where}: field {key!r} must be a non-empty string")
    if "same_answer" not in obj:
        raise PairsFileError(f"{where}: missing field 'same_answer'")
    if not isinstance(obj["same_answer"], bool):
        raise PairsFileError(f"{where}: field 'same_answer' must be true or false, got {obj['same_answer']!r}")
    category = obj.get("category", "-")
    if not isinstance(category, str) or not category:
        raise PairsFileError(f"{where}: field 'category' must be a non-empty string")
    return Pair(obj["a"], obj["b"], obj["same_answer"], category)


def load_pairs(source: str | Path | Iterable[str]) -> list[Pair]:
    """Read labelled pairs from a JSON Lines file (or an iterable of lines). Blank lines are
    skipped; any other line that is not a valid pair raises :class:`PairsFileError` naming
    the line."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PairsFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise PairsFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        name, lines = str(path), text.splitlines()
    else:
        name, lines = "<pairs>", list(source)
    pairs: list[Pair] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsFileError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        pairs.append(_parse_pair(obj, where))
    if not pairs:
        raise PairsFileError(f"{name}: no pairs")
    return pairs


def similarities(
    pairs: Sequence[Pair],
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Cosine similarity of each pair, rounded to 6 decimals (each distinct text embedded once,
    in batches)."""
    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    index = {t: i for i, t in enumerate(texts)}
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    done = 0
    if progress:
        progress(0, len(texts))
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        out = np.asarray(embedder.embed(chunk), dtype=np.float32)
        if out.shape != (len(chunk), embedder.dim):
            raise ValueError(f"embedder returned shape {out.shape}, expected {(len(chunk), embedder.dim)}")
        if vectors.shape[1] != out.shape[1]:  # an embedder that learnt its dim on first call
            vectors = np.zeros((len(texts), out.shape[1]), dtype=np.float32)
        vectors[start : start + len(chunk)] = out
        done += len(chunk)
        if progress:
            progress(done, len(texts))
    a = vectors[[index[p.a] for p in pairs]]
    b = vectors[[index[p.b] for p in pairs]]
    # Rounded to 1e-6: below that float32 dot products of equal texts differ by noise alone.
    return np.round(np.clip((a * b).sum(axis=1, dtype=np.float64), -1.0, 1.0), 6)


def evaluate(
    pairs: Sequence[Pair],
    embedder: Embedder,
    policy: HitPolicy,
    *,
    sims: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> Report:
    """Score every pair with ``embedder`` (unless ``sims`` are given) and let ``policy``
    decide; ``b`` is the query, ``a`` the cached prompt."""
    t0 = time.perf_counter()
    if sims is None:
        sims = similarities(pairs, embedder, progress=progress)
    t1 = time.perf_counter()
    results = [PairResult(p, float(s), policy.decide(p.b, p.a, float(s))) for p, s in zip(pairs, sims, strict=True)]
    t2 = time.perf_counter()
    return Report(results, policy=repr(policy), embedder=type(embedder).__name__,
                  timings={"embed_s": t1 - t0, "decide_s": t2 - t1})


def best_threshold(
    pairs: Sequence[Pair],
    sims: np.ndarray,
    policy_for: Callable[[float], HitPolicy],
    target_false_hit: float = 0.02,
) -> ThresholdChoice | None:
    """The lowest threshold ``t`` at which ``policy_for(t)`` keeps the false-hit rate within
    ``target_false_hit``, with its hit rate; ``None`` if none does.

    Exact over every distinct similarity, in two passes: ``policy_for(t)`` is assumed to gate
    on ``similarity >= t`` (as :class:`ThresholdPolicy` and :class:`GuardedPolicy` do), so a
    pair at or above ``t`` gets the decision it gets when every pair passes the gate
    (``policy_for(-1)``), and one below gets the decision it gets when none does
    (``policy_for(1.01)``; misses, or a guarded policy's near-repeat hits).
    """
    if len(pairs) != len(sims):
        raise ValueError("pairs and sims differ in length")
    open_gate, shut_gate = policy_for(-1.0), policy_for(1.01)
    sims = np.asarray(sims, dtype=np.float64)
    above = np.array([open_gate.decide(p.b, p.a, float(s)).hit for p, s in zip(pairs, sims, strict=True)], dtype=bool)
    below = np.array([shut_gate.decide(p.b, p.a, float(s)).hit for p, s in zip(pairs, sims, strict=True)], dtype=bool)
    same = np.array([p.same_answer for p in pairs], dtype=bool)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    # Candidate thresholds: each distinct similarity.
    candidates = np.unique(sims)
    order = np.argsort(sims)
    s_sorted = sims[order]
    # Served when t <= s: 'above' decision; when t > s: 'below' decision.
    d_above_same = (above & same)[order]
    d_above_diff = (above & ~same)[order]
    d_below_same = (below & same)[order]
    d_below_diff = (below & ~same)[order]
    # Prefix sums over pairs sorted by similarity: pairs [0, k) are below t.
    cum = {name: np.concatenate([[0], np.cumsum(arr)]) for name, arr in (
        ("as", d_above_same), ("ad", d_above_diff), ("bs", d_below_same), ("bd", d_below_diff))}
    for t in candidates:  # ascending: the first that meets the target is the lowest
        k = int(np.searchsorted(s_sorted, t, side="left"))
        hits = cum["bs"][k] + (cum["as"][-1] - cum["as"][k])
        false = cum["bd"][k] + (cum["ad"][-1] - cum["ad"][k])
        fh = _rate(int(false), n_diff) if n_diff else 0.0
        if fh <= target_false_hit + 1e-12:
            return ThresholdChoice(float(t), _rate(int(hits), n_same), fh, target_false_hit)
    return None


def _stderr_progress(stream: IO[str]) -> ProgressFn:
    tty = stream.isatty()
    started = time.perf_counter()
    last = [-1.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done not in (0, total) and now - last[0] < (0.2 if tty else 5.0):
            return
        last[0] = now
        pct = 100.0 * done / total if total else 100.0
        msg = f"embedding {done}/{total} texts ({pct:3.0f}%, {now - started:5.1f}s)"
        if tty:
            stream.write("\r" + msg + ("\n" if done == total else ""))
        else:
            stream.write(msg + "\n")
        stream.flush()

    return report


def _make_embedder(name: str) -> Embedder:
    from .embedders import HashingEmbedder, MiniLMEmbedder

    if name == "minilm":
        return MiniLMEmbedder()
    return HashingEmbedder()


def main(argv: Sequence[str] | None = None) -> int:
    """``otel-llmcost cache-eval``: print hit and false-hit rates of a policy on labelled pairs."""
    parser = argparse.ArgumentParser(
        prog="otel-llmcost cache-eval",
        description="Measure a semantic-cache hit policy on labelled prompt pairs (JSON Lines with "
                    "fields a, b, same_answer, category).",
    )
    parser.add_argument("pairs", help="labelled pairs, JSON Lines")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"similarity threshold (default {DEFAULT_GUARDED_HIGH} guarded, "
                             f"{DEFAULT_HIGH} threshold)")
    parser.add_argument("--target-false-hit", type=float, default=0.02,
                        help="false-hit rate the suggested threshold must stay within (default 0.02)")
    parser.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm",
                        help="minilm (needs the embeddings extra) or hashing (weak, no dependencies)")
    parser.add_argument("--policy", choices=("guarded", "threshold"), default="guarded",
                        help="guarded: threshold then look-alike guards (default); threshold: cosine only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)

    if not 0.0 <= args.target_false_hit <= 1.0:
        parser.error("--target-false-hit must be between 0 and 1")
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be a cosine similarity between -1 and 1")
    try:
        pairs = load_pairs(args.pairs)
    except PairsFileError as exc:
        print(f"otel-llmcost cache-eval: {exc}", file=sys.stderr)
        return 2

    def policy_for(t: float) -> HitPolicy:
        base: HitPolicy = ThresholdPolicy(t) if t <= 1.0 else _Never()
        return base if args.policy == "threshold" else GuardedPolicy(base)

    threshold = args.threshold
    if threshold is None:
        threshold = DEFAULT_HIGH if args.policy == "threshold" else DEFAULT_GUARDED_HIGH
    try:
        embedder = _make_embedder(args.embedder)
        sims = similarities(pairs, embedder, progress=_stderr_progress(sys.stderr))
    except ImportError as exc:
        print(f"otel-llmcost cache-eval: {exc}", file=sys.stderr)
        return 2
    report = evaluate(pairs, embedder, policy_for(threshold), sims=sims)
    report.threshold = threshold
    report.embedder = args.embedder
    report.target_false_hit = args.target_false_hit
    report.best = best_threshold(pairs, sims, policy_for, args.target_false_hit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    return 0


class _Never:
    """A policy that never hits (the closed gate for threshold sweeps)."""

    def decide(self, query: str, candidate: str, similarity: float) -> Decision:
        return Decision(False, None, "below threshold")

    def __repr__(self) -> str:
        return "_Never()"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
