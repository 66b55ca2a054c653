"""Real servers for tests and benchmarks: redis-server, Prometheus, Alertmanager, our Collector.

Each runs as a child process on a free loopback port, with its state in a directory of its own, and
is ready when `start()` returns (it answered PING or its HTTP readiness endpoint). A process that
exits or never gets ready raises `ProcessStartError` carrying the tail of its log, because "did not
start" alone leaves the reader guessing. A missing binary raises `MissingBinaryError` naming the
package that provides it: CI installs every one, so a test that needs one must fail, not skip.

    with RedisServer() as redis:
        use(redis.url)
    with CollectorProcess(config, env={"LLMCOST_PROCESSOR_ENDPOINT": url}) as collector:
        send_otlp(collector.otlp_http_url)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import yaml

__all__ = [
    "AlertmanagerServer",
    "CollectorProcess",
    "LLMCostProcessor",
    "ManagedProcess",
    "MissingBinaryError",
    "ProcessStartError",
    "PrometheusServer",
    "RedisServer",
    "collector_binary",
    "free_port",
    "require",
]

COLLECTOR_BIN_ENV = "OTEL_LLMCOST_COLLECTOR_BIN"
"""Path of a Collector binary to use instead of the one `collector/build.sh` caches."""

COLLECTOR_CACHE_DIR = Path.home() / ".cache" / "otel-llmcost"
COLLECTOR_LINK = COLLECTOR_CACHE_DIR / "otelcol-llmcost"
"""`collector/build.sh` points this link at the build matching the current sources."""

_INSTALL_HINTS = {
    "redis-server": "Debian: apt-get install -y redis-server",
    "prometheus": "Debian: apt-get install -y prometheus",
    "promtool": "Debian: apt-get install -y prometheus",
    "prometheus-alertmanager": "Debian: apt-get install -y prometheus-alertmanager",
    "amtool": "Debian: apt-get install -y prometheus-alertmanager",
    "chromium": "Debian: apt-get install -y chromium",
    "go": "install Go 1.26 or newer from https://go.dev/dl/",
}


_P = TypeVar("_P", bound="ManagedProcess")


class MissingBinaryError(RuntimeError):
    """A program a test runs for real is not installed."""


class ProcessStartError(RuntimeError):
    """A server exited or did not get ready; the message carries its log tail."""


def require(binary: str) -> str:
    """The full path of `binary`, or `MissingBinaryError` saying how to install it.

    Tests call this instead of skipping: `.ci/run` installs every binary the suite runs, so a missing
    one is a broken environment that must show up red.
    """
    path = shutil.which(binary)
    if path is None:
        hint = _INSTALL_HINTS.get(binary, "install it")
        raise MissingBinaryError(
            f"{binary} is not on PATH; the tests run the real program ({hint}; `bash .ci/run` installs "
            "everything the tests need)"
        )
    return path


def collector_binary() -> str:
    """The Collector binary: `$OTEL_LLMCOST_COLLECTOR_BIN`, else the build `collector/build.sh` cached."""
    configured = os.environ.get(COLLECTOR_BIN_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise MissingBinaryError(
                f"{COLLECTOR_BIN_ENV}={configured} is not an executable file; unset it to use the cached "
                "build, or point it at an otelcol-llmcost binary"
            )
        return configured
    if os.access(COLLECTOR_LINK, os.X_OK):
        return str(COLLECTOR_LINK)
    raise MissingBinaryError(
        f"no Collector binary at {COLLECTOR_LINK}; build it with `bash collector/build.sh` (needs Go; "
        f"`bash .ci/run` does it), or set {COLLECTOR_BIN_ENV} to an otelcol-llmcost binary"
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (another process may still take it: retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when a GET of `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


class ManagedProcess:
    """A child server process with a log file, a readiness probe and a clean stop.

    Subclasses give `command()` and `ready()`; ports are picked before the command is built. When the
    port was taken between picking and binding, the start is retried on new ports (`_fresh_ports`),
    except on a restart, which keeps the ports so clients can reconnect.
    """

    name = "process"
    start_timeout = 30.0
    start_attempts = 3

    def __init__(self, workdir: Path | str | None = None, env: Mapping[str, str] | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"llmcost-{self.name}-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.log_path = self.workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_once = False

    # -- for subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def _fresh_ports(self) -> None:
        """Pick new ports (before a retry after a port clash)."""

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self: _P, timeout: float | None = None) -> _P:
        """Start and wait until ready; a restart after `stop`/`kill` keeps the same ports."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")  # type: ignore[union-attr]
        attempts = 1 if self._started_once else self.start_attempts
        last: ProcessStartError | None = None
        for attempt in range(attempts):
            if attempt:
                self._fresh_ports()
            try:
                self._launch(self.start_timeout if timeout is None else timeout)
                self._started_once = True
                return self
            except ProcessStartError as exc:
                last = exc
                if "address already in use" not in str(exc).lower():
                    break
        assert last is not None
        raise last

    def _launch(self, timeout: float) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            start_new_session=True,  # a Ctrl-C in the test run reaches us, not the server mid-write
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close()
                raise ProcessStartError(f"{self.name} exited with code {code} at start.\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.kill()
        raise ProcessStartError(f"{self.name} was not ready within {timeout:g} s.\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM), then kill when it does not exit within `timeout`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._close()

    def kill(self) -> None:
        """SIGKILL, like a crash: nothing is flushed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop, and remove the working directory when we made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def __enter__(self: _P) -> _P:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class HTTPProcess(ManagedProcess):
    """A server with one HTTP port on loopback, ready when `ready_path` answers 2xx."""

    ready_path = "/-/ready"

    def __init__(
        self, workdir: Path | str | None = None, env: Mapping[str, str] | None = None, port: int | None = None
    ) -> None:
        super().__init__(workdir, env)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _fresh_ports(self) -> None:
        self.port = free_port()

    def ready(self) -> bool:
        return http_ok(f"{self.url}{self.ready_path}")

    def _config_file(self, config: Path | str | Mapping[str, Any], name: str) -> Path:
        """A config given as a mapping is written as YAML into the working directory; a path is used as is."""
        if isinstance(config, Mapping):
            path = self.workdir / name
            path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
            return path
        return Path(config).resolve()


class RedisServer(ManagedProcess):
    """redis-server on loopback without persistence: a restart (`kill` then `start`) comes back empty."""

    name = "redis"

    def __init__(self, workdir: Path | str | None = None, port: int | None = None) -> None:
        super().__init__(workdir)
        self.binary = require("redis-server")
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _fresh_ports(self) -> None:
        self.port = free_port()

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class PrometheusServer(HTTPProcess):
    """Prometheus (Debian's 2.x) with a given config and rule files, its TSDB in the working directory.

    `config` is a path or a mapping (written as YAML); `rule_files` are added to the config's
    `rule_files` by absolute path. Scrape and evaluation intervals are whatever the config says:
    tests set them to a second or two. `--web.enable-lifecycle` lets a test reload or quit it.
    """

    name = "prometheus"

    def __init__(
        self,
        config: Path | str | Mapping[str, Any],
        rule_files: Sequence[Path | str] = (),
        workdir: Path | str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.binary = require("prometheus")
        if isinstance(config, Mapping):
            data: dict[str, Any] = dict(config)
        else:
            data = yaml.safe_load(Path(config).read_text()) or {}
        if rule_files:
            data["rule_files"] = [*data.get("rule_files", []), *(str(Path(p).resolve()) for p in rule_files)]
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]


class AlertmanagerServer(HTTPProcess):
    """Debian's prometheus-alertmanager, gossip off, its storage in the working directory."""

    name = "alertmanager"

    def __init__(
        self,
        config: Path | str | Mapping[str, Any],
        workdir: Path | str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.binary = require("prometheus-alertmanager")
        self.config_path = self._config_file(config, "alertmanager.yml")
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            *self.extra_args,
        ]


class CollectorProcess(ManagedProcess):
    """Our Collector build running `collector/otelcol.yaml` (or another config using the same env names).

    Only endpoints change, through the environment variables the config reads (`ENDPOINT_ENV`); every
    listening endpoint gets a free loopback port. `env` adds or overrides variables, e.g.
    `LLMCOST_PROCESSOR_ENDPOINT` and `LLMCOST_TRACES_ENDPOINT`.
    """

    name = "collector"
    ENDPOINT_ENV = {
        "otlp_grpc": "LLMCOST_OTLP_GRPC_ENDPOINT",
        "otlp_http": "LLMCOST_OTLP_HTTP_ENDPOINT",
        "prometheus": "LLMCOST_PROMETHEUS_EXPORTER_ENDPOINT",
        "health": "LLMCOST_HEALTH_ENDPOINT",
        "telemetry": "LLMCOST_COLLECTOR_TELEMETRY_PORT",
    }

    def __init__(
        self,
        config: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: Path | str | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(workdir)
        self.binary = binary or collector_binary()
        self.config_path = Path(config).resolve() if config else default_collector_config()
        self.extra_env = dict(env or {})
        self._fresh_ports()

    def _fresh_ports(self) -> None:
        self.ports = {role: free_port() for role in self.ENDPOINT_ENV}
        self.env = {
            self.ENDPOINT_ENV["otlp_grpc"]: f"127.0.0.1:{self.ports['otlp_grpc']}",
            self.ENDPOINT_ENV["otlp_http"]: f"127.0.0.1:{self.ports['otlp_http']}",
            self.ENDPOINT_ENV["prometheus"]: f"127.0.0.1:{self.ports['prometheus']}",
            self.ENDPOINT_ENV["health"]: f"127.0.0.1:{self.ports['health']}",
            "LLMCOST_COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
            self.ENDPOINT_ENV["telemetry"]: str(self.ports["telemetry"]),
            **self.extra_env,
        }

    @property
    def otlp_http_url(self) -> str:
        """Base URL for OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`; signals go to /v1/metrics, /v1/traces)."""
        return f"http://127.0.0.1:{self.ports['otlp_http']}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['otlp_grpc']}"

    @property
    def prometheus_target(self) -> str:
        """host:port of the Prometheus exporter, for a scrape config."""
        return f"127.0.0.1:{self.ports['prometheus']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.prometheus_target}/metrics"

    def command(self) -> list[str]:
        return [self.binary, f"--config=file:{self.config_path}"]

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.ports['health']}/")

    def validate(self, env: Mapping[str, str] | None = None) -> None:
        """`otelcol-llmcost validate` on the config; raises with the Collector's words on errors.

        `env`: the variables to set (default: this process's endpoints; `{}` checks the config's defaults).
        """
        result = subprocess.run(
            [self.binary, "validate", f"--config=file:{self.config_path}"],
            env={**os.environ, **(self.env if env is None else env)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ProcessStartError(
                f"the Collector rejected {self.config_path} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )


class LLMCostProcessor(HTTPProcess):
    """`otel-llmcost processor` (this checkout's) with a config file, its ledger in the working directory.

    Runs `python -m otel_llmcost.cli` with the current interpreter so a test exercises the same code it
    imports. `token` becomes the /v1/hints bearer token (env `OTEL_LLMCOST_PROCESSOR_TOKEN`).
    """

    name = "processor"
    ready_path = "/healthz"

    def __init__(
        self,
        config: Path | str | Mapping[str, Any],
        workdir: Path | str | None = None,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, env)
        self.config_path = self._config_file(config, "processor.yaml")
        source_root = str(Path(__file__).resolve().parents[2])
        self.env.setdefault("PYTHONPATH", os.pathsep.join(
            p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p))
        if token is not None:
            self.env["OTEL_LLMCOST_PROCESSOR_TOKEN"] = token

    def metrics(self) -> dict[str, float]:
        """The service's /metrics as {series as written, labels included: value} (Prometheus text)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)
        return values

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "otel_llmcost.cli", "processor",
            "--config", str(self.config_path), "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip


def default_collector_config() -> Path:
    """`collector/otelcol.yaml` of this checkout (the tests run from a source tree)."""
    path = Path(__file__).resolve().parents[2] / "collector" / "otelcol.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: CollectorProcess needs a config path outside a checkout")
    return path

