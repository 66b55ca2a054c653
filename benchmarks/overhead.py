"""Client overhead of OpenAI instrumentations: wall time and CPU added per non-streaming chat completion.

    python benchmarks/overhead.py --setup     # make benchmarks/.venv (our package editable, openai, peers)
    python benchmarks/overhead.py             # full run; prints the table and updates BENCHMARKS.md
    python benchmarks/overhead.py --quick     # a short run (for a look, not for numbers)
    python benchmarks/overhead.py --profile otel-llmcost   # where our added time goes

Variants, each in a fresh subprocess of the benchmark venv (instrumentations patch the SDK globally):
`bare` (the openai SDK, no OpenTelemetry), `floor` (the bare call plus one hand-written CLIENT span with
the attributes our span carries and the same four metric records), `otel-llmcost` (ours) and every peer
that installs beside openai 3.x. Every variant gets the same SDK setup: a TracerProvider with a
BatchSpanProcessor feeding an exporter that drops spans (it only counts them), and a MeterProvider with
an InMemoryMetricReader that is not collected until the timed calls are over. All variants call one
loopback server (`otel_llmcost.testing.llm_server.LoopbackLLMServer`) that runs in a process of its own,
so its CPU is not counted. Client CPU is `time.process_time()` (all the client's threads, the span
processor's included), wall time `time.perf_counter()`. Variants alternate over several rounds, each
round in a rotated order, and the table reports medians with their spread.

Only the standard library is used here; the workers and the server run under benchmarks/.venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".venv"
VENV_PY = VENV / "bin" / "python"
SETUP_STATE = VENV / "otel-llmcost-bench.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "benchmarks" / "results"  # raw rounds of each run (git-ignored)
START, END = "<!-- overhead:start -->", "<!-- overhead:end -->"

MODEL = "gpt-4o-mini"
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three colours of the rainbow."},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}

# Peers installed into the benchmark venv, with the pins NOTES.md found necessary.
PEER_REQUIREMENTS = [
    "opentelemetry-instrumentation-openai",        # OpenLLMetry
    "openinference-instrumentation-openai",
    "opentelemetry-instrumentation-openai-v2",     # the official one; imports need the two below
    "httpx",
    "opentelemetry-util-genai==1.1b0",
]
TOOLS = ["pyinstrument"]


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    dist: str  # the distribution whose version the table shows
    peer: bool = False


VARIANTS = [
    Variant("bare", "bare (openai SDK, no OTel)", "openai"),
    Variant("floor", "floor (hand-written span + 4 metric records)", "opentelemetry-sdk"),
    Variant("otel-llmcost", "otel-llmcost", "otel-llmcost"),
    Variant("openllmetry", "OpenLLMetry `opentelemetry-instrumentation-openai`",
            "opentelemetry-instrumentation-openai", peer=True),
    Variant("openinference", "`openinference-instrumentation-openai`",
            "openinference-instrumentation-openai", peer=True),
    Variant("openai-v2", "official `opentelemetry-instrumentation-openai-v2`",
            "opentelemetry-instrumentation-openai-v2", peer=True),
    Variant("openlit", "OpenLIT", "openlit", peer=True),
]
BY_NAME = {v.name: v for v in VARIANTS}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


NICE = -10  # workers and the server ask for this priority, so that other work on the machine preempts them less


def _raise_priority() -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        return True
    except (OSError, AttributeError):  # not root: run at the usual priority
        return False


# ================================================================================================
# Worker: runs in a fresh subprocess of the benchmark venv, one variant, prints one JSON line.
# ================================================================================================

DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 ... 81.92 s
TOKEN_BUCKETS = [4**i for i in range(14)]  # 1 ... 67108864
# The floor's price: fixed numbers, as hand-written code would carry (USD per token).
FLOOR_PRICE_IN, FLOOR_PRICE_CACHED, FLOOR_PRICE_OUT = 0.15e-6, 0.075e-6, 0.6e-6
REWARM = 2  # untimed calls at the start of each block
COUNTED_CALLS = 20  # calls whose function calls are counted, after the timed ones


def _providers() -> tuple[Any, Any, Any, Any]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DroppingExporter(SpanExporter):
        """Drops spans; keeps a count and the first few, to check that each variant traced."""

        def __init__(self) -> None:
            self.count = 0
            self.sample: list[Any] = []

        def export(self, spans: Any) -> SpanExportResult:
            self.count += len(spans)
            if len(self.sample) < 8:
                self.sample.extend(spans[: 8 - len(self.sample)])
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    exporter = DroppingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    # Set globally too, for instrumentations that look there rather than at their arguments.
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider, exporter, reader


def _floor_call(client: Any, tracer_provider: Any, meter_provider: Any) -> Any:
    """The least an app could do by hand for the same telemetry as ours: one span, four records."""
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    create = client.chat.completions.create
    tracer = tracer_provider.get_tracer("floor")
    meter = meter_provider.get_meter("floor")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                      explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                         explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    cost_counter = meter.create_counter("llmcost.cost", unit="USD")
    perf_counter = time.perf_counter
    host = client.base_url.host
    port = client.base_url.port

    def call(**kwargs: Any) -> Any:
        model = kwargs["model"]
        span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "server.address": host,
            "server.port": port,
            "gen_ai.request.temperature": kwargs["temperature"],
            "gen_ai.request.max_tokens": kwargs["max_tokens"],
        })
        token = context.attach(trace.set_span_in_context(span))
        start = perf_counter()
        try:
            response = create(**kwargs)
        finally:
            context.detach(token)
        elapsed = perf_counter() - start
        usage = response.usage
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details is not None else 0
        cost = ((usage.prompt_tokens - cached) * FLOOR_PRICE_IN + cached * FLOOR_PRICE_CACHED
                + usage.completion_tokens * FLOOR_PRICE_OUT)
        attributes = {
            "gen_ai.response.model": response.model,
            "gen_ai.response.id": response.id,
            "gen_ai.response.finish_reasons": [c.finish_reason for c in response.choices],
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cost": cost,
            "llmcost.price.known": True,
            "llmcost.price.source": "hand-written",
        }
        if cached:
            attributes["gen_ai.usage.cache_read.input_tokens"] = cached
        span.set_attributes(attributes)
        span.end()
        metric_attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": response.model,
        }
        duration.record(elapsed, metric_attributes)
        token_usage.record(usage.prompt_tokens, {**metric_attributes, "gen_ai.token.type": "input"})
        token_usage.record(usage.completion_tokens, {**metric_attributes, "gen_ai.token.type": "output"})
        cost_counter.add(cost, metric_attributes)
        return response

    return call


def _instrument(variant: str, tracer_provider: Any, meter_provider: Any) -> None:
    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    if variant == "otel-llmcost":
        import otel_llmcost

        otel_llmcost.instrument(**providers)
    elif variant == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(**providers)
    elif variant == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor

        OpenInferenceInstrumentor().instrument(**providers)
    elif variant == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor

        OpenAIV2Instrumentor().instrument(**providers)
    elif variant == "openlit":
        # Not exercised while OpenLIT cannot install beside openai 3.x (see --setup).
        import openlit

        openlit.init(tracer=tracer_provider.get_tracer("openlit"), meter=meter_provider.get_meter("openlit"),
                     collect_gpu_stats=False)
    elif variant not in ("bare", "floor"):
        raise SystemExit(f"unknown variant {variant!r}")


def _distribution_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _metric_summary(reader: Any) -> dict[str, int]:
    """Data points per metric name (collected once, after the timed calls)."""
    out: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource_metrics in getattr(data, "resource_metrics", None) or []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                out[metric.name] = out.get(metric.name, 0) + len(metric.data.data_points)
    return out


def _span_sample(exporter: Any) -> list[dict[str, Any]]:
    spans = []
    for span in exporter.sample[:2]:
        spans.append({
            "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
            "name": span.name,
            "kind": str(span.kind),
            "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in span.attributes.items()},
        })
    return spans


def worker(variant: str, base_url: str, warmup: int, profile: str | None, profile_calls: int) -> None:
    """Set up, warm up, then time blocks of calls on request: `run N` on stdin → one JSON line out.

    `done` ends it with a summary (spans exported, metric points, a sample span). With `profile`, runs
    `profile_calls` calls under the profiler instead and prints the hot spots.
    """
    import gc

    _raise_priority()
    tracer_provider, meter_provider, exporter, reader = _providers()
    _instrument(variant, tracer_provider, meter_provider)
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-benchmark", max_retries=0)
    call = (_floor_call(client, tracer_provider, meter_provider) if variant == "floor"
            else client.chat.completions.create)
    request = dict(REQUEST)
    made = 0
    for _ in range(warmup):
        call(**request)
    made += warmup
    gc.collect()
    process_time, perf_counter = time.process_time, time.perf_counter

    if profile:
        print(json.dumps(_profiled(profile, call, request, profile_calls)), flush=True)
        return
    print(json.dumps({"ready": variant}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "done":
            break
        n = int(command[1])
        for _ in range(REWARM):  # caches are cold after the other variants' blocks; not timed
            call(**request)
        wall0, cpu0 = perf_counter(), process_time()
        for _ in range(n):
            call(**request)
        wall, cpu = perf_counter() - wall0, process_time() - cpu0
        made += REWARM + n
        print(json.dumps({"wall": wall / n, "cpu": cpu / n}), flush=True)
    else:  # stdin closed without "done": the orchestrator is gone
        return

    calls_per_call = _count_function_calls(call, request, COUNTED_CALLS)
    tracer_provider.force_flush()
    print(json.dumps({
        "variant": variant,
        "function_calls": calls_per_call,
        "version": _distribution_version(BY_NAME[variant].dist),
        "calls": made,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "spans": exporter.count,
        "span_sample": _span_sample(exporter),
        "metrics": _metric_summary(reader),
    }), flush=True)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _count_function_calls(call: Any, request: dict[str, Any], calls: int) -> float:
    """Python and C function calls made per call on this thread: a measure of work that load cannot blur."""
    count = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" or event == "c_call":
            count += 1

    sys.setprofile(hook)
    try:
        for _ in range(calls):
            call(**request)
    finally:
        sys.setprofile(None)
    return count / calls


def _profiled(profiler_name: str, call: Any, request: dict[str, Any], calls: int) -> dict[str, Any]:
    cpu0 = time.process_time()
    if profiler_name == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        for _ in range(calls):
            call(**request)
        profiler.stop()
        rows = _pyinstrument_hotspots(profiler.last_session, calls)
    else:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            call(**request)
        profiler.disable()
        rows = _cprofile_hotspots(profiler, calls)
    return {"cpu": (time.process_time() - cpu0) / calls, "profile": rows}


def _ours(path: str) -> bool:
    return f"{os.sep}otel_llmcost{os.sep}" in path and f"{os.sep}site-packages{os.sep}" not in path


def _short(path: str) -> str:
    marker = f"{os.sep}otel_llmcost{os.sep}"
    return "otel_llmcost/" + path.split(marker, 1)[1].replace(os.sep, "/") if marker in path else path


def _pyinstrument_hotspots(session: Any, calls: int) -> list[dict[str, Any]]:
    """Time per call in each of our functions: inclusive (with callees) and self, from a sampled tree."""
    totals: dict[str, list[float]] = {}

    def walk(frame: Any, on_stack: frozenset[str]) -> None:
        key = None
        path = frame.file_path or ""
        if _ours(path):
            key = f"{_short(path)}:{frame.line_no} {frame.function}"
            entry = totals.setdefault(key, [0.0, 0.0])
            if key not in on_stack:  # recursion counted once
                entry[0] += frame.time
            entry[1] += frame.total_self_time
        for child in frame.children:
            walk(child, on_stack | {key} if key else on_stack)

    root = session.root_frame()
    if root is not None:
        walk(root, frozenset())
    rows = [{"where": k, "inclusive_us": v[0] / calls * 1e6, "self_us": v[1] / calls * 1e6}
            for k, v in totals.items()]
    rows.sort(key=lambda r: r["inclusive_us"], reverse=True)
    return rows


def _cprofile_hotspots(profiler: Any, calls: int) -> list[dict[str, Any]]:
    import pstats

    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, function), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if _ours(path):
            rows.append({"where": f"{_short(path)}:{line} {function}", "inclusive_us": cumtime / calls * 1e6,
                         "self_us": tottime / calls * 1e6, "calls_per_call": ncalls / calls})
    rows.sort(key=lambda r: r["inclusive_us"], reverse=True)
    return rows


def serve() -> None:
    """The loopback server, in its own process: prints its base URL, runs until stdin closes."""
    from otel_llmcost.testing.llm_server import LoopbackLLMServer

    _raise_priority()
    with LoopbackLLMServer() as server:
        print(server.openai_base_url, flush=True)
        for line in sys.stdin:  # "reset" between workers: the server records every request it gets
            if line.strip() == "reset":
                server.reset()


# ================================================================================================
# Setup: the benchmark venv.
# ================================================================================================

def _pip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    log(f"$ pip {' '.join(args)}")
    return subprocess.run([str(VENV_PY), "-m", "pip", *args], text=True, capture_output=True, check=check)


def setup() -> dict[str, Any]:
    """Create (or refresh) benchmarks/.venv: our package editable, the current openai, the peers."""
    if not VENV_PY.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        log(f"creating {VENV.relative_to(ROOT)} with {base}")
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        _pip("install", "--quiet", "--upgrade", "pip")
    _pip("install", "--quiet", "-e", f"{ROOT}[openai]", *PEER_REQUIREMENTS, *TOOLS)
    openai_version = subprocess.run(
        [str(VENV_PY), "-c", "import importlib.metadata as m; print(m.version('openai'))"],
        text=True, capture_output=True, check=True).stdout.strip()

    # OpenLIT: its current release, beside the openai we have; never let pip downgrade openai for it
    # (nor fall back to a years-old OpenLIT that downgrades the OpenTelemetry packages instead).
    state: dict[str, Any] = {"openai": openai_version}
    listing = _pip("index", "versions", "openlit", check=False)
    found = re.search(r"openlit \(([^)]+)\)", listing.stdout)
    latest = found.group(1) if found else None
    if latest is None:
        state["openlit"] = {"installed": False, "reason": "could not ask the registry for OpenLIT's version"}
    else:
        attempt = _pip("install", "--quiet", f"openlit=={latest}", f"openai=={openai_version}", check=False)
        if attempt.returncode == 0:
            state["openlit"] = {"installed": True, "version": latest}
        else:
            conflict = [line.strip() for line in attempt.stderr.splitlines() if "depends on openai" in line]
            state["openlit"] = {
                "installed": False, "version": latest,
                "reason": f"does not install beside openai {openai_version}",
                "pip": conflict[:1] or attempt.stderr.strip().splitlines()[-1:],
            }
    SETUP_STATE.write_text(json.dumps(state, indent=2) + "\n")
    log(f"benchmark venv ready: openai {openai_version}; OpenLIT: "
        + ("installed" if state["openlit"]["installed"] else state["openlit"]["reason"]))
    return state


# ================================================================================================
# Orchestrator: server, rounds, statistics, the table.
# ================================================================================================

@dataclass
class Samples:
    variant: Variant
    version: str = "?"
    wall_ms: list[float] = field(default_factory=list)  # one per timed block
    cpu_us: list[float] = field(default_factory=list)
    added_us: list[float] = field(default_factory=list)  # block minus bare's block of the same round
    spans_per_call: list[float] = field(default_factory=list)  # one per session
    function_calls: list[float] = field(default_factory=list)  # one per session
    last: dict[str, Any] = field(default_factory=dict)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _median_ci(values: list[float]) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median (order statistics, binomial ranks)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * (n ** 0.5) / 2
    low, high = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half + 0.5))
    return ordered[low], ordered[high]


class Worker:
    """One variant's process: fresh, warmed up, then timing blocks of calls on request."""

    def __init__(self, variant: Variant, url: str, warmup: int, hash_seed: int) -> None:
        self.variant = variant
        command = [str(VENV_PY), str(Path(__file__).resolve()), "--worker", variant.name, "--base-url", url,
                   "--warmup", str(warmup)]
        # One hash seed for every variant of a session (dict and set layouts follow it), another for the
        # next session.
        env = dict(os.environ, OTEL_SDK_DISABLED="false", PYTHONHASHSEED=str(hash_seed))
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise SystemExit(f"worker {self.variant.name} ended (exit {self.process.returncode}); see above")
        return json.loads(line)

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def ready(self) -> None:
        self._read()

    def run(self, calls: int) -> dict[str, Any]:
        self._send(f"run {calls}")
        return self._read()

    def finish(self) -> dict[str, Any]:
        self._send("done")
        summary = self._read()
        self.process.wait(timeout=60)
        return summary

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_SERVER: subprocess.Popen[str] | None = None


def start_server() -> tuple[subprocess.Popen[str], str]:
    global _SERVER
    process = _SERVER = subprocess.Popen([str(VENV_PY), str(Path(__file__).resolve()), "--serve"], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url:
        process.kill()
        raise SystemExit("the loopback server did not start")
    return process, url


def reset_server() -> None:
    if _SERVER is not None and _SERVER.stdin is not None:
        _SERVER.stdin.write("reset\n")
        _SERVER.stdin.flush()


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already inside user
    return total - fields[3] - fields[4], total


def _process_jiffies(pids: list[int]) -> int:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


class LoadMeter:
    """CPU that processes other than ours use while we measure, in cores (Linux; None elsewhere)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.available = Path("/proc/stat").exists()
        self.cpus = os.cpu_count() or 1

    def snapshot(self) -> tuple[int, int, int]:
        busy, total = _machine_jiffies()
        return busy, total, _process_jiffies(self.pids)

    def foreign(self, before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
        busy, total, ours = (a - b for a, b in zip(after, before, strict=True))
        return max(0, busy - ours) / total * self.cpus if total > 0 else 0.0


@dataclass
class Round:
    session: int
    cpu_us: dict[str, float]
    wall_ms: dict[str, float]
    foreign_cores: float


def benchmark(variants: list[Variant], sessions: int, rounds: int, block: int, warmup: int, url: str,
              quiet: float, max_minutes: float) -> tuple[dict[str, Samples], list[Round]]:
    """Sessions of fresh processes; in each, rounds in which every variant times one block of calls.

    A round takes a few seconds, so a variant's block and bare's block of the same round saw nearly
    the same machine: their difference is the variant's added cost. Other work on a shared machine
    still inflates the CPU time of whatever runs beside it (caches, memory bandwidth, preemption), so
    a round is marked quiet only if other processes used at most `quiet` cores while it ran; a session
    goes on until it has `rounds` quiet rounds or its share of `max_minutes` is used.
    """
    samples = {v.name: Samples(v) for v in variants}
    done: list[Round] = []
    budget = max_minutes * 60 / sessions
    for session in range(sessions):
        log(f"session {session + 1}/{sessions}: starting {len(variants)} fresh worker processes "
            f"({warmup} warm-up calls each)")
        reset_server()
        workers = [Worker(v, url, warmup, hash_seed=session) for v in variants]
        meter = LoadMeter([w.process.pid for w in workers]
                          + ([_SERVER.pid] if _SERVER is not None else []) + [os.getpid()])
        started = time.monotonic()
        try:
            for w in workers:
                w.ready()
            quiet_rounds = r = 0
            foreign = 0.0
            while quiet_rounds < rounds and (time.monotonic() - started < budget or r < 2):
                shift = (r + session) % len(workers)
                order = workers[shift:] + workers[:shift]
                if r % 2:
                    order.reverse()
                cpu: dict[str, float] = {}
                wall: dict[str, float] = {}
                before = meter.snapshot()
                for w in order:
                    result = w.run(block)
                    wall[w.variant.name] = result["wall"] * 1e3
                    cpu[w.variant.name] = result["cpu"] * 1e6
                foreign = meter.foreign(before, meter.snapshot()) if meter.available else 0.0
                done.append(Round(session, cpu, wall, foreign))
                r += 1
                quiet_rounds += foreign <= quiet
                if r % 10 == 0 or quiet_rounds == rounds:
                    log(f"  round {r:>4} ({quiet_rounds}/{rounds} quiet; other work {foreign:.2f} cores)  "
                        "CPU µs/call: " + "  ".join(f"{n} {cpu[n]:.0f}" for n in cpu))
            for w in workers:
                summary = w.finish()
                s = samples[w.variant.name]
                s.version = summary["version"]
                s.spans_per_call.append(summary["spans"] / summary["calls"])
                s.function_calls.append(summary["function_calls"])
                s.last = summary
        finally:
            for w in workers:
                w.kill()
    return samples, done


def fill(samples: dict[str, Samples], used: list[Round]) -> None:
    for round_ in used:
        for name, cpu in round_.cpu_us.items():
            s = samples[name]
            s.cpu_us.append(cpu)
            s.wall_ms.append(round_.wall_ms[name])
            s.added_us.append(cpu - round_.cpu_us["bare"])


def _span_keys(result: dict[str, Any], scope: str | None = None) -> set[str]:
    for span in result.get("span_sample", []):
        if scope is None or span["scope"] == scope:
            return set(span["attributes"])
    return set()


def checks(samples: dict[str, Samples]) -> list[str]:
    """Sanity: every instrumented variant traced each call; the floor's span matches ours."""
    notes = []
    for name, s in samples.items():
        per_call = statistics.median(s.spans_per_call)
        if name != "bare" and per_call < 0.99:
            notes.append(f"`{name}` exported {per_call:.2f} spans per call: it did not trace every call.")
        if name == "bare" and per_call > 0:
            notes.append(f"`bare` exported {per_call:.2f} spans per call (expected none).")
    if "floor" in samples and "otel-llmcost" in samples:
        floor = _span_keys(samples["floor"].last, "floor")
        ours = _span_keys(samples["otel-llmcost"].last, "otel_llmcost")
        if floor != ours:
            notes.append(f"floor and otel-llmcost spans differ in attribute keys: only floor "
                         f"{sorted(floor - ours)}, only ours {sorted(ours - floor)}.")
        floor_metrics = samples["floor"].last.get("metrics", {})
        our_metrics = {k: v for k, v in samples["otel-llmcost"].last.get("metrics", {}).items() if v}
        if set(floor_metrics) != set(our_metrics):
            notes.append(f"floor and otel-llmcost record different metrics: floor {sorted(floor_metrics)}, "
                         f"ours {sorted(our_metrics)}.")
    return notes


def _fmt_spread(values: list[float], digits: int) -> str:
    q1, q2, q3 = _quartiles(values)
    return f"{q2:.{digits}f} ({q1:.{digits}f}–{q3:.{digits}f})"


def _fmt_ci(values: list[float]) -> str:
    low, high = _median_ci(values)
    return f"{statistics.median(values):.0f} [{low:.0f}, {high:.0f}]"


def _added_calls(samples: dict[str, Samples], name: str) -> float | None:
    if name not in samples or "bare" not in samples or not samples[name].function_calls:
        return None
    return statistics.median(samples[name].function_calls) - statistics.median(samples["bare"].function_calls)


def table(samples: dict[str, Samples], missing: dict[str, str]) -> str:
    floor_added = statistics.median(samples["floor"].added_us) if "floor" in samples else None
    lines = [
        "| variant | version | wall ms/call | CPU µs/call | added CPU µs over bare | × floor's added CPU "
        "| function calls added per call (× floor's) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        if variant.name in missing:
            lines.append(f"| {variant.label} | {missing[variant.name]} | – | – | – | – | – |")
            continue
        if variant.name not in samples:
            continue
        s = samples[variant.name]
        calls = _added_calls(samples, variant.name)
        if variant.name == "bare":
            added, ratio, calls_text = "0", "–", "0"
        else:
            added = _fmt_ci(s.added_us)
            median = statistics.median(s.added_us)
            ratio = f"{median / floor_added:.2f}" if floor_added and floor_added > 0 else "–"
            floor_calls = _added_calls(samples, "floor")
            calls_text = "–" if calls is None else (
                f"{calls:.0f} ({calls / floor_calls:.2f})" if floor_calls else f"{calls:.0f}")
        lines.append(f"| {variant.label} | {s.version} | {_fmt_spread(s.wall_ms, 3)} | "
                     f"{_fmt_spread(s.cpu_us, 0)} | {added} | {ratio} | {calls_text} |")
    return "\n".join(lines)


def verdict(samples: dict[str, Samples]) -> list[str]:
    """The goal from our issue: added CPU ≤ 1.3× the floor's and ≥ 3× below each peer's."""
    if not {"floor", "otel-llmcost"} <= samples.keys():
        return []
    ours = statistics.median(samples["otel-llmcost"].added_us)
    floor = statistics.median(samples["floor"].added_us)
    if floor <= 0:
        return [f"- The floor's added CPU ({floor:.0f} µs) is lost in the noise of this run: no verdict."]
    out = [f"- otel-llmcost adds {ours:.0f} µs CPU per call, {ours / floor:.2f}× the floor's {floor:.0f} µs "
           f"(goal ≤ 1.3×): **{'reached' if ours <= 1.3 * floor else 'not reached'}**."]
    for s in samples.values():
        if s.variant.peer:
            peer = statistics.median(s.added_us)
            factor = peer / ours if ours > 0 else float("inf")
            out.append(f"- {s.variant.label} adds {peer:.0f} µs, {factor:.2f}× ours "
                       f"(goal ≥ 3×): **{'reached' if factor >= 3 else 'not reached'}**.")
    return out


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def section(samples: dict[str, Samples], missing: dict[str, str], notes: list[str], params: dict[str, Any],
            environment: dict[str, str]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in environment.items() if k != "python")
    used = (f"{params['used']} of {params['total']} rounds, those during which other processes used at "
            f"most {params['quiet']} cores (median {params['foreign']:.2f})" if params["all_quiet"] else
            f"all {params['total']} rounds, as too few were quiet (other processes used a median "
            f"{params['foreign']:.2f} cores meanwhile)")
    nice = "" if params["nice"] is None else f" at nice {params['nice']}"
    body = [
        START,
        "## Overhead per non-streaming OpenAI chat completion",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/overhead.py"
        f"{' --quick' if params['quick'] else ''}` at {params['code']} on {machine()}; "
        f"Python {environment['python']}; {packages}.",
        "",
        f"{params['sessions']} sessions of fresh processes, one per variant{nice}, each warmed up with "
        f"{params['warmup']} calls; in each round every variant times a block of {params['block']} calls, in "
        "a rotated order, against one loopback server in a process of its own. Figures come from "
        f"{used}. *Wall* and *CPU* (the client "
        "process's, all its threads) are medians over those blocks, with the interquartile range in "
        "brackets. *Added CPU* is the median over rounds of the variant's block minus `bare`'s block of "
        "the same round, with a 95% confidence interval of that median in square brackets. *Function "
        "calls added* counts the Python and C function calls a call makes on the app's thread beyond "
        "`bare`'s (a profiling hook, outside the timed blocks): a measure of work that the machine's "
        "load does not blur, though calls differ in cost.",
        "",
        table(samples, missing),
        "",
        *verdict(samples),
        "",
        "`floor` is the bare call plus one hand-written CLIENT span with the attributes our span carries "
        "and the same metric records (a duration histogram, two token-usage records, one cost add), "
        "priced with fixed numbers: the least that telemetry of this content costs. Every variant has "
        "the same OpenTelemetry SDK setup: a BatchSpanProcessor feeding an exporter that drops spans, "
        "and an InMemoryMetricReader read only after the timed calls. Peers run with their defaults: "
        "OpenLLMetry and OpenInference record prompt and completion text on the span by default, "
        "otel-llmcost and openai-v2 do not; OpenInference records no metrics.",
    ]
    if notes:
        body += ["", "Checks:", *[f"- {n}" for n in notes]]
    body.append(END)
    return "\n".join(body)


def write_markdown(text: str) -> None:
    if BENCHMARKS_MD.exists():
        current = BENCHMARKS_MD.read_text()
        if START in current and END in current:
            head, rest = current.split(START, 1)
            _, tail = rest.split(END, 1)
            BENCHMARKS_MD.write_text(head + text + tail)
        else:
            BENCHMARKS_MD.write_text(current.rstrip("\n") + "\n\n" + text + "\n")
        return
    BENCHMARKS_MD.write_text(
        "# Benchmarks\n\n"
        "How to run: `python benchmarks/overhead.py --setup` makes `benchmarks/.venv` (this package "
        "editable, the current `openai`, and the peer instrumentations, kept out of your own "
        "environment); `python benchmarks/overhead.py` then runs every variant in fresh processes "
        "against a loopback OpenAI stand-in, prints the table below and rewrites the section between "
        "its markers (`--quick` for a short look; `--profile otel-llmcost` shows where our time goes). "
        "Each section names the machine it was measured on. Other work on the machine adds noise of the "
        "order of the differences measured: the script pairs and repeats to cancel it, but a quiet "
        "machine gives tighter intervals. See `benchmarks/README.md`.\n\n" + text + "\n"
    )


def code_state() -> str:
    """The commit measured, and whether our package had uncommitted changes (the venv installs it editable)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "otel_llmcost"], cwd=ROOT, text=True,
                               capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "outside git"
    return f"commit {head}" + (" with uncommitted changes under otel_llmcost/" if dirty else "")


def environment_versions() -> dict[str, str]:
    code = ("import importlib.metadata as m, json, platform; d = {'python': platform.python_version()}\n"
            "for n in ('openai', 'opentelemetry-sdk', 'otel-llmcost', 'wrapt'):\n"
            "    d[n] = m.version(n)\nprint(json.dumps(d))")
    out = subprocess.run([str(VENV_PY), "-c", code], text=True, capture_output=True, check=True).stdout
    return json.loads(out)


def profile(variant: str, url: str, calls: int, warmup: int, profiler: str) -> None:
    log(f"profiling {variant} with {profiler} over {calls} calls")
    command = [str(VENV_PY), str(Path(__file__).resolve()), "--worker", variant, "--base-url", url,
               "--warmup", str(warmup), "--profiler", profiler, "--calls", str(calls)]
    done = subprocess.run(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{variant}: {result['cpu'] * 1e6:.0f} µs CPU per call under {profiler} (the profiler adds "
          f"its own); the functions of otel_llmcost, per call:\n")
    print(f"{'inclusive µs':>12} {'self µs':>8}  where")
    for row in result["profile"][:30]:
        extra = f"  ×{row['calls_per_call']:.1f}" if "calls_per_call" in row else ""
        print(f"{row['inclusive_us']:12.1f} {row['self_us']:8.1f}  {row['where']}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="create or refresh benchmarks/.venv and exit")
    parser.add_argument("--quick", action="store_true", help="a short run (1 session × 20 rounds)")
    parser.add_argument("--sessions", type=int, help="sessions of fresh processes (default 3)")
    parser.add_argument("--rounds", type=int, help="quiet rounds wanted per session (default 150)")
    parser.add_argument("--block", type=int, help="timed calls per variant and round (default 20)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per process (default 200)")
    parser.add_argument("--quiet", type=float, default=0.25,
                        help="a round counts when other processes used at most this many cores (default 0.25)")
    parser.add_argument("--max-minutes", type=float, help="time budget for the rounds (default 25, quick 3)")
    parser.add_argument("--variants", help="comma-separated subset (bare and floor always run)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--profile", metavar="VARIANT", help="profile one variant instead of benchmarking")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default=None,
                        help="cprofile (default: exact call counts, inflated times) or pyinstrument (sampled, wall "
                             "clock)")
    parser.add_argument("--calls", type=int, default=3000, help="calls to profile (default 3000)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    quick = args.quick
    sessions = args.sessions or (1 if quick else 3)
    rounds = args.rounds or (20 if quick else 150)
    block = args.block or 20
    warmup = args.warmup if args.warmup is not None else (50 if quick else 200)
    args.max_minutes = args.max_minutes or (3 if quick else 25)

    if args.serve:
        serve()
        return
    if args.worker:
        worker(args.worker, args.base_url, warmup, args.profiler, args.calls)
        return
    if args.setup:
        setup()
        return

    state = json.loads(SETUP_STATE.read_text()) if SETUP_STATE.exists() and VENV_PY.exists() else setup()
    missing: dict[str, str] = {}
    openlit = state.get("openlit", {})
    if not openlit.get("installed"):
        missing["openlit"] = " ".join(filter(None, [openlit.get("version"), openlit.get("reason", "not installed")]))
    chosen = [v for v in VARIANTS if v.name not in missing]
    if args.variants:
        wanted = {"bare", "floor", *args.variants.split(",")}
        unknown = wanted - BY_NAME.keys()
        if unknown:
            raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
        chosen = [v for v in chosen if v.name in wanted]
    if args.profile and args.profile not in BY_NAME:
        raise SystemExit(f"unknown variant {args.profile!r}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the workers and the server are ended
    code_at_start = code_state()
    server, url = start_server()
    log(f"loopback server at {url} (pid {server.pid}); measuring {code_at_start}")
    try:
        if args.profile:
            profile(args.profile, url, args.calls, warmup, args.profiler or "cprofile")
            return
        log(f"{len(chosen)} variants: {sessions} sessions × {rounds} rounds × {block} calls "
            f"(+{warmup} warm-up per process)")
        samples, all_rounds = benchmark(chosen, sessions, rounds, block, warmup, url, args.quiet,
                                        args.max_minutes)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)

    quiet_rounds = [r for r in all_rounds if r.foreign_cores <= args.quiet]
    enough = len(quiet_rounds) >= max(3, len(all_rounds) // 4, sessions * rounds // 3)
    fill(samples, quiet_rounds if enough else all_rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"rounds": [vars(r) for r in all_rounds],
                               "workers": {n: s.last for n, s in samples.items()}}, indent=1))
    log(f"raw rounds in {raw.relative_to(ROOT)}")
    notes = checks(samples)
    if not enough:
        notes.append(f"Only {len(quiet_rounds)} of {len(all_rounds)} rounds ran while other work used at most "
                     f"{args.quiet} cores: all rounds are used, and the figures carry the machine's load "
                     "(other work used a median "
                     f"{statistics.median(r.foreign_cores for r in all_rounds):.2f} cores). Treat them as rough.")
    params = {"quick": quick, "sessions": sessions, "rounds": rounds, "block": block, "warmup": warmup,
              "quiet": args.quiet, "used": len(quiet_rounds) if enough else len(all_rounds),
              "total": len(all_rounds), "all_quiet": enough,
              "foreign": statistics.median(r.foreign_cores for r in (quiet_rounds if enough else all_rounds)),
              "nice": samples["bare"].last.get("nice"), "code": code_at_start}
    text = section(samples, missing, notes, params, environment_versions())
    print(text)
    if not args.no_write:
        write_markdown(text)
        log(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
