"""Budget config: dataclasses in code, the YAML file, and clear errors with field and line."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from otel_llmcost.budget import (
    Budget,
    BudgetConfig,
    CalendarWindow,
    ConfigError,
    RollingWindow,
    Scope,
    Thresholds,
    load_budget_config,
)

EXAMPLE = """\
timezone: America/New_York
ledger: sqlite:///llmcost-ledger.db
thresholds: {warn: 0.6}
forecast: {margin: 0.25}
reservation_ttl: 5m
budgets:
  - name: company-monthly
    amount: 5000
  - name: per-user-daily
    amount: 2.50
    window: day
    scope: {by: user}
    thresholds: {throttle: 0.8}
    allowed_models: [gpt-4o-mini]
  - name: acme-rolling
    amount: "40"
    window: {rolling: 24h}
    timezone: Europe/Paris
    scope: {tenant: acme, by: [user, feature]}
    forecast: false
routing:
  substitutes: {gpt-4o: gpt-4o-mini, claude-sonnet-4-5: claude-haiku-4-5}
  tiers: {free: small}        # owned by the routing part: left alone
alerts:
  log: false
  webhooks:
    - {url: "http://127.0.0.1:9/hook", format: slack, secret_env: HOOK_SECRET}
cache: {backend: "memory://"}  # another part's section: left alone
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmcost.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_yaml_example_reads_into_dataclasses(tmp_path: Path) -> None:
    """Every documented key of the YAML example lands in the dataclasses, with defaults merged."""
    config = load_budget_config(write(tmp_path, EXAMPLE))
    company, user, acme = config.budgets
    assert company.amount == Decimal("5000") and company.scope.is_global
    assert company.window == CalendarWindow("month", "America/New_York")
    assert company.thresholds == Thresholds(warn=Decimal("0.6"))
    assert company.forecast is not None and company.forecast.margin == Decimal("0.25")
    assert user.amount == Decimal("2.50") and user.window == CalendarWindow("day", "America/New_York")
    assert user.scope == Scope(by=("user",))
    assert user.thresholds == Thresholds(warn=Decimal("0.6"), throttle=Decimal("0.8"))
    assert user.allowed_models == ("gpt-4o-mini",)
    assert acme.window == RollingWindow(timedelta(hours=24)) and acme.forecast is None
    assert acme.scope == Scope(by=("user", "feature"), match={"tenant": "acme"})
    assert config.routing.substitutes == {"gpt-4o": "gpt-4o-mini", "claude-sonnet-4-5": "claude-haiku-4-5"}
    assert config.ledger == "sqlite:///llmcost-ledger.db"
    assert config.reservation_ttl == timedelta(minutes=5)
    assert config.alerts.log is False and config.alerts.webhooks[0].format == "slack"


def test_config_path_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no path, OTEL_LLMCOST_CONFIG names the file; with neither, a ConfigError says so."""
    monkeypatch.setenv("OTEL_LLMCOST_CONFIG", str(write(tmp_path, EXAMPLE)))
    assert len(load_budget_config().budgets) == 3
    monkeypatch.delenv("OTEL_LLMCOST_CONFIG")
    with pytest.raises(ConfigError, match="OTEL_LLMCOST_CONFIG is not set"):
        load_budget_config()


def test_amounts_are_exact_decimals(tmp_path: Path) -> None:
    """`amount: 0.1` is exactly one tenth (read from the text, not through a float)."""
    config = load_budget_config(write(tmp_path, "budgets: [{name: a, amount: 0.1}]\n"))
    assert config.budgets[0].amount == Decimal("0.1")


BAD = [
    (
        "budgets:\n  - name: a\n    amount: 1\n    window: fortnight\n",
        "budgets[0].window",
        4,
        "unknown window",
    ),
    ("budgets:\n  - name: a\n    amount: -5\n", "budgets[0].amount", 3, "not a positive amount"),
    ("budgets:\n  - name: a\n    amout: 5\n", "budgets[0].amout", 3, "did you mean 'amount'"),
    ("budgets:\n  - name: a\n", "budgets[0]", 2, "missing 'amount'"),
    (
        "budgets:\n  - name: a\n    amount: 1\n    thresholds:\n      warn: 0.9\n      throttle: 0.85\n",
        "budgets[0].thresholds",
        4,
        "must increase",
    ),
    (
        "budgets:\n  - name: a\n    amount: 1\n    thresholds:\n      warn: lots\n",
        "budgets[0].thresholds.warn",
        5,
        "not a number",
    ),
    (
        "budgets:\n  - name: a\n    amount: 1\n    scope: {by: usr}\n",
        "budgets[0].scope.by[0]",
        4,
        "unknown dimension",
    ),
    (
        "budgets:\n  - name: a\n    amount: 1\n    scope:\n      by: [user]\n      user: bob\n",
        "budgets[0].scope.user",
        6,
        "both fixed and in 'by'",
    ),
    (
        "budgets:\n  - name: a\n    amount: 1\n    window: {rolling: 25x}\n",
        "budgets[0].window.rolling",
        4,
        "duration",
    ),
    (
        "budgets:\n  - name: a\n    amount: 1\n    window: {rolling: 1h, buckets: 7}\n",
        "budgets[0].window.buckets",
        4,
        "divides 3600",
    ),
    ("timezone: Mars/Base\nbudgets: []\n", "timezone", 1, "unknown time zone"),
    (
        "budgets:\n  - {name: a, amount: 1}\n  - name: a\n    amount: 2\n",
        "budgets[1].name",
        3,
        "already used by budgets[0]",
    ),
    ("budget:\n  - {name: a, amount: 1}\n", "budget", 1, "did you mean 'budgets'"),
    ("budgets: {name: a}\n", "budgets", 1, "expected a list of budgets"),
    ("budgets:\n  - name: a b\n    amount: 1\n", "budgets[0].name", 2, "not a budget name"),
    ("alerts:\n  webhooks:\n    - format: slack\n", "alerts.webhooks[0]", 3, "missing 'url'"),
    (
        "alerts:\n  webhooks:\n    - url: ftp://x\n",
        "alerts.webhooks[0].url",
        3,
        "not an http(s) URL",
    ),
    ("routing:\n  substitutes: [gpt-4o]\n", "routing.substitutes", 2, "expected a mapping"),
    ("ledger: ./ledger.db\n", "ledger", 1, "not a ledger URI"),
]


@pytest.mark.parametrize(("text", "field", "line", "message"), BAD, ids=[b[1] + ":" + b[3] for b in BAD])
def test_malformed_config_names_field_and_line(
    tmp_path: Path, text: str, field: str, line: int, message: str
) -> None:
    """Each mistake raises ConfigError naming the file, the line and the dotted field."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_budget_config(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.field, error.line, error.source) == (field, line, str(path))
    assert message in str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_yaml_syntax_errors_and_duplicate_keys_name_the_line(tmp_path: Path) -> None:
    """Broken YAML and a key given twice are ConfigErrors with the line."""
    with pytest.raises(ConfigError, match=r"llmcost.yaml:3: not valid YAML") as caught:
        load_budget_config(write(tmp_path, "budgets:\n  - name: a\n   amount: 1\n"))
    assert caught.value.line == 3
    with pytest.raises(ConfigError, match=r"flow sequence started on line 3"):
        load_budget_config(write(tmp_path, "budgets:\n  - name: a\n    amount: [1\n"))
    with pytest.raises(ConfigError, match=r"llmcost.yaml:3: key 'amount' appears twice \(first on line 2\)"):
        load_budget_config(write(tmp_path, "budgets:\n  - amount: 1\n    amount: 2\n    name: a\n"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_budget_config(tmp_path / "missing.yaml")


def test_budgets_in_code_are_checked_too() -> None:
    """Dataclasses validate on construction: ConfigError (a ValueError) naming the field."""
    budget = Budget("per-user", "1.5", scope=Scope(by="user"))  # type: ignore[arg-type]
    assert budget.amount == Decimal("1.5") and budget.scope.by == ("user",)
    assert budget.stop_limit == Decimal("1.425")
    with pytest.raises(ConfigError, match="amount"):
        Budget("x", Decimal(0))
    with pytest.raises(ConfigError, match="thresholds.stop"):
        Thresholds(stop=Decimal("0"))
    with pytest.raises(ConfigError, match="used twice"):
        BudgetConfig(budgets=(Budget("x", Decimal(1)), Budget("x", Decimal(2))))
    with pytest.raises(ConfigError, match="scope.by"):
        Scope(by=("user", "user"))


def test_scope_keys() -> None:
    """Scope keys: 'global', fixed dimensions, per-value splits; a call lacking a `by` value is not counted."""
    attributes = {"llmcost.user.id": "al,ice", "llmcost.tenant.id": "acme", "gen_ai.response.model": "gpt-4o"}
    assert Scope().key_for(attributes) == "global"
    assert Scope(match={"tenant": "acme"}).key_for(attributes) == "tenant=acme"
    assert Scope(match={"tenant": "other"}).key_for(attributes) is None
    assert Scope(by=("user",), match={"tenant": "acme"}).key_for(attributes) == "tenant=acme,user=al%2Cice"
    assert Scope(by=("model",)).key_for(attributes) == "model=gpt-4o"
    assert Scope(by=("feature",)).key_for(attributes) is None
    assert Scope(by=("deployment.environment",)).key_for({"deployment.environment": "prod"}) == (
        "deployment.environment=prod"
    )
