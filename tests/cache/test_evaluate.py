"""cache-eval: exact rates on a hand-checked file, threshold search, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from otel_llmcost.cache.embedders import CallableEmbedder, HashingEmbedder
from otel_llmcost.cache.evaluate import (
    Pair,
    PairsFileError,
    best_threshold,
    evaluate,
    load_pairs,
    main,
    similarities,
)
from otel_llmcost.cache.policy import Decision, GuardedPolicy, HitPolicy, ThresholdPolicy

# With the hashing embedder, texts equal up to case and punctuation score exactly 1.0 and everything
# else here scores well below 0.99, so at --threshold 0.99 the outcome of each pair is known by hand:
SMALL = [
    {"a": "How do I reset my password?", "b": "how do i reset my password", "same_answer": True,
     "category": "near_repeat"},                                      # 1.0 -> hit
    {"a": "Where is my order?", "b": "WHERE IS MY ORDER", "same_answer": True,
     "category": "near_repeat"},                                      # 1.0 -> hit
    {"a": "Cancel my plan", "b": "I want to stop paying for the subscription", "same_answer": True,
     "category": "paraphrase"},                                       # low -> miss
    {"a": "Opening hours?", "b": "When are you open?", "same_answer": True,
     "category": "paraphrase"},                                       # low -> miss
    {"a": "What's 2+2?", "b": "What's 2-2?", "same_answer": False,
     "category": "arithmetic"},                                       # 1.0 (operators dropped) -> false hit
    {"a": "Do you ship to Canada?", "b": "Do you ship to Mexico?", "same_answer": False,
     "category": "entity"},                                           # < 0.99 -> not served
]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cache_eval_gives_hand_computed_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cache-eval with the hashing embedder at 0.99: 2/4 hits, 1/2 false hits, exact per category."""
    pairs = _write(tmp_path / "small.jsonl", SMALL)
    rc = main([str(pairs), "--embedder", "hashing", "--policy", "threshold", "--threshold", "0.99",
               "--target-false-hit", "0", "--json"])
    out = capsys.readouterr()
    assert rc == 0
    report = json.loads(out.out)
    assert report["hit_rate"] == 0.5
    assert report["false_hit_rate"] == 0.5
    assert {k: (v["served"], v["n"], v["kind"]) for k, v in report["by_category"].items()} == {
        "near_repeat": (2, 2, "hits"),
        "paraphrase": (0, 2, "hits"),
        "arithmetic": (1, 1, "false hits"),
        "entity": (0, 1, "false hits"),
    }
    assert report["best"] is None  # the 2+2 / 2-2 trap scores 1.0: no threshold avoids it
    assert "embedding 0/12 texts" in out.err and "embedding 12/12 texts" in out.err


def test_cache_eval_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report prints both rates, every category and the threshold suggestion."""
    pairs = _write(tmp_path / "small.jsonl", SMALL)
    assert main([str(pairs), "--embedder", "hashing", "--policy", "threshold", "--threshold", "0.99",
                 "--target-false-hit", "1.0"]) == 0
    text = capsys.readouterr().out
    assert "hit rate (same-answer pairs served)           50.0%  (2/4)" in text
    assert "false-hit rate (different-answer served)      50.0%  (1/2)" in text
    assert "near_repeat  hits        100.0%  (2/2)" in text
    assert "arithmetic   false hits  100.0%  (1/1)" in text
    # With 100 % false hits allowed, the lowest threshold is the lowest similarity: everything served.
    assert "-> hit rate 100.0%, false-hit rate 100.0%" in text


def test_cache_eval_guarded_default_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default guarded policy runs on the same file and names itself in the report."""
    pairs = _write(tmp_path / "small.jsonl", SMALL)
    assert main([str(pairs), "--embedder", "hashing"]) == 0
    text = capsys.readouterr().out
    assert "policy:   GuardedPolicy(ThresholdPolicy(high=0.78" in text
    assert "lowest threshold with false hits <= 2.0%" in text or "no threshold keeps" in text


def test_best_threshold_hand_computed() -> None:
    """Lowest threshold within the target, exact on given similarities, for plain and rescuing policies."""
    pairs = [Pair("a1", "b1", True), Pair("a2", "b2", True), Pair("a3", "b3", True),
             Pair("a4", "b4", False), Pair("a5", "b5", False)]
    sims = np.array([0.95, 0.80, 0.60, 0.90, 0.70])

    def plain(t: float) -> HitPolicy:
        return ThresholdPolicy(t) if t <= 1.0 else _Never()

    none_false = best_threshold(pairs, sims, plain, 0.0)
    assert none_false is not None
    assert (none_false.threshold, none_false.hit_rate, none_false.false_hit_rate) == (0.95, 1 / 3, 0.0)
    half = best_threshold(pairs, sims, plain, 0.5)
    assert half is not None and (half.threshold, half.hit_rate, half.false_hit_rate) == (0.80, 2 / 3, 0.5)
    everything = best_threshold(pairs, sims, plain, 1.0)
    assert everything is not None and (everything.threshold, everything.hit_rate) == (0.60, 1.0)

    class RescueB3:
        """Serves pair 3 at any similarity (like a near-repeat rescue), otherwise a plain threshold."""

        def __init__(self, t: float) -> None:
            self.t = t

        def decide(self, query: str, candidate: str, similarity: float) -> Decision:
            if query == "b3" or similarity >= self.t:
                return Decision(True, "high", "x")
            return Decision(False, None, "below threshold")

    rescued = best_threshold(pairs, sims, RescueB3, 0.0)
    assert rescued is not None and (rescued.threshold, rescued.hit_rate) == (0.95, 2 / 3)
    assert best_threshold([Pair("a", "b", False)], np.array([1.0]), plain, 0.0) is None


class _Never:
    def decide(self, query: str, candidate: str, similarity: float) -> Decision:
        return Decision(False, None, "below threshold")


def test_evaluate_asks_policy_with_b_as_query_and_reports_categories() -> None:
    """evaluate() embeds each text once, asks decide(b, a, sim) and groups results by category."""
    seen: list[tuple[str, str]] = []
    embedded: list[str] = []

    class Recorder:
        def decide(self, query: str, candidate: str, similarity: float) -> Decision:
            seen.append((query, candidate))
            return Decision(similarity > 0.5, "high" if similarity > 0.5 else None, "r")

    def fn(texts: list[str]) -> list[list[float]]:
        embedded.extend(texts)
        return [[1.0, 0.0] if t.startswith("x") else [0.0, 1.0] for t in texts]

    pairs = [Pair("x1", "x2", True, "p"), Pair("x1", "y1", False, "t"), Pair("y1", "y2", False, "t")]
    report = evaluate(pairs, CallableEmbedder(fn, 2), Recorder())
    assert seen == [("x2", "x1"), ("y1", "x1"), ("y2", "y1")]
    assert sorted(embedded) == ["x1", "x2", "y1", "y2"]
    assert [r.similarity for r in report.results] == [1.0, 0.0, 1.0]
    assert (report.hit_rate, report.false_hit_rate) == (1.0, 0.5)
    cats = report.by_category()
    assert (cats["p"].kind, cats["t"].kind, cats["t"].rate) == ("hits", "false hits", 0.5)


def test_similarities_match_direct_dot_products() -> None:
    """similarities() equals the dot product of the two embedded texts, pair by pair."""
    pairs = [Pair(r["a"], r["b"], bool(r["same_answer"])) for r in SMALL]  # type: ignore[arg-type]
    emb = HashingEmbedder()
    sims = similarities(pairs, emb, batch_size=4)
    direct = [float(emb.embed([p.a])[0] @ emb.embed([p.b])[0]) for p in pairs]
    np.testing.assert_allclose(sims, direct, atol=1e-6)


@pytest.mark.parametrize(("line", "message"), [
    ('{"a": "x", "b": "y", "same_answer": true, "category": "c"', "invalid JSON"),
    ('["x", "y", true]', "expected a JSON object, got list"),
    ('{"b": "y", "same_answer": true}', "missing field 'a'"),
    ('{"a": "x", "b": "", "same_answer": true}', "field 'b' must be a non-empty string"),
    ('{"a": "x", "b": "y"}', "missing field 'same_answer'"),
    ('{"a": "x", "b": "y", "same_answer": "yes"}', "field 'same_answer' must be true or false"),
    ('{"a": "x", "b": "y", "same_answer": false, "category": 3}', "field 'category'"),
])
def test_malformed_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str,
                                 message: str) -> None:
    """A bad third line fails with the file, line number 3 and what is wrong; cache-eval exits 2."""
    good = json.dumps(SMALL[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(PairsFileError) as info:
        load_pairs(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)
    assert main([str(path), "--embedder", "hashing"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: " in err and message in err


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    """A missing file and a file with no pairs are errors that name the file."""
    with pytest.raises(PairsFileError, match="cannot read"):
        load_pairs(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(PairsFileError, match="empty.jsonl: no pairs"):
        load_pairs(empty)
    with pytest.raises(PairsFileError, match="<pairs>:1: invalid JSON"):
        load_pairs(["not json"])


def test_heldout_file_is_well_formed() -> None:
    """The held-out set loads: at least 150 pairs, both labels, the categories it was built with."""
    pairs = load_pairs(Path(__file__).parent / "data" / "heldout_pairs.jsonl")
    assert len(pairs) >= 150
    cats = {p.category for p in pairs}
    assert {"paraphrase", "near_repeat", "role_swap", "ordinal", "superlative", "time_scope"} <= cats
    assert any(p.same_answer for p in pairs) and any(not p.same_answer for p in pairs)
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)


def test_guarded_policy_on_heldout_with_hashing_keeps_false_hits_low() -> None:
    """With the weak hashing embedder the default guards still keep held-out false hits within 2 %."""
    pairs = load_pairs(Path(__file__).parent / "data" / "heldout_pairs.jsonl")
    report = evaluate(pairs, HashingEmbedder(), GuardedPolicy())
    assert report.false_hit_rate <= 0.02
