"""The data the dashboards are checked against: the guarded demo workload (`otel-llmcost demo --traffic`,
budgets and the guard on, user ids on metrics) → our Collector build → a real Prometheus (Debian's,
scraping every second, with the otel-llmcost alert rules loaded), all on loopback.

Also usable by hand, to look at the dashboards over fresh data:

    python -m tests.dashboards.stack 40     # prints the Prometheus URL, keeps it up until Ctrl-C
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from otel_llmcost.testing.processes import CollectorProcess, PrometheusServer, collector_binary, free_port

REPO = Path(__file__).resolve().parents[2]
SERVICE = "llmcost-dashboards-test"
ENVIRONMENT = "dashboards-test"
SCRAPE_INTERVAL = 1.0


@dataclass
class Stack:
    prometheus_url: str
    started: float
    """Unix time the traffic started."""
    ended: float
    output: str


SUMMARIES_BUDGET = 0.02
"""USD a day for the feature `summaries`: small enough that the demo's budget reaches warn, throttle and
stop within seconds, so level bands, downgrades, refusals and alerts have data to show."""


def traffic_config(path: Path) -> Path:
    """The demo's own traffic config with a tighter `summaries-daily` budget (see SUMMARIES_BUDGET) and a
    budget that throttles the `analysis` feature at once (downgrades)."""
    import yaml

    from otel_llmcost.traffic import TRAFFIC_CONFIG

    config = yaml.safe_load(TRAFFIC_CONFIG)
    (budget,) = [b for b in config["budgets"] if b["name"] == "summaries-daily"]
    budget["amount"] = SUMMARIES_BUDGET
    # The reasoning calls (feature `analysis`, gpt-5.4) stay at the throttle level from their first cent
    # and never stop: each later one is a budget downgrade to gpt-5.4-mini for the routing panels.
    # The engine projects a window's end only after a tenth of it by default: on a month's first days (or
    # a day's first hours) the projection panel would have nothing to show, whatever the clock says.
    config["forecast"] = {"margin": 0.2, "min_elapsed": 0.00001}
    config["budgets"].append({"name": "analysis-daily", "amount": 1.0, "window": "day",
                              "scope": {"feature": "analysis"},
                              "thresholds": {"warn": 0.001, "throttle": 0.002, "stop": 10}})
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_traffic(collector: CollectorProcess, duration: float, rate: float, config: Path) -> str:
    """The checkout's `otel-llmcost demo --traffic` against `collector` over OTLP/HTTP; its output."""
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name={ENVIRONMENT}",
        "OTEL_LLMCOST_METRICS_INCLUDE_USER": "true",  # for the "Top users" panel
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for name in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_LLMCOST_CONFIG"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "otel_llmcost.cli", "demo", "--traffic", "--duration", str(duration),
         "--rate", str(rate), "--export-interval", "1", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=duration + 240, cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"demo --traffic failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def firing_alerts(prometheus_url: str) -> list[str]:
    query = urllib.parse.urlencode({"query": 'ALERTS{alertstate="firing"}'})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as response:
        return [item["metric"]["alertname"] for item in json.load(response)["data"]["result"]]


@contextlib.contextmanager
def demo_stack(workdir: Path, duration: float = 40.0, rate: float = 15.0, alert_wait: float = 90.0) -> Iterator[Stack]:
    """Collector and Prometheus up, the workload run through them, and (up to `alert_wait` seconds) the
    budget alerts firing; yields where to query. A deadline for polling, not a timing assertion."""
    collector = CollectorProcess(
        REPO / "collector" / "otelcol.yaml",
        env={"LLMCOST_PROCESSOR_ENDPOINT": f"http://127.0.0.1:{free_port()}",
             "LLMCOST_TRACES_ENDPOINT": f"127.0.0.1:{free_port()}"},
        workdir=workdir / "collector", binary=collector_binary(),
    )
    with collector:
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "evaluation_interval": f"{SCRAPE_INTERVAL:g}s"},
            "scrape_configs": [{"job_name": "otel-collector", "honor_labels": True,
                                "static_configs": [{"targets": [collector.prometheus_target]}]}],
        }
        rules = sorted((REPO / "collector" / "rules").glob("*.rules.yml"))
        with PrometheusServer(config, rule_files=rules, workdir=workdir / "prometheus") as prometheus:
            started = time.time()
            output = run_traffic(collector, duration, rate, traffic_config(workdir / "traffic.yaml"))
            ended = time.time()
            deadline = time.monotonic() + alert_wait
            while not firing_alerts(prometheus.url):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no otel-llmcost alert fired within {alert_wait:g} s of the traffic's end "
                                       f"(the summaries budget should stop):\n{output}")
                time.sleep(1)
            yield Stack(prometheus.url, started, ended, output)


if __name__ == "__main__":
    import tempfile

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    with tempfile.TemporaryDirectory() as tmp, demo_stack(Path(tmp), seconds) as stack:
        print(f"Prometheus with {seconds:g} s of demo traffic: {stack.prometheus_url} "
              f"(traffic {stack.started:.0f}..{stack.ended:.0f}); alerts firing: {firing_alerts(stack.prometheus_url)}",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
