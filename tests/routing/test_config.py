"""The routing: section of the config file: the table it builds and the errors it raises."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from otel_llmcost.budget import ConfigError, load_budget_config
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.routing import (
    KNNClassifier,
    Router,
    RouteRequest,
    default_table,
    load_routing_config,
    parse_routing_config,
)

EXAMPLE = """\
budgets:
  - name: team-daily
    amount: 20
    window: day
routing:
  substitutes: {gpt-4o: gpt-4o-mini}
  classifier: knn
  examples: examples.jsonl
  k: 3
  default_tier: free
  tiers:
    free: {allowed: [gpt-4o-mini]}
    pro: {allowed: [gpt-4o-mini, gpt-4o, claude-haiku-4-5, claude-sonnet-4-6]}
    enterprise: {allowed: "*"}
  complexity:
    simple: {openai: gpt-4o-mini, anthropic: claude-haiku-4-5, gcp.gemini: gemini-2.5-flash}
    medium: {openai: gpt-4o, anthropic: claude-sonnet-4-6}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmcost.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, routing: str) -> ConfigError:
    path = write(tmp_path, "routing:\n" + textwrap.indent(textwrap.dedent(routing), "  "))
    with pytest.raises(ConfigError) as info:
        load_routing_config(path)
    return info.value


def test_example_config_builds_the_table(tmp_path):
    """Tiers, complexity levels, classifier, k, default tier and the examples path are all read."""
    config = load_routing_config(write(tmp_path, EXAMPLE))
    table = config.table
    assert set(table.tiers) == {"free", "pro", "enterprise"}
    assert table.tiers["free"].allowed == ("gpt-4o-mini",)
    assert table.tiers["enterprise"].allowed is None
    assert table.default_tier == "free" and table.upgrade is False
    assert table.complexity["simple"]["gcp.gemini"] == "gemini-2.5-flash"
    assert "complex" not in table.complexity  # left out: the requested model is kept
    assert table.ladder("anthropic", "claude-opus-4-1")["complex"] == "claude-opus-4-1"
    assert (config.classifier, config.k) == ("knn", 3)
    assert config.examples == tmp_path.resolve() / "examples.jsonl"


def test_budget_loader_reads_the_same_file(tmp_path):
    """The budget engine loads the shared file and ignores the routing keys it does not own."""
    budget = load_budget_config(write(tmp_path, EXAMPLE))
    assert [b.name for b in budget.budgets] == ["team-daily"]
    assert dict(budget.routing.substitutes) == {"gpt-4o": "gpt-4o-mini"}


def test_no_routing_section_gives_the_default_table(tmp_path):
    """A config without routing: (or no config at all) routes with the lesson's default table."""
    config = load_routing_config(write(tmp_path, "budgets: []\n"))
    assert config.table == default_table() and config.classifier == "heuristic"
    assert parse_routing_config(None).table == default_table()


def test_env_variable_names_the_file(tmp_path, monkeypatch):
    """Without a path the file named by OTEL_LLMCOST_CONFIG is read; without either, the defaults."""
    monkeypatch.setenv("OTEL_LLMCOST_CONFIG", str(write(tmp_path, EXAMPLE)))
    assert load_routing_config().table.default_tier == "free"
    monkeypatch.delenv("OTEL_LLMCOST_CONFIG")
    assert load_routing_config().table == default_table()


def test_router_from_config_trains_knn_on_the_configured_examples(tmp_path):
    """classifier: knn with examples: builds a KNNClassifier from that file (relative to the config)."""
    rows = [("hello", "simple"), ("thanks a lot", "simple"), ("explain recursion", "medium"),
            ("design a distributed ledger with trade-offs", "complex")]
    (tmp_path / "examples.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lb}) + "\n" for t, lb in rows), encoding="utf-8"
    )
    router = Router.from_config(write(tmp_path, EXAMPLE), embedder=HashingEmbedder())
    assert isinstance(router.classifier, KNNClassifier) and router.classifier.k == 3
    decision = router.route(RouteRequest("gpt-4o", "openai", "hello"), "pro")
    assert decision.model == "gpt-4o-mini"


def test_unknown_key_names_field_line_and_suggestion(tmp_path):
    """A misspelt key is an error naming the file, the line, the field and the likely key."""
    err = error_of(tmp_path, "classifer: knn\n")
    assert (err.field, err.line) == ("routing.classifer", 2)
    assert str(err) == f"{tmp_path / 'llmcost.yaml'}:2: routing.classifer: unknown key 'classifer'; did you mean 'classifier'?"


def test_bad_classifier_name(tmp_path):
    """classifier must be heuristic or knn."""
    err = error_of(tmp_path, "classifier: nn\n")
    assert (err.field, err.line, err.message) == ("routing.classifier", 2, "'nn' is not heuristic or knn")


def test_tier_allowed_must_be_a_list_or_star(tmp_path):
    """A tier's allowed is a list of models or "*"; a bare model name is an error at its line."""
    err = error_of(tmp_path, """\
        tiers:
          free: {allowed: gpt-4o-mini}
        """)
    assert (err.field, err.line) == ("routing.tiers.free.allowed", 3)
    assert err.message == "expected a list of model names or \"*\", got str 'gpt-4o-mini'"


def test_tier_without_allowed(tmp_path):
    """A tier must say which models it allows."""
    err = error_of(tmp_path, """\
        tiers:
          free: {models: [gpt-4o-mini]}
        """)
    assert err.field == "routing.tiers.free.models" and "unknown key 'models'" in err.message


def test_tier_model_must_be_text(tmp_path):
    """Each allowed model is a name; the error points at its index."""
    err = error_of(tmp_path, """\
        tiers:
          free:
            allowed: [gpt-4o-mini, 42]
        """)
    assert err.field == "routing.tiers.free.allowed[1]" and err.line == 4


def test_complexity_model_of_another_provider_is_refused(tmp_path):
    """Mapping an OpenAI level to a Claude model is an error at that line: routing keeps the provider."""
    err = error_of(tmp_path, """\
        complexity:
          simple:
            openai: gpt-4o-mini
            anthropic: gpt-4o-mini
        """)
    assert (err.field, err.line) == ("routing.complexity.simple.anthropic", 5)
    assert err.message == "gpt-4o-mini belongs to openai; routing keeps a call with its provider (anthropic)"


def test_complexity_level_must_be_known(tmp_path):
    """Levels are simple, medium and complex."""
    err = error_of(tmp_path, """\
        complexity:
          trivial: {openai: gpt-4o-mini}
        """)
    assert err.field == "routing.complexity.trivial" and err.line == 3


def test_default_tier_must_be_a_tier(tmp_path):
    """default_tier names one of the tiers."""
    err = error_of(tmp_path, "default_tier: gold\n")
    assert err.field == "routing.default_tier"
    assert err.message == "'gold' is not one of the tiers (free, pro, enterprise)"


@pytest.mark.parametrize("value", ["0", "two", "true"])
def test_k_must_be_a_positive_whole_number(tmp_path, value):
    """k is a whole number of neighbours, at least 1."""
    err = error_of(tmp_path, f"k: {value}\n")
    assert err.field == "routing.k" and err.line == 2


def test_routing_must_be_a_mapping(tmp_path):
    """routing: with a list under it is an error naming the section."""
    path = write(tmp_path, "routing: [gpt-4o]\n")
    with pytest.raises(ConfigError) as info:
        load_routing_config(path)
    assert info.value.field == "routing" and info.value.line == 1


def test_duplicate_key_and_bad_yaml(tmp_path):
    """A key given twice and a YAML syntax error both name the line."""
    err = error_of(tmp_path, "k: 3\nk: 4\n")
    assert err.line == 3 and "appears twice" in err.message
    path = write(tmp_path, "routing: {tiers: [\n")
    with pytest.raises(ConfigError) as info:
        load_routing_config(path)
    assert info.value.message.startswith("not valid YAML")


def test_missing_file(tmp_path):
    """A config path that cannot be read is a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_routing_config(tmp_path / "nope.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")
