"""The process launchers the stack tests stand on: readiness, restarts, and errors that say what happened."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from otel_llmcost.testing.processes import (
    CollectorProcess,
    MissingBinaryError,
    ProcessStartError,
    PrometheusServer,
    RedisServer,
    collector_binary,
    require,
)

from .conftest import COLLECTOR_CONFIG


def test_require_names_the_package_to_install() -> None:
    """A missing binary is an error naming what provides it, not a skip."""
    with pytest.raises(MissingBinaryError, match=r"prometheus-alertmanager-nope is not on PATH.*bash \.ci/run"):
        require("prometheus-alertmanager-nope")
    assert require("redis-server").endswith("redis-server")


def test_collector_binary_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """OTEL_LLMCOST_COLLECTOR_BIN wins over the cached build, and a wrong path says how to fix it."""
    monkeypatch.setenv("OTEL_LLMCOST_COLLECTOR_BIN", str(tmp_path / "missing"))
    with pytest.raises(MissingBinaryError, match="not an executable file"):
        collector_binary()
    monkeypatch.delenv("OTEL_LLMCOST_COLLECTOR_BIN")
    assert Path(collector_binary()).name.startswith("otelcol-llmcost")


def test_redis_restarts_empty_on_the_same_port(tmp_path: Path) -> None:
    """kill() then start() brings redis-server back on its port, answering PING."""
    with RedisServer(tmp_path) as redis:
        port = redis.port
        redis.kill()
        assert not redis.ready()
        redis.start()
        assert redis.port == port and redis.ready()
    assert not redis.running


def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    """Prometheus with a broken config fails at start with the reason from its own log."""
    server = PrometheusServer({"scrape_configs": "not a list"}, workdir=tmp_path)
    with pytest.raises(ProcessStartError, match=r"(?s)prometheus exited with code \d+ at start.*cannot unmarshal"):
        server.start()
    assert not server.running


def test_port_clash_is_retried_on_a_fresh_port(tmp_path: Path) -> None:
    """When the picked port is taken before the server binds it, the start moves to another port."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        redis = RedisServer(tmp_path, port=taken)
        with redis:
            assert redis.port != taken and redis.ready()


def test_the_collector_rejects_a_broken_config_with_its_reason(tmp_path: Path) -> None:
    """`validate` fails with the Collector's message when the config names a component we did not build."""
    broken = tmp_path / "otelcol.yaml"
    broken.write_text(COLLECTOR_CONFIG.read_text().replace("exporters: [prometheus, ", "exporters: [prometheusx, "))
    with pytest.raises(ProcessStartError, match="prometheusx"):
        CollectorProcess(broken, workdir=tmp_path / "run").validate()
