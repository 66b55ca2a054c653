"""The embedded default and the ways in: instrument(), opentelemetry-instrument, otel-llmcost run, demo."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import otel_llmcost
from otel_llmcost.cli import main

ROOT = Path(__file__).resolve().parent.parent

APP = textwrap.dedent("""
    import json, os, sys
    import openai
    client = openai.OpenAI(base_url=os.environ["LOOPBACK_OPENAI"], api_key="sk-secret-key", max_retries=0)
    {setup}
    import otel_llmcost
    with otel_llmcost.attributes(user_id="u1", feature="checkout"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi there"}}])
        client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "hello again"}}])
    {report}
""")

GLOBAL_PROVIDERS = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""
REPORT_SPANS = """print(json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()
                  if s.instrumentation_scope.name == "otel_llmcost"]))"""


def _env(llm_server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["LOOPBACK_OPENAI"] = llm_server.openai_base_url
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_entry_points_registered() -> None:
    """Each instrumentor is registered under opentelemetry_instrumentor, so opentelemetry-instrument finds it."""
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="opentelemetry_instrumentor")}
    assert points["llmcost_openai"] == "otel_llmcost.instrumentation.openai:OpenAIInstrumentor"
    assert points["llmcost_anthropic"] == "otel_llmcost.instrumentation.anthropic:AnthropicInstrumentor"
    assert points["llmcost_google_genai"] == "otel_llmcost.instrumentation.google_genai:GoogleGenAIInstrumentor"


def test_opentelemetry_instrument_picks_us_up(tmp_path, llm_server) -> None:
    """`opentelemetry-instrument python app.py` prices the app's calls through our entry point."""
    app = tmp_path / "app.py"
    app.write_text(APP.format(setup=GLOBAL_PROVIDERS, report=REPORT_SPANS))
    result = subprocess.run(["opentelemetry-instrument", sys.executable, str(app)], capture_output=True, text=True,
                            env=_env(llm_server, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
                                     OTEL_LOGS_EXPORTER="none"), timeout=120)
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["gen_ai.request.model"] for s in spans] == ["gpt-4o-mini", "gpt-4o"]
    assert all(s["gen_ai.usage.cost"] > 0 and s["llmcost.user.id"] == "u1" for s in spans)


def test_opentelemetry_instrument_respects_disabled_list(tmp_path, llm_server) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=llmcost_openai turns our OpenAI instrumentor off."""
    app = tmp_path / "app.py"
    app.write_text(APP.format(setup=GLOBAL_PROVIDERS, report=REPORT_SPANS))
    result = subprocess.run(["opentelemetry-instrument", sys.executable, str(app)], capture_output=True, text=True,
                            env=_env(llm_server, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
                                     OTEL_LOGS_EXPORTER="none",
                                     OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="llmcost_openai"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_run_command_embedded_store_and_summary(tmp_path, llm_server) -> None:
    """`otel-llmcost run -- python app.py` with no OTLP configured keeps calls in SQLite and prints a summary."""
    app = tmp_path / "app.py"
    app.write_text(APP.format(setup="", report=""))
    store = tmp_path / "calls.db"
    result = subprocess.run([sys.executable, "-m", "otel_llmcost.cli", "run", "--store", str(store), "--",
                             sys.executable, str(app)], capture_output=True, text=True, env=_env(llm_server),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "otel-llmcost: cost of this run" in result.stderr
    assert "gpt-4o-mini" in result.stderr and "gpt-4o" in result.stderr
    rows = sqlite3.connect(store).execute(
        "SELECT request_model, cost_usd, user_id, feature FROM calls ORDER BY start_unix_nano").fetchall()
    assert [r[0] for r in rows] == ["gpt-4o-mini", "gpt-4o"]
    assert all(r[1] > 0 and r[2] == "u1" and r[3] == "checkout" for r in rows)
    assert "sk-secret-key" not in store.read_bytes().decode("latin-1")


def test_run_command_needs_a_program(capsys) -> None:
    """`otel-llmcost run` with nothing to run says how to use it."""
    assert main(["run"]) == 2
    assert "otel-llmcost run -- python app.py" in capsys.readouterr().err


def test_demo_prints_cost_summary(tmp_path, capsys) -> None:
    """`otel-llmcost demo` runs the workload through the real SDKs and prints cost by model."""
    store = tmp_path / "demo.db"
    assert main(["demo", "--calls", "12", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "otel-llmcost: cost of this run" in out
    assert "gpt-5.4" in out and "claude-haiku-4-5" in out
    assert "acme-llm-7b" in out and "no known price" in out
    assert "saving" in out and "cache hit rate" in out and "routed to cheaper" in out
    assert "ALERT [WARN]" in out and "ALERT [THROTTLE]" in out and "ALERT [STOP]" in out
    cached = sqlite3.connect(store).execute("SELECT sum(cache_read_tokens) FROM calls").fetchone()[0]
    assert cached and cached > 0  # the long system prompt is cached by the providers after the first call


def test_missing_sdk_is_skipped_with_a_log_line(monkeypatch, caplog) -> None:
    """An SDK that is not installed is skipped with an info log line, and the rest are instrumented."""
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == "google.genai" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with caplog.at_level(logging.INFO, logger="otel_llmcost"):
        found = otel_llmcost.instrumentors()
    assert "google.genai is not installed; its instrumentor is skipped" in caplog.text
    assert {type(i).__name__ for i in found} == {"OpenAIInstrumentor", "AnthropicInstrumentor"}


def test_prices_command(capsys) -> None:
    """`otel-llmcost prices MODEL` prints the rates and their source; an unknown model exits 2."""
    assert main(["prices", "claude-sonnet-4-5", "--provider", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert "source:             genai-prices" in out and "$3.75" in out and "above 200,000" in out
    assert main(["prices", "no-such-model"]) == 2
    assert "no price for model 'no-such-model'" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"])
def test_otlp_configuration_disables_embedded_mode(variable) -> None:
    """With an OTLP endpoint or exporter configured, the embedded store steps aside."""
    from otel_llmcost.embedded import otlp_configured

    assert otlp_configured({variable: "http://collector:4318" if "ENDPOINT" in variable else "otlp"})
    assert not otlp_configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not otlp_configured({})


def test_eval_commands_are_delegated(tmp_path, capsys) -> None:
    """`otel-llmcost cache-eval` and `route-eval` hand their whole command line to their part's parser."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"a": "What is the return policy?", "b": "What is the return policy?", "same_answer": true}\n'
                     '{"a": "Cancel my order", "b": "Track my order", "same_answer": false}\n')
    assert main(["cache-eval", str(pairs), "--embedder", "hashing"]) == 0
    out = capsys.readouterr().out
    assert "hit rate" in out.lower() and "false" in out.lower()
    labelled = tmp_path / "routes.jsonl"
    labelled.write_text('{"text": "Hello", "label": "simple"}\n')
    assert main(["route-eval", str(labelled)]) == 0
    assert "accuracy" in capsys.readouterr().out.lower()
