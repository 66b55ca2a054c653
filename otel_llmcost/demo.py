"""`otel-llmcost demo`: a realistic workload through the real SDKs, with no API key and no collector.

A built-in loopback server speaks the OpenAI, Anthropic and Gemini wire formats (and bills prompt
caching the way they do), so what the demo prints is exactly what the instrumentation records for a
real app: several users and tiers, a long system prompt sent on every call, streams, embeddings, and
one self-hosted model with no known price.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from . import embedded
from .context import attributes
from .testing.llm_server import LoopbackLLMServer

SYSTEM_PROMPT = (
    "You are the customer support assistant of Acme Outdoor Gear. Answer briefly and politely. "
    + " ".join(f"Policy {i}: items of category {i} may be returned within {14 + i % 30} days with a receipt; "
               f"shipping for category {i} is free above {20 + i}$." for i in range(90))
)
QUESTIONS = [
    "What is the return policy?", "How do I return an item?", "When does the store open?",
    "Do you ship to Canada?", "Can I exchange a tent I bought last week?", "What are your store hours?",
    "Is shipping free for orders above 50 dollars?", "Where is my order?",
    "Summarise the warranty terms for sleeping bags in three bullet points.",
    "Compare the trade-offs of down and synthetic insulation for winter camping.",
]
USERS = [("alice", "pro"), ("bob", "free"), ("carol", "enterprise"), ("dave", "free")]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def run_demo(store: Path | None = None, calls: int = 60, output: IO[str] | None = None, seed: int = 7) -> int:
    """Run the workload and print the cost summary; returns a process exit code."""
    out = output or sys.stdout
    if not _installed("openai") and not _installed("anthropic"):
        print("otel-llmcost demo needs the openai or anthropic SDK: pip install 'otel-llmcost[openai,anthropic]'",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = store or Path(tmp) / "demo.db"
        with LoopbackLLMServer() as server:
            url = server.url
            session = embedded.start(path, print_summary=False, set_global=False, register_atexit=False)
            try:
                done = _workload(server, calls, random.Random(seed), out)
            finally:
                summary = session.close()
        print(f"\n{done} LLM calls through the real SDKs against a loopback server at {url}", file=out)
        print(summary, file=out)
        if store:
            print(f"\ncalls kept in {path}", file=out)
    return 0


def _workload(server: LoopbackLLMServer, calls: int, rng: random.Random, out: IO[str]) -> int:
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
    done = 0
    for index in range(calls):
        user, tier = USERS[index % len(USERS)]
        question = rng.choice(QUESTIONS)
        feature = "support-chat" if index % 5 else "summaries"
        provider, client = clients[index % len(clients)]
        with attributes(user_id=user, tier=tier, feature=feature):
            _one_call(provider, client, question, tier, index)
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


def _one_call(provider: str, client: Any, question: str, tier: str, index: int) -> None:
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
