"""Processor ingest throughput: OTLP/HTTP protobuf span batches into `otel-llmcost processor`.

    python benchmarks/processor_ingest.py [--seconds 10] [--spans 512] [--connections 2] [--gzip]

Starts the real service (CLI, SQLite ledger in a temporary directory, span accounting on, three
budgets: global, per user, per feature) pinned to one CPU core, and posts pre-built export requests of
`--spans` GenAI spans each (realistic attributes: model, provider, usage with cache reads, attribution,
response id, finish reasons, server address) from client threads pinned to another core. Every span
is priced, deduplicated by span id and counted against budgets in one SQLite transaction per request.
Reports spans/s, request latency and the service's resident memory (current and peak).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

ROOT = Path(__file__).resolve().parents[1]
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"),
          ("anthropic", "claude-sonnet-4-5"), ("gcp.gemini", "gemini-2.5-flash")]
CONFIG = """
ledger: sqlite:///{db}
forecast: false
budgets:
  - {{name: monthly, amount: 100000000}}
  - {{name: per-user, amount: 1000000, window: day, scope: {{by: user}}}}
  - {{name: per-feature, amount: 1000000, window: day, scope: {{by: feature}}}}
alerts: {{log: false}}
processor:
  span_accounting: {mode}
  max_body: 64MiB
"""


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def build_request(rng: random.Random, spans: int, marker: bytes) -> bytes:
    """One export request; every trace id starts with `marker`, which the sender replaces per send so
    that each request carries spans never seen before (resends would be dedup hits, a cheaper path)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "support-bot"), _kv("service.instance.id", "pod-7"),
                                   _kv("deployment.environment.name", "prod"),
                                   _kv("telemetry.sdk.language", "python")])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    for _ in range(spans):
        provider, model = rng.choice(MODELS)
        input_tokens = rng.randrange(50, 8000)
        span = ss.spans.add(trace_id=marker + rng.randbytes(8), span_id=rng.randbytes(8), name=f"chat {model}",
                            kind=3, start_time_unix_nano=time.time_ns(), end_time_unix_nano=time.time_ns())
        span.attributes.extend([
            _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", provider),
            _kv("gen_ai.request.model", model), _kv("gen_ai.response.model", model),
            _kv("gen_ai.request.temperature", 0.2), _kv("gen_ai.request.max_tokens", 1024),
            _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):x}"),
            _kv("gen_ai.usage.input_tokens", input_tokens),
            _kv("gen_ai.usage.cache_read.input_tokens", rng.choice((0, 0, input_tokens // 2))),
            _kv("gen_ai.usage.output_tokens", rng.randrange(1, 1024)),
            _kv("server.address", "api.example.com"), _kv("server.port", 443),
            _kv("llmcost.user.id", f"user-{rng.randrange(500)}"), _kv("llmcost.user.tier", rng.choice(("free", "pro"))),
            _kv("llmcost.feature", rng.choice(("search", "chat", "summarise"))),
        ])
        finish = span.attributes.add(key="gen_ai.response.finish_reasons")
        finish.value.array_value.values.add(string_value="stop")
    return request.SerializeToString()


def rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    current = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return current, peak


def count_calls(bodies: list[bytes], markers: list[bytes], spans: int, mode: str) -> None:
    """Function calls per span of the ingest path (decode, price, match, commit), in this process."""
    import cProfile
    import pstats

    from otel_llmcost.budget import BudgetEngine, load_budget_config
    from otel_llmcost.service import ProcessorConfig, ProcessorService, open_store

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "processor.yaml"
        config.write_text(CONFIG.format(db=Path(tmp) / "ledger.db", mode=mode))
        store = open_store(f"sqlite:///{Path(tmp) / 'ledger.db'}", retention=86400.0)
        engine = BudgetEngine(load_budget_config(config), store, [])
        service = ProcessorService(engine, store, ProcessorConfig(span_accounting=mode))
        serial = itertools.count(1)

        def fresh() -> bytes:
            n = next(serial)
            return bodies[n % len(bodies)].replace(markers[n % len(bodies)], n.to_bytes(8, "big"))

        for _ in range(2 * len(bodies)):  # warm: price look-ups, attribute and scope caches
            service.ingest("traces", fresh(), "application/x-protobuf", None)
        # CPU per request, 40 of them: the lowest quartile is the figure least blurred by other processes
        # on the machine (they slow this one down through shared caches and clocks, never speed it up).
        cpus = []
        for body in [fresh() for _ in range(40)]:
            began = time.process_time()
            service.ingest("traces", body, "application/x-protobuf", None)
            cpus.append(time.process_time() - began)
        cpus.sort()
        cpu, median = cpus[len(cpus) // 4], cpus[len(cpus) // 2]
        profile = cProfile.Profile()
        profile.enable()
        for body in [fresh() for _ in range(10)]:
            service.ingest("traces", body, "application/x-protobuf", None)
        profile.disable()
        calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
        engine.close()
        store.close()
    print(f"in-process ingest (no HTTP, {mode}): {cpu / spans * 1e6:.1f} µs CPU per span, lower quartile of 40 "
          f"requests ({spans / cpu:,.0f} spans per CPU-second; median {spans / median:,.0f}); "
          f"{calls / (10 * spans):.1f} function calls per span")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spans", type=int, default=512, help="spans per request")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--gzip", action="store_true", help="gzip bodies (the Collector's default)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--count-calls", action="store_true",
                        help="also count Python and C function calls per span in-process (a measure of work the "
                             "machine's load does not blur)")
    parser.add_argument("--span-accounting", choices=("off", "foreign", "all"), default="all",
                        help="the processor's span_accounting: all (default here) commits every span's dedup mark "
                             "and spend; off (the processor's default) only prices spans")
    parser.add_argument("--py-spy", metavar="SVG", default=None,
                        help="record a py-spy flame graph of the service during the run (needs py-spy)")
    args = parser.parse_args()

    rng = random.Random(1)
    markers = [rng.randbytes(8) for _ in range(16)]
    bodies = [build_request(rng, args.spans, marker) for marker in markers]
    if args.count_calls:
        count_calls(bodies, markers, args.spans, args.span_accounting)
    mode = args.span_accounting
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "processor.yaml"
        config.write_text(CONFIG.format(db=Path(tmp) / "ledger.db", mode=mode))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen(
            [sys.executable, "-m", "otel_llmcost.cli", "processor", "--config", str(config), "--port", "0",
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, {args.server_cpu}))
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(re.search(r":(\d+) ", line).group(1))  # type: ignore[union-attr]
        os.sched_setaffinity(0, {args.client_cpu})
        idle_rss = rss_kib(server.pid)[0]
        latencies: list[float] = []
        sent = [0]
        lock = threading.Lock()
        stop_at = [0.0]
        fresh = itertools.count(1)

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Content-Type": "application/x-protobuf"}
            if args.gzip:
                headers["Content-Encoding"] = "gzip"
            while time.perf_counter() < stop_at[0]:
                serial = next(fresh)
                template = bodies[serial % len(bodies)]
                body = template.replace(markers[serial % len(bodies)], serial.to_bytes(8, "big"))
                if args.gzip:
                    body = gzip.compress(body, 1)
                began = time.perf_counter()
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"status {response.status}")
                with lock:
                    latencies.append(time.perf_counter() - began)
                    sent[0] += 1
            conn.close()

        # warm-up: price look-ups and caches, then the measured run
        stop_at[0] = time.perf_counter() + 1.0
        client()
        latencies.clear()
        sent[0] = 0
        stat_before = Path(f"/proc/{server.pid}/stat").read_text().split()
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(["py-spy", "record", "-o", args.py_spy, "-p", str(server.pid), "-d",
                                    str(int(args.seconds)), "-r", "200", "--nonblocking", "-f", "raw"])
        began = time.perf_counter()
        stop_at[0] = began + args.seconds
        threads = [threading.Thread(target=client) for _ in range(args.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        stat_after = Path(f"/proc/{server.pid}/stat").read_text().split()
        ticks = os.sysconf("SC_CLK_TCK")
        server_cpu = (int(stat_after[13]) + int(stat_after[14]) - int(stat_before[13]) - int(stat_before[14])) / ticks
        current, peak = rss_kib(server.pid)
        if spy is not None:
            spy.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)
    spans = sent[0] * args.spans
    print(f"requests: {sent[0]} x {args.spans} spans in {elapsed:.1f} s over {args.connections} connection(s)"
          f"{' (gzip)' if args.gzip else ''}, span_accounting: {mode}; load average {os.getloadavg()[0]:.1f}")
    print(f"throughput: {spans / elapsed:,.0f} spans/s wall; {spans / max(server_cpu, 1e-9):,.0f} spans per "
          f"server CPU-second (server CPU {server_cpu:.1f} s of {elapsed:.1f} s)")
    if latencies:
        ordered = sorted(latencies)
        print(f"latency per request: p50 {statistics.median(ordered) * 1000:.1f} ms, "
              f"p95 {ordered[int(len(ordered) * 0.95)] * 1000:.1f} ms")
    print(f"server RSS: idle {idle_rss / 1024:.0f} MiB, after {current / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
