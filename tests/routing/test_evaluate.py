"""route-eval: exact report for a small file, kNN runs, progress on stderr, clear input errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.routing.evaluate import main

SMALL = [
    {"text": "What time do you open on Saturday?", "label": "simple"},
    {"text": "thanks!", "label": "simple"},
    {"text": "Explain the difference between a process and a thread.", "label": "medium"},
    {"text": "Write a short apology email for a late delivery.", "label": "medium", "prompt_tokens": 400},
    {"text": "Design a multi-tenant billing system and explain the trade-offs.", "label": "complex"},
    {"text": "Why is the sky blue?", "label": "complex"},
]

PRICES = """\
models:
  - {model: gpt-4o, input_mtok: 2.50, output_mtok: 10.00}
  - {model: gpt-4o-mini, input_mtok: 0.15, output_mtok: 0.60}
"""

EXPECTED = """\
route-eval: 6 labelled queries from small.jsonl
classifier: heuristic; tier: pro; requested model: gpt-4o (openai)

accuracy: 0.833 (5/6)

class     precision  recall  support
simple        1.000   1.000        2
medium        0.667   1.000        2
complex       1.000   0.500        2

confusion (rows: label, columns: predicted)
label       simple   medium  complex
simple           2        0        0
medium           0        2        0
complex          0        1        1

under-classified (below the label: may get a weaker model than it needs): 1 (16.7%)
over-classified (above the label: may cost more than it needs): 0 (0.0%)

routed to
model                    queries   share
gpt-4o                         4   66.7%
gpt-4o-mini                    2   33.3%

estimated cost (input: prompt_tokens, else ~4 characters a token; output assumed by labelled complexity: \
simple 150, medium 400, complex 800 tokens)
always gpt-4o:          $0.028115
routed:                 $0.025269
change:                 -10.1% ($-0.002846)
"""


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run(argv: list[str], **kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err, **kwargs)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_LLMCOST_CONFIG", raising=False)
    monkeypatch.delenv("OTEL_LLMCOST_PRICES_FILE", raising=False)


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES, encoding="utf-8")
    return write_jsonl(tmp_path / "small.jsonl", SMALL), prices


def test_report_is_exact_for_a_small_file(small):
    """Accuracy, per-class scores, confusion, routing shares and the cost change, exactly.

    By hand: gpt-4o costs $0.028115 for the six queries; the two simple ones on gpt-4o-mini save $0.002846.
    """
    labelled, prices = small
    code, out, err = run([str(labelled), "--tier", "pro", "--model", "gpt-4o", "--prices-file", str(prices)])
    assert (code, err) == (0, "")
    assert out == EXPECTED


def test_free_tier_moves_everything_to_the_cheap_model(small):
    """As tier free every query goes to gpt-4o-mini: the report shows the whole saving and the share."""
    labelled, prices = small
    code, out, _ = run([str(labelled), "--tier", "free", "--prices-file", str(prices)])
    assert code == 0
    assert "gpt-4o-mini                    6  100.0%" in out
    assert "routed:                 $0.001687" in out  # 446 input × 0.15 + 2700 output × 0.60 per M


def test_anthropic_call_on_free_tier_is_counted_as_not_allowed(small):
    """Calls the tier cannot serve on their provider are shown apart, not silently moved."""
    labelled, _ = small
    code, out, _ = run([str(labelled), "--tier", "free", "--model", "claude-sonnet-4-6"])
    assert code == 0
    assert "(not allowed for tier)         6  100.0%" in out


def test_knn_run_reports_training_and_warns_about_overlap(small):
    """--classifier knn trains on --train (here the scored file itself) and warns that this proves little."""
    labelled, prices = small
    code, out, err = run(
        [str(labelled), "--classifier", "knn", "--train", str(labelled), "--k", "1", "--prices-file", str(prices)],
        embedder=HashingEmbedder(),
    )
    assert code == 0
    assert "classifier: knn (k=1, 6 training examples, minilm)" in out
    assert "accuracy: 1.000 (6/6)" in out
    assert "warning: 6 of 6 queries in" in err and "route-eval: embedding 6 training examples" in err


def test_knn_with_hashing_embedder_on_shipped_examples(tmp_path):
    """--embedder hashing trains on the shipped examples with no model to load."""
    labelled = write_jsonl(tmp_path / "q.jsonl", [{"text": "hello there", "label": "simple"}])
    code, out, _ = run([str(labelled), "--classifier", "knn", "--embedder", "hashing"])
    assert code == 0 and "hashing)" in out and "accuracy: 1.000 (1/1)" in out


def test_progress_goes_to_stderr_on_long_runs(tmp_path, small):
    """Files of 200 queries or more report progress on stderr; stdout holds only the report."""
    _, prices = small
    rows = [SMALL[i % len(SMALL)] | {"text": f"{SMALL[i % len(SMALL)]['text']} ({i})"} for i in range(200)]
    code, out, err = run([str(write_jsonl(tmp_path / "big.jsonl", rows)), "--prices-file", str(prices)])
    assert code == 0
    assert err.splitlines() == [
        "route-eval: classified 64/200", "route-eval: classified 128/200",
        "route-eval: classified 192/200", "route-eval: classified 200/200",
    ]
    assert "route-eval: classified" not in out


def test_malformed_line_is_named_and_exits_2(tmp_path):
    """A bad label in the labelled file stops the run with the file, line and field."""
    labelled = tmp_path / "bad.jsonl"
    labelled.write_text('{"text": "hi", "label": "simple"}\n{"text": "yo", "label": "trivial"}\n', encoding="utf-8")
    code, out, err = run([str(labelled)])
    assert (code, out) == (2, "")
    assert err == f"otel-llmcost route-eval: {labelled}:2: label: 'trivial' is not one of simple, medium, complex\n"


def test_model_of_unknown_provider_needs_provider(small):
    """A model name of no known family needs --provider."""
    labelled, _ = small
    code, _, err = run([str(labelled), "--model", "llama3"])
    assert code == 2 and "pass --provider" in err


def test_unknown_price_is_said_not_guessed(small):
    """With no price for the requested model the cost is reported as unknown, never as zero."""
    labelled, _ = small
    code, out, _ = run([str(labelled), "--model", "my-model", "--provider", "openai"])
    assert code == 0
    assert out.endswith("unknown: no price for my-model\n")


def test_cli_forwards_route_eval(small, capsys):
    """`otel-llmcost route-eval ...` runs the same report through the package's CLI entry point."""
    from otel_llmcost.cli import main as cli_main

    labelled, prices = small
    assert cli_main(["route-eval", str(labelled), "--tier", "pro", "--prices-file", str(prices)]) == 0
    assert capsys.readouterr().out == EXPECTED
