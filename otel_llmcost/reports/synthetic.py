"""A synthetic but realistic call log with known answers: for the tests, and for the README's example.

Several weeks of traffic (more on weekdays than at weekends), four users on three tiers, four
features, five models of three providers. Each call is built as the SDK call an app would make
(a long shared system prompt in support sessions, FAQs asked again, nightly summaries) and
fingerprinted with the real `fingerprint()`, priced with the real catalog, then recorded as a real
OpenTelemetry span (explicit start and end times) into the embedded store, OTLP JSON lines, or
OpenMetrics counters (for `promtool tsdb create-blocks-from openmetrics`).

What the generator knows is kept on each `SyntheticCall` (`duplicate_of_recent`, `session_index`), so a
test computes the expected savings from the workload's design, not from the advisor's code.

    python -m otel_llmcost.reports.synthetic llmcost-example.db   # then: otel-llmcost report llmcost-example.db
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import names
from ..fingerprint import fingerprint
from ..pricing import PriceCatalog, Usage

SYSTEM_PROMPT = " ".join(
    f"Policy {i}: answer support questions about orders, returns, shipping and accounts politely, "
    f"cite the policy section, never promise refunds beyond section {i % 7 + 1}." for i in range(70)
)
"""~9,800 characters (~2,450 estimated tokens): past the 1024 and 2048 prefix boundaries."""
FAQS = ("What time do you close?", "Where is my order?", "How do I reset my password?",
        "Do you ship to Canada?", "What is the return policy?")
HARD = ("Design a migration plan from our monolith to services with zero downtime and explain the trade-offs.",
        "Diagnose why our checkout intermittently hangs under load and propose a root cause analysis.")
MEDIUM = ("Summarize this customer's complaint in three sentences for the ticket.",
          "Explain how our loyalty points expire and draft an email to the customer.")

USERS = (("u-ana", "enterprise"), ("u-ben", "pro"), ("u-cho", "pro"), ("u-dev", "free"))


@dataclass
class SyntheticCall:
    start: datetime
    duration_s: float
    provider: str
    model: str
    user: str
    tier: str
    feature: str
    usage: Usage
    cost: Decimal
    attributes: dict[str, Any] = field(default_factory=dict)
    duplicate_of_recent: bool = False
    """Repeats a request answered less than an hour before (same tenant, model and prompt)."""
    session_index: int = -1
    """Position in a support session sharing the long system prompt (0: the first call), else -1."""
    cache_status: str | None = None
    saved: Decimal | None = None


def _kwargs(model: str, question: str, system: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
    return {"model": model, "messages": messages, "temperature": 0}


def generate(start: date, days: int, *, weekday_calls: int = 60, weekend_calls: int = 20, seed: int = 11,
             catalog: PriceCatalog | None = None) -> list[SyntheticCall]:
    """`days` days of calls from `start` (UTC), sorted by time."""
    rng = random.Random(seed)
    catalog = catalog or PriceCatalog()
    calls: list[SyntheticCall] = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        weekend = day.weekday() >= 5
        count = weekend_calls if weekend else weekday_calls
        count = max(1, count + rng.randint(-count // 6, count // 6))
        # Support sessions: bursts of 3-5 calls within ~2 minutes on the long system prompt, 2 hours apart.
        for burst in range(2 if weekend else 5):
            at = midnight + timedelta(hours=8 + 2 * burst, minutes=rng.randint(0, 20))
            for index in range(rng.randint(3, 5)):
                user, tier = USERS[burst % len(USERS)]
                question = rng.choice(FAQS) + f" (ticket {offset}-{burst}-{index})"
                calls.append(_call(catalog, rng, at + timedelta(seconds=25 * index), "anthropic",
                                   "claude-sonnet-4-6", user, tier, "support-bot", question, True, index))
        for _ in range(count):
            at = midnight + timedelta(seconds=rng.randint(9 * 3600, 21 * 3600))
            user, tier = rng.choice(USERS)
            roll = rng.random()
            if roll < 0.15:
                feature, provider, model = "nightly-summary", "openai", "gpt-5.4"
                at = midnight + timedelta(hours=2, seconds=rng.randint(0, 3000))
                question = rng.choice(MEDIUM) + f" #{rng.randint(0, 10**6)}"
            elif roll < 0.55:
                feature, provider, model = "search", "openai", rng.choice(("gpt-5.4", "gpt-5.4-mini"))
                question = rng.choice(FAQS) if rng.random() < 0.5 else rng.choice(MEDIUM) + f" #{rng.randint(0, 10**6)}"
            elif roll < 0.85:
                feature, provider, model = "chat", "gcp.gemini", "gemini-2.5-flash"
                question = rng.choice(MEDIUM + HARD) + f" #{rng.randint(0, 10**6)}"
            else:
                feature, provider, model = "chat", "anthropic", "claude-haiku-4-5"
                question = rng.choice(FAQS + HARD) + f" #{rng.randint(0, 10**6)}"
            call = _call(catalog, rng, at, provider, model, user, tier, feature, question, False, -1)
            if feature == "search":  # search goes through the semantic cache: 1 in 8 is answered from it
                call.cache_status = "miss"
                if rng.random() < 0.125:
                    call.cache_status, call.saved = "semantic_hit", call.cost
                    call.usage, call.cost = Usage(), Decimal(0)
                    call.attributes[names.LLMCOST_CACHE_SIMILARITY] = round(rng.uniform(0.9, 0.99), 4)
            calls.append(call)
        # Exact duplicates, judged in time order once the day's calls are known: the same user asking
        # the same request answered (not served from a cache) less than an hour before.
        day_calls = sorted((c for c in calls if c.start.date() == day and c.session_index < 0), key=lambda c: c.start)
        recent: dict[tuple[str, str], datetime] = {}
        for call in day_calls:
            if call.cache_status == "semantic_hit":
                continue
            key = (call.user, str(call.attributes[names.LLMCOST_QUERY_HASH]))
            previous = recent.get(key)
            call.duplicate_of_recent = previous is not None and call.start - previous <= timedelta(hours=1)
            recent[key] = call.start
    calls.sort(key=lambda c: c.start)
    return calls


def _call(catalog: PriceCatalog, rng: random.Random, at: datetime, provider: str, model: str, user: str, tier: str,
          feature: str, question: str, system: bool, session_index: int) -> SyntheticCall:
    kwargs = _kwargs(model, question, system)
    attrs = fingerprint(provider, model, kwargs, complexity_rate=1.0)
    prompt_tokens = (len(SYSTEM_PROMPT) // 4 if system else 0) + len(question) // 4 + 12
    output = rng.randint(60, 600) if "Design" not in question and "Diagnose" not in question else rng.randint(900, 2000)
    usage = Usage(input_tokens=prompt_tokens, output_tokens=output)
    cost = catalog.cost(usage, model, provider).total
    return SyntheticCall(at, rng.uniform(0.4, 3.5) + output / 400, provider, model, user, tier, feature, usage, cost,
                         attrs, session_index=session_index)


# --- writers ------------------------------------------------------------------------------------------------
def _span_attributes(call: SyntheticCall) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        names.GEN_AI_OPERATION_NAME: "chat", names.GEN_AI_PROVIDER_NAME: call.provider,
        names.GEN_AI_REQUEST_MODEL: call.model, names.GEN_AI_RESPONSE_MODEL: call.model,
        names.LLMCOST_USER_ID: call.user, names.LLMCOST_USER_TIER: call.tier, names.LLMCOST_FEATURE: call.feature,
        names.GEN_AI_USAGE_INPUT_TOKENS: call.usage.input_tokens,
        names.GEN_AI_USAGE_OUTPUT_TOKENS: call.usage.output_tokens,
        names.GEN_AI_USAGE_COST: float(call.cost), names.LLMCOST_PRICE_KNOWN: True, **call.attributes,
    }
    if call.usage.cache_read_tokens:
        attrs[names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = call.usage.cache_read_tokens
    if call.cache_status is not None:
        attrs[names.LLMCOST_CACHE_STATUS] = call.cache_status
    if call.saved is not None:
        attrs[names.LLMCOST_COST_SAVED] = float(call.saved)
    return attrs


def spans(calls: Iterable[SyntheticCall]) -> list[Any]:
    """The calls as finished OpenTelemetry spans of our instrumentation scope."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from ..telemetry import SCOPE

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(SCOPE, "0.1.0")
    for call in calls:
        start_ns = int(call.start.timestamp() * 1e9)
        span = tracer.start_span(f"chat {call.model}", kind=SpanKind.CLIENT, start_time=start_ns,
                                 attributes=_span_attributes(call))
        span.end(end_time=start_ns + int(call.duration_s * 1e9))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def write_store(calls: Sequence[SyntheticCall], path: str | Path) -> Path:
    from ..store import LocalStoreSpanExporter

    exporter = LocalStoreSpanExporter(path, run_id="synthetic")
    try:
        exporter.export(spans(calls))
    finally:
        exporter.shutdown()
    return Path(path)


def otlp_json_lines(calls: Sequence[SyntheticCall], per_line: int = 200) -> list[str]:
    """OTLP JSON export requests, one per line, as the Collector's file exporter writes them
    (trace and span ids in hex, 64-bit integers as strings)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    finished = spans(calls)
    lines = []
    for i in range(0, len(finished), per_line):
        body = MessageToDict(encode_spans(finished[i:i + per_line]))
        for resource in body.get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if span.get(key):
                            import base64

                            span[key] = base64.b64decode(span[key]).hex()
        lines.append(json.dumps(body, separators=(",", ":")))
    return lines


def write_openmetrics(calls: Sequence[SyntheticCall], path: str | Path, step: timedelta = timedelta(hours=1)) -> Path:
    """Cumulative counters at the end of each step, named as the Collector's prometheus exporter names
    them, in OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`."""
    families = ("gen_ai_client_operation_duration_seconds_count", "llmcost_cost_USD_total",
                "gen_ai_client_token_usage_sum")
    seconds = int(step.total_seconds())
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]] = {}
    ordered = sorted(calls, key=lambda c: c.start)
    if not ordered:
        raise ValueError("no calls to write")
    first = int(ordered[0].start.timestamp()) // seconds * seconds
    last = int(ordered[-1].start.timestamp()) // seconds * seconds + seconds
    index = 0
    for boundary in range(first + seconds, last + seconds, seconds):
        while index < len(ordered) and ordered[index].start.timestamp() < boundary:
            call = ordered[index]
            labels: tuple[tuple[str, str], ...] = (("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", call.provider),
                      ("gen_ai_request_model", call.model), ("gen_ai_response_model", call.model),
                      ("llmcost_feature", call.feature), ("llmcost_user_tier", call.tier))
            for metric, amount, extra in (
                ("gen_ai_client_operation_duration_seconds_count", 1.0, ()),
                ("llmcost_cost_USD_total", float(call.cost), ()),
                ("gen_ai_client_token_usage_sum", float(call.usage.input_tokens), (("gen_ai_token_type", "input"),)),
                ("gen_ai_client_token_usage_sum", float(call.usage.output_tokens), (("gen_ai_token_type", "output"),)),
            ):
                key = (metric, tuple(sorted(labels + extra)))
                totals[key] = totals.get(key, 0.0) + amount
            index += 1
        for key, value in totals.items():
            samples.setdefault(key, []).append((boundary, value))
    lines = []
    for family in families:
        lines.append(f"# TYPE {family} unknown")
        for (metric, labels), points in samples.items():
            if metric != family:
                continue
            text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.extend(f"{metric}{{{text}}} {value!r} {stamp}" for stamp, value in points)
    lines.append("# EOF")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Write an example store of five weeks ending yesterday (for the README's report)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m otel_llmcost.reports.synthetic STORE.db", file=sys.stderr)
        return 2
    today = datetime.now(timezone.utc).date()
    calls = generate(today - timedelta(days=35), 35)
    write_store(calls, args[0])
    print(f"wrote {len(calls)} synthetic calls to {args[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
