"""The Prometheus and Alertmanager files of the stack, checked by the real promtool and amtool.

`promtool test rules` runs the rule unit tests (collector/rules/*.test.yml); the tests here also make
sure those unit tests can fail, that every alert is tested both firing and quiet, and that every alert
reaches the receiver its severity names. A missing binary fails the test: CI installs prometheus and
prometheus-alertmanager (`bash .ci/run`).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_llmcost.testing.processes import require

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "collector"
PROMETHEUS_CONFIG = COLLECTOR / "prometheus.yml"
RULES_DIR = COLLECTOR / "rules"
RULES = RULES_DIR / "llmcost.rules.yml"
RULE_TESTS = sorted(RULES_DIR.glob("*.test.yml"))
ALERTMANAGER_CONFIG = COLLECTOR / "alertmanager.yml"
SEVERITY_RECEIVER = {"critical": "llmcost-page", "warning": "llmcost-ticket"}


def loopback_prometheus_config(
    targets: Mapping[str, str], alertmanager: str | None, interval: str = "1s"
) -> dict[str, Any]:
    """collector/prometheus.yml for processes on this machine: same jobs and rules, other addresses.

    `targets` maps each scrape job name to a host:port; every job of the file must be given one, so a
    job added to the file cannot silently go unscraped in the tests. Rule files become absolute (the
    copy lives elsewhere); scrape and evaluation intervals become `interval`; nothing else changes.
    """
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if set(targets) != jobs:
        raise ValueError(f"give a loopback target for each job of {PROMETHEUS_CONFIG.name}: {sorted(jobs)}, "
                         f"got {sorted(targets)}")
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    return config


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=120)


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["groups"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]


def uncommented_slack_example(text: str) -> str:
    """alertmanager.yml with its commented Slack receiver turned on."""
    inside, lines = False, []
    for line in text.splitlines():
        if "--- Slack (example)" in line:
            inside = True
        elif "--- end of Slack example" in line:
            inside = False
        elif inside and re.match(r"^  # (-|  )", line):
            line = "  " + line[4:]
        lines.append(line)
    return "\n".join(lines) + "\n"


# --- Prometheus -------------------------------------------------------------------------------------
def test_promtool_accepts_the_prometheus_config_and_loads_its_rules() -> None:
    """`promtool check config` on collector/prometheus.yml finds and checks the rule file beside it."""
    result = run(require("promtool"), "check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr
    assert f"Checking {RULES}" in result.stdout + result.stderr or "llmcost.rules.yml" in result.stdout


def test_promtool_accepts_the_loopback_copy(tmp_path: Path) -> None:
    """The copy the stack tests run (loopback targets, 1 s intervals) is valid and loads the same rules."""
    config = loopback_prometheus_config(
        {"otel-collector": "127.0.0.1:18889", "llmcost-processor": "127.0.0.1:14319", "prometheus": "127.0.0.1:19090"},
        "127.0.0.1:19093",
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(require("promtool"), "check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(RULES) in result.stdout + result.stderr


def test_loopback_copy_changes_only_addresses_and_intervals() -> None:
    """Jobs, paths, labels and rule files stay what docker-compose runs; only where and how often change."""
    original = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    copy = loopback_prometheus_config(
        {"otel-collector": "127.0.0.1:1", "llmcost-processor": "127.0.0.1:2", "prometheus": "127.0.0.1:3"}, None
    )
    strip_targets = lambda jobs: [{k: v for k, v in job.items() if k != "static_configs"} for job in jobs]  # noqa: E731
    assert strip_targets(copy["scrape_configs"]) == strip_targets(original["scrape_configs"])
    assert copy["global"]["external_labels"] == original["global"]["external_labels"]
    assert [Path(p).resolve() for p in copy["rule_files"]] == [
        (PROMETHEUS_CONFIG.parent / p).resolve() for p in original["rule_files"]
    ]
    with pytest.raises(ValueError, match="llmcost-processor"):
        loopback_prometheus_config({"otel-collector": "127.0.0.1:1"}, None)


def test_prometheus_config_scrapes_the_stack_and_alerts_to_alertmanager() -> None:
    """Targets are the compose services the brief names; rule files match the rules, never their tests."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["otel-collector"] == ["otel-collector:8889"]
    assert targets["llmcost-processor"] == ["processor:4319"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    matched = sorted(p for pattern in config["rule_files"] for p in PROMETHEUS_CONFIG.parent.glob(pattern))
    assert matched == [RULES]
    assert RULE_TESTS and not set(RULE_TESTS) & set(matched)


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts every rule of the file."""
    count = sum(len(group["rules"]) for group in rule_groups())
    result = run(require("promtool"), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes every unit test of the rules."""
    result = run(require("promtool"), "test", "rules", *(p.name for p in RULE_TESTS), cwd=RULES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


@pytest.mark.parametrize(
    ("before", "after", "alert"),
    [
        ("llmcost:budget_utilization:ratio >= 0.70", "llmcost:budget_utilization:ratio > 0.70", "LLMBudgetWarn"),
        ("llmcost:budget_burn_rate:rate5m > 14.4", "llmcost:budget_burn_rate:rate5m > 0", "LLMSpendBurnRateFast"),
        ("llmcost:cache_lookups:rate30m * 1800 >= 100", "llmcost:cache_lookups:rate30m * 1800 >= 10",
         "LLMCacheHitRateCollapse"),
        ('error_type!~"BudgetExceededError|RateLimitExceeded|ModelNotAllowedError"', 'error_type!~"x"',
         "LLMCallErrorRateHigh"),
        ("llmcost_price_unknown_total unless llmcost_price_unknown_total offset 1h",
         "llmcost_price_unknown_total * 0", "LLMUnknownModelPrice"),
        (') > 0\n        for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Spend',
         ') > 0\n        for: 3m\n        labels:\n          severity: warning\n        annotations:\n          summary: "Spend',
         "LLMBudgetLedgerBacklog"),
        ("increase(llmcost_budget_backlog_lost_USD_total[15m])", "increase(llmcost_budget_backlog_lost_USD_total[1m])",
         "LLMBudgetSpendLost"),
        ("llmcost_budget_backlog_lost_USD_total unless llmcost_budget_backlog_lost_USD_total offset 15m",
         "llmcost_budget_backlog_lost_USD_total * 0", "LLMBudgetSpendLost"),
    ],
)
def test_rule_unit_tests_catch_a_changed_rule(tmp_path: Path, before: str, after: str, alert: str) -> None:
    """Each mutation of a threshold or guard makes the unit tests fail on that alert."""
    text = RULES.read_text()
    assert text.count(before) == 1, f"{before!r} is no longer in the rules: update this test"
    (tmp_path / RULES.name).write_text(text.replace(before, after))
    # Only the unit tests of that alert, to keep this quick; they pass on the unchanged rules
    # (test_rule_unit_tests_pass).
    files = []
    for test_file in RULE_TESTS:
        document = yaml.safe_load(test_file.read_text())
        document["tests"] = [
            test for test in document["tests"]
            if any(case["alertname"] == alert for case in test.get("alert_rule_test", []))
        ]
        if document["tests"]:
            files.append(tmp_path / test_file.name)
            files[-1].write_text(yaml.safe_dump(document, sort_keys=False))
    assert files, f"no unit test of {alert}"
    result = run(require("promtool"), "test", "rules", *(p.name for p in files), cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}" in result.stdout + result.stderr


def _rule_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a unit test where it fires and one where it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in _rule_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_every_recording_rule_is_checked() -> None:
    """Each recording rule's value is asserted by some promql_expr_test."""
    exprs = " ".join(case["expr"] for test in _rule_tests() for case in test.get("promql_expr_test", []))
    checked = {rule["record"] for rule in recording_rules() if re.search(re.escape(rule["record"]) + r"\b", exprs)}
    assert {rule["record"] for rule in recording_rules()} - checked == set()


def test_every_alert_says_what_to_do_and_waits_before_firing() -> None:
    """Summary, description and runbook, a known severity, and a `for:` above zero on every alert."""
    for rule in alert_rules():
        assert {"summary", "description", "runbook"} <= set(rule.get("annotations", {})), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITY_RECEIVER, rule["alert"]
        assert re.fullmatch(r"[1-9]\d*[smh]", rule.get("for", "")), f"{rule['alert']}: for: {rule.get('for')!r}"


# --- Alertmanager -----------------------------------------------------------------------------------
def test_amtool_accepts_the_alertmanager_config() -> None:
    """`amtool check-config` accepts collector/alertmanager.yml."""
    result = run(require("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


def test_amtool_rejects_a_route_to_an_unknown_receiver(tmp_path: Path) -> None:
    """The check can fail: a route naming a receiver that does not exist is refused."""
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(ALERTMANAGER_CONFIG.read_text().replace("receiver: llmcost-page", "receiver: nobody", 1))
    result = run(require("amtool"), "check-config", broken)
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


def test_the_commented_slack_receiver_is_valid(tmp_path: Path) -> None:
    """Uncommenting the Slack example gives a config amtool accepts, with the Slack receiver in it."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(uncommented_slack_example(ALERTMANAGER_CONFIG.read_text()))
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    assert "slack_configs" in receivers["llmcost-slack"]
    result = run(require("amtool"), "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_routes_to_the_receiver_of_its_severity(rule: dict[str, Any]) -> None:
    """`amtool config routes test` sends each alert, with its labels, to the page or ticket receiver."""
    labels = {"alertname": rule["alert"], **rule["labels"], "budget": "company-monthly", "scope": "global"}
    result = run(require("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                 *(f"{key}={value}" for key, value in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [SEVERITY_RECEIVER[rule["labels"]["severity"]]]


def test_inhibition_keeps_only_the_highest_budget_level() -> None:
    """Stop silences throttle and warn, throttle silences warn, for the same budget and scope only."""
    rules = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]

    def silenced_by(source: str) -> set[str]:
        names = set()
        for rule in rules:
            if any(f'alertname="{source}"' == m for m in rule["source_matchers"]):
                assert rule["equal"] == ["budget", "scope"]
                for matcher in rule["target_matchers"]:
                    names |= set(re.fullmatch(r'alertname=~?"(.*)"', matcher).group(1).split("|"))  # type: ignore[union-attr]
        return names

    assert silenced_by("LLMBudgetStop") >= {"LLMBudgetThrottle", "LLMBudgetWarn"}
    assert silenced_by("LLMBudgetThrottle") >= {"LLMBudgetWarn"}
    assert "LLMBudgetStop" not in silenced_by("LLMBudgetThrottle") | silenced_by("LLMBudgetWarn")
