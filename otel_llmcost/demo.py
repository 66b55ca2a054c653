"""`otel-llmcost demo`: a realistic workload through the real SDKs, with no API key and no collector.

A built-in loopback server speaks the OpenAI, Anthropic and Gemini wire formats (and bills prompt
caching the way they do), so what the demo prints is exactly what the instrumentation records for a
real app: several users and tiers, a long system prompt sent on every call, streams, embeddings, and
one self-hosted model with no known price.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import random
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from . import embedded
from .context import attributes
from .errors import CallRefused
from .store import format_summary, summarize
from .testing.llm_server import LoopbackLLMServer

SYSTEM_PROMPT = (
    "You are the customer support assistant of Acme Outdoor Gear. Answer briefly and politely. "
    + " ".join(f"Policy {i}: items of category {i} may be returned within {14 + i % 30} days with a receipt; "
               f"shipping for category {i} is free above {20 + i}$." for i in range(90))
)
QUESTIONS = [
    "What is the return policy?", "What is your return policy?", "How do I return an item?",
    "When does the store open?", "When does the store open on Sunday?", "Do you ship to Canada?",
    "Can I exchange a tent I bought last week?", "What are your store hours?", "What are the store hours?",
    "Is shipping free for orders above 50 dollars?", "Where is my order?", "Hello",
    "Summarise the warranty terms for sleeping bags in three bullet points.",
    "Compare the trade-offs of down and synthetic insulation for winter camping, step by step, "
    "with weight, warmth when wet, durability and price.",
    "Analyze why our return rate for tents rose last quarter and propose a plan to reduce it.",
]
USERS = [("alice", "pro"), ("bob", "free"), ("carol", "enterprise"), ("dave", "free")]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


Exports = Callable[[], tuple[list[Any], list[Any]]]
"""Makes the extra span processors and metric readers of one run (fresh ones: a run shuts its own down)."""


def _no_exports() -> tuple[list[Any], list[Any]]:
    return [], []


def _otlp_exports(export_interval: float) -> tuple[list[Any], list[Any]]:
    from .traffic import otlp_pipeline

    processor, reader = otlp_pipeline(export_interval)
    return [processor], [reader]


def run_demo(store: Path | None = None, calls: int = 60, output: IO[str] | None = None, seed: int = 7,
             otlp: bool = False, export_interval: float = 2.0) -> int:
    """Run the workload without and with the cost guard, print both side by side and the summary of the
    guarded run, then the budget alerts demo; returns a process exit code.

    `otlp`: also send both runs' spans and metrics over OTLP (`OTEL_EXPORTER_OTLP_*`), e.g. to a Collector.
    """
    out = output or sys.stdout
    if not _installed("openai") and not _installed("anthropic"):
        print("otel-llmcost demo needs the openai or anthropic SDK: pip install 'otel-llmcost[demo]'",
              file=sys.stderr)
        return 2
    if not _installed("numpy"):  # the guarded run's semantic cache
        print("otel-llmcost demo needs numpy for its response cache: pip install 'otel-llmcost[demo]'",
              file=sys.stderr)
        return 2
    exports: Exports = _no_exports
    if otlp:
        from .traffic import DEFAULT_SERVICE_NAME, OTLPSetupError, otlp_exporters, otlp_target

        try:
            otlp_exporters()  # fail before the runs when the exporter is missing
        except OTLPSetupError as exc:
            print(f"otel-llmcost demo: {exc}", file=sys.stderr)
            return 2
        os.environ.setdefault("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
        exports = functools.partial(_otlp_exports, export_interval)
        print(f"Sending spans and metrics over OTLP to {otlp_target()}", file=out)
    with tempfile.TemporaryDirectory() as tmp:
        path = store or Path(tmp) / "demo.db"
        with LoopbackLLMServer() as server:
            url = server.url
            print(f"Before: {calls} calls, every one sent to the model it names", file=out)
            before = _run(server, path, "before", calls, seed, out, guarded=False, exports=exports)
            print("After: the same calls through the cost guard (cache, routing, rate limits, budget)", file=out)
            after = _run(server, path, "after", calls, seed, out, guarded=True, exports=exports)
            print(f"\n{calls + 2} LLM calls a run through the real SDKs against a loopback server at {url}",
                  file=out)
            print(_compare(path, before, after), file=out)
            print(format_summary(summarize(path, after)), file=out)
            print(_alerts_demo(server), file=out)
        if store:
            print(f"\ncalls kept in {path}", file=out)
    return 0


def _run(server: LoopbackLLMServer, path: Path, run_id: str, calls: int, seed: int, out: IO[str],
         *, guarded: bool, exports: Exports) -> str:
    server.reset()  # the provider's prompt cache starts cold for both runs
    processors, readers = exports()
    session = embedded.start(path, run_id=run_id, print_summary=False, set_global=False, register_atexit=False,
                             span_processors=processors, metric_readers=readers)
    try:
        if guarded:
            _install_demo_guard(session.telemetry)
        _workload(server, calls, random.Random(seed), out)
    finally:
        session.close()
    return run_id


def _install_demo_guard(telemetry: Any) -> None:
    from .cache import ExactCache, SemanticCache
    from .cache.callpath import ResponseCache
    from .cache.embedders import HashingEmbedder
    from .cache.policy import GuardedPolicy, ThresholdPolicy
    from .guard import install_guard
    from .ratelimit import RateLimiter
    from .ratelimit.tiers import DEFAULT_TIERS
    from .routing import Router, parse_routing_config

    # The hashing embedder keeps the demo quick and offline; MiniLM (the embeddings extra) matches
    # more paraphrases: see `otel-llmcost cache-eval`.
    semantic = SemanticCache(HashingEmbedder(), GuardedPolicy(ThresholdPolicy(0.8)))
    cheap = ["gpt-5.4-mini", "claude-haiku-4-5", "gemini-2.5-flash"]
    table = parse_routing_config({"routing": {
        "tiers": {"free": {"allowed": cheap},
                  "pro": {"allowed": [*cheap, "gpt-5.4", "claude-sonnet-4-6", "gemini-2.5-pro"]},
                  "enterprise": {"allowed": "*"}},
        "complexity": {"simple": {"openai": "gpt-5.4-mini", "anthropic": "claude-haiku-4-5",
                                  "gcp.gemini": "gemini-2.5-flash"},
                       "medium": {"openai": "gpt-5.4", "anthropic": "claude-sonnet-4-6",
                                  "gcp.gemini": "gemini-2.5-pro"}}}}, "demo")
    router = Router.from_config(table, prices=telemetry.catalog)
    install_guard(telemetry=telemetry, limiter=RateLimiter(DEFAULT_TIERS), router=router,
                  # A support bot's answers to FAQs may be reused even when sampled: it opts in.
                  cache=ResponseCache(ExactCache(), semantic, cache_all=True, catalog=telemetry.catalog))


def _compare(path: Path, before: str, after: str) -> str:
    import sqlite3

    def figures(run_id: str) -> dict[str, float]:
        with sqlite3.connect(path) as db:
            rows = db.execute(
                "SELECT coalesce(cost_usd, 0), cache_status, route_from_model, (end_unix_nano - start_unix_nano) / 1e6,"
                " error_type FROM calls WHERE run_id = ? AND scope = 'otel_llmcost'", (run_id,)).fetchall()
        latencies = sorted(r[3] for r in rows)
        served = [r for r in rows if r[4] is None]
        hits = sum(1 for r in served if r[1] in ("exact_hit", "semantic_hit"))
        return {
            "calls": len(rows),
            "cost": sum(r[0] for r in rows),
            "hit_rate": hits / len(served) if served else 0.0,
            "routed": sum(1 for r in served if r[2]) / len(served) if served else 0.0,
            "refused": len(rows) - len(served),
            "p95": latencies[max(0, int(len(latencies) * 0.95) - 1)] if latencies else 0.0,
        }

    b, a = figures(before), figures(after)
    saving = (1 - a["cost"] / b["cost"]) if b["cost"] else 0.0
    lines = [
        "                         before        after",
        f"  LLM cost (USD)      {b['cost']:>10.6f}   {a['cost']:>10.6f}   saving {saving:.0%}",
        f"  cache hit rate      {b['hit_rate']:>10.0%}   {a['hit_rate']:>10.0%}",
        f"  routed to cheaper   {b['routed']:>10.0%}   {a['routed']:>10.0%}",
        f"  refused (limits)    {b['refused']:>10.0f}   {a['refused']:>10.0f}",
        f"  p95 latency (ms)    {b['p95']:>10.1f}   {a['p95']:>10.1f}",
    ]
    return "\n".join(lines)


def _alerts_demo(server: LoopbackLLMServer) -> str:
    """The lesson's breaker on a small budget: warn, throttle to the cheaper model, then stop."""
    if not _installed("openai"):
        return ""
    import openai
    from opentelemetry.sdk.trace import TracerProvider

    import otel_llmcost

    from .budget import Budget, BudgetConfig, BudgetEngine, BudgetExceededError, Routing
    from .budget.alerts import Alert
    from .budget.processor import enable_budgets

    alerts: list[Alert] = []

    class _Collect:
        def send(self, alert: Alert) -> None:
            alerts.append(alert)

    engine = BudgetEngine(BudgetConfig(budgets=(Budget("demo-monthly", Decimal("0.05")),),
                                       routing=Routing({"gpt-5.4": "gpt-5.4-mini"})), sinks=[_Collect()])
    otel_llmcost.instrument(tracer_provider=TracerProvider())
    processor = enable_budgets(engine=engine, enforce=True, otel_alerts=False)
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="demo", max_retries=0)
    models: list[str] = []
    refused = 0
    try:
        for _ in range(200):
            try:
                models.append(client.chat.completions.create(
                    model="gpt-5.4", max_tokens=60,
                    messages=[{"role": "system", "content": SYSTEM_PROMPT[:2000]},
                              {"role": "user", "content": "Summarise our policies."}]).model)
            except BudgetExceededError:
                refused += 1
    finally:
        processor.shutdown()
        otel_llmcost.uninstrument()
    lines = ["\nBudget alerts demo: $0.05 monthly budget, 200 calls asking for gpt-5.4"]
    lines += [f"  ALERT [{a.level.upper()}] {a.text()}" for a in alerts]
    lines.append(f"  served by gpt-5.4: {models.count('gpt-5.4')}, by gpt-5.4-mini after throttle: "
                 f"{models.count('gpt-5.4-mini')}, refused at stop: {refused}")
    return "\n".join(lines)


def installed_clients(server: LoopbackLLMServer) -> list[tuple[str, Any]]:
    """A client of each installed SDK, pointed at the loopback server, as (provider, client)."""
    clients: list[tuple[str, Any]] = []
    if _installed("openai"):
        import openai

        clients.append(("openai", openai.OpenAI(base_url=server.openai_base_url, api_key="demo", max_retries=0)))
    if _installed("anthropic"):
        import anthropic

        clients.append(("anthropic", anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="demo",
                                                         max_retries=0)))
    if _installed("google.genai"):
        from google import genai
        from google.genai import types

        clients.append(("google", genai.Client(api_key="demo",
                                               http_options=types.HttpOptions(base_url=server.google_base_url))))
    return clients


def _workload(server: LoopbackLLMServer, calls: int, rng: random.Random, out: IO[str]) -> int:
    clients = installed_clients(server)
    done = 0
    for index in range(calls):
        user, tier = USERS[index % len(USERS)]
        question = rng.choice(QUESTIONS)
        feature = "support-chat" if index % 5 else "summaries"
        provider, client = clients[index % len(clients)]
        # A rate limit or budget may say no: counted on the span, shown in the comparison.
        with attributes(user_id=user, tier=tier, feature=feature), contextlib.suppress(CallRefused):
            one_call(provider, client, question, tier, index)
        done += 1
        if done % 10 == 0 or done == calls:
            print(f"\r  {done}/{calls} calls", end="", file=out, flush=True)
    if clients and clients[0][0] == "openai":
        with attributes(user_id="ops", tier="enterprise", feature="search-index"):
            clients[0][1].embeddings.create(model="text-embedding-3-small", input=QUESTIONS)
            # A self-hosted model nobody has a price for: shown as unpriced, never as free.
            clients[0][1].chat.completions.create(model="acme-llm-7b",
                                                  messages=[{"role": "user", "content": "ping"}])
        done += 2
    print(file=out)
    return done


def one_call(provider: str, client: Any, question: str, tier: str, index: int) -> None:
    """One call of the workload: the provider's usual shape, a stream every third call."""
    if provider == "openai":
        model = "gpt-5.4-mini" if tier == "free" else "gpt-5.4"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        if index % 3 == 0:
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True, max_tokens=200):
                pass
        else:
            client.chat.completions.create(model=model, messages=messages, max_tokens=200, temperature=0)
    elif provider == "anthropic":
        model = "claude-haiku-4-5" if tier == "free" else "claude-sonnet-4-6"
        system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
        if index % 3 == 0:
            with client.messages.stream(model=model, max_tokens=200, system=system,
                                        messages=[{"role": "user", "content": question}]) as stream:
                for _ in stream.text_stream:
                    pass
        else:
            client.messages.create(model=model, max_tokens=200, system=system,
                                   messages=[{"role": "user", "content": question}])
    else:
        model = "gemini-2.5-flash" if tier == "free" else "gemini-2.5-pro"
        client.models.generate_content(model=model, contents=f"{SYSTEM_PROMPT}\n\n{question}")
