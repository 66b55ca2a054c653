"""`otel-llmcost processor`: a wrong config stops startup with the file, field and what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_llmcost.cli import main


def run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    config = tmp_path / "processor.yaml"
    config.write_text(text, encoding="utf-8")
    code = main(["processor", "--config", str(config), *extra])
    return code, capsys.readouterr().err


def test_unknown_processor_key_names_the_field_and_a_suggestion(tmp_path, capsys):
    """A misspelt key in the processor section is refused with a suggestion."""
    code, err = run(tmp_path, "budgets: []\nprocessor:\n  max_bdy: 1MiB\n", capsys)
    assert code == 2
    assert "processor.max_bdy" in err and "did you mean 'max_body'" in err and "processor.yaml" in err


def test_bad_values_are_refused_with_what_to_write(tmp_path, capsys):
    """Sizes, span accounting modes and ledgers the processor cannot commit to atomically are refused."""
    code, err = run(tmp_path, "processor:\n  max_body: lots\n", capsys)
    assert code == 2 and "not a size; write bytes or e.g. 512KiB" in err
    code, err = run(tmp_path, "processor:\n  span_accounting: sometimes\n", capsys)
    assert code == 2 and "'sometimes' is not one of off, foreign, all" in err
    code, err = run(tmp_path, "ledger: postgres://db/x\n", capsys)
    assert code == 2 and "needs a ledger it can commit to atomically" in err


def test_missing_config_file(tmp_path, capsys):
    """A config path that does not exist is reported, not a traceback."""
    code = main(["processor", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2 and "cannot read the config file" in capsys.readouterr().err


def test_port_in_use_is_reported(tmp_path, capsys):
    """Another process on the port: a clear message and exit code 2."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run(tmp_path, f"ledger: sqlite:///{tmp_path}/l.db\n", capsys, "--port", str(port))
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
