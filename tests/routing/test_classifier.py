"""The heuristic classifier on clear cases, and the labelled example files."""

from __future__ import annotations

import pytest

from otel_llmcost.budget import ConfigError
from otel_llmcost.routing import (
    Classifier,
    HeuristicClassifier,
    default_examples,
    load_examples,
    parse_complexity,
    parse_examples,
)

from .conftest import HELDOUT

CLEAR = [
    ("Hello!", "simple"),
    ("thanks, bye", "simple"),
    ("What time does the pharmacy close today?", "simple"),
    ("Do you ship to Norway?", "simple"),
    ("What port does Redis use by default?", "simple"),
    ("Explain what a closure is in JavaScript, with a short example.", "medium"),
    ("Write a Python function that checks whether a string is a palindrome.", "medium"),
    ("Summarize this for the ticket: 'The customer was billed twice and wants the duplicate charge refunded.'",
     "medium"),
    ("Design a multi-region active-active architecture for our payments API and explain the trade-offs "
     "between consistency and latency.", "complex"),
    ("Prove that the square root of 2 is irrational.", "complex"),
    ("Plan a zero downtime migration of our sessions store from Memcached to Redis, including rollback.",
     "complex"),
]


@pytest.mark.parametrize(("text", "expected"), CLEAR)
def test_heuristic_on_clear_cases(text, expected):
    """Greetings and look-ups are simple, single explain/write tasks medium, design and proofs complex."""
    assert HeuristicClassifier().classify(text) == expected


def test_keywords_match_whole_words_only():
    """'hi' inside 'this' or 'which', and 'no' inside 'know', are not greetings or answers."""
    signals = HeuristicClassifier().signals("I know which of this is nothing")
    assert signals.easy == 0


def test_short_query_with_a_hard_task_is_not_simple():
    """Shortness alone does not make a query simple (the lesson's classifier called this simple)."""
    assert HeuristicClassifier().classify("Design a URL shortener for 100k writes per second.") == "complex"


def test_hard_word_in_a_lookup_does_not_make_it_complex():
    """A look-up that mentions 'design' or 'compare' stays cheap."""
    classifier = HeuristicClassifier()
    assert classifier.classify("Where do I find the design templates in my account?") == "simple"
    assert classifier.classify("Can you compare the prices of the two plans?") == "simple"


def test_quoted_material_is_not_counted_as_requirements():
    """A long quoted passage to translate is material, not a list of asks: the task stays medium."""
    text = ("Translate this to French: 'Your order, which includes the lamp, the rug and two chairs, ships "
            "Monday, arrives Thursday, and can be returned within 30 days, free of charge, from any store.'")
    assert HeuristicClassifier().classify(text) == "medium"


def test_batch_matches_single_and_protocol():
    """classify_batch gives the same answers as classify, and the class follows the Classifier protocol."""
    classifier = HeuristicClassifier()
    texts = [text for text, _ in CLEAR]
    assert classifier.classify_batch(texts) == [classifier.classify(t) for t in texts]
    assert isinstance(classifier, Classifier)


def test_thresholds_must_be_ordered():
    """medium_at must be below complex_at."""
    with pytest.raises(ValueError):
        HeuristicClassifier(medium_at=3, complex_at=2)


def test_shipped_examples_are_many_and_balanced():
    """The default set has at least 120 queries, every level and the four kinds of traffic."""
    examples = default_examples()
    assert len(examples) >= 120
    assert {e.label for e in examples} == {"simple", "medium", "complex"}
    assert min(sum(e.label == level for e in examples) for level in ("simple", "medium", "complex")) >= 30
    assert {e.domain for e in examples} == {"support", "coding", "analysis", "smalltalk"}


def test_heldout_file_is_separate_from_training():
    """The held-out file has at least 40 queries and shares none with the shipped training set."""
    heldout = load_examples(HELDOUT)
    assert len(heldout) >= 40
    training = {" ".join(e.text.lower().split()) for e in default_examples()}
    assert not [e.text for e in heldout if " ".join(e.text.lower().split()) in training]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"text": "hi", "label": "easy"}', "label", "'easy' is not one of simple, medium, complex"),
        ('{"text": "hi"}', "label", "missing; use simple, medium or complex"),
        ('{"text": "", "label": "simple"}', "text", "expected a non-empty string, got ''"),
        ('["hi", "simple"]', None, 'expected an object such as {"text": "...", "label": "simple"}, got list'),
        ('{"text": "hi", "label": "simple"', None, "not valid JSON: Expecting ',' delimiter (column 33)"),
        ('{"text": "hi", "label": "simple", "prompt_tokens": -1}', "prompt_tokens",
         "expected a whole number of tokens, got -1"),
    ],
)
def test_malformed_example_line_is_named(line, field, message):
    """A malformed JSONL line raises ConfigError naming the file, the line and the field."""
    lines = ['{"text": "hello", "label": "simple"}', "", line]
    with pytest.raises(ConfigError) as info:
        parse_examples(lines, "train.jsonl")
    assert (info.value.source, info.value.line, info.value.field, info.value.message) == (
        "train.jsonl", 3, field, message
    )


def test_conflicting_labels_for_one_text_are_an_error():
    """The same query labelled twice differently is an error naming both lines."""
    lines = ['{"text": "Hello there", "label": "simple"}', '{"text": "hello  there", "label": "complex"}']
    with pytest.raises(ConfigError, match="labelled simple on line 1 and complex here"):
        parse_examples(lines)


def test_empty_file_is_an_error(tmp_path):
    """A file with no examples cannot train or score anything."""
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no labelled examples"):
        load_examples(path)


def test_parse_complexity():
    """Labels are read case-insensitively; anything else is a ValueError."""
    assert parse_complexity(" Complex ") == "complex"
    with pytest.raises(ValueError):
        parse_complexity(2)
