"""What the router reads from a call: the last user message of each SDK's arguments; end-to-end routes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from otel_llmcost.routing import Router, RouteRequest, last_user_text


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                       {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]}, "second"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "look at"},
                                                    {"type": "image_url", "image_url": {"url": "x"}},
                                                    {"type": "text", "text": "this"}]}]}, "look at\nthis"),
        ({"input": "responses api text"}, "responses api text"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "responses list"}]}]},
         "responses list"),
        ({"system": "You are terse.", "messages": [{"role": "user", "content": [{"type": "text", "text": "claude"}]}]},
         "claude"),
        ({"contents": "gemini text"}, "gemini text"),
        ({"contents": [SimpleNamespace(role="user", parts=[SimpleNamespace(text="gemini parts")])]}, "gemini parts"),
        ({"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]}, "a"),
        ({"model": "gpt-4o"}, ""),
    ],
)
def test_last_user_text(kwargs, expected):
    """The last user message's text is found in OpenAI, Responses, Anthropic and google-genai shapes."""
    assert last_user_text(kwargs) == expected


def test_route_request_from_call_estimates_the_prompt():
    """from_call takes the last user message and sizes the whole prompt at ~4 characters a token
    (pricing's estimate: 400 + 2 characters of content and 10 of role names → 103 tokens)."""
    request = RouteRequest.from_call(
        "gpt-4o", "openai", {"messages": [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "hi"}]}
    )
    assert (request.text, request.prompt_tokens) == ("hi", 103)


def test_route_classifies_the_text_end_to_end(router):
    """Without a given complexity the router classifies the query itself."""
    cheap = router.route(RouteRequest("gpt-4o", "openai", "What are your opening hours on Sunday?"), "pro")
    hard = router.route(
        RouteRequest("gpt-4o", "openai", "Design a sharded architecture for our ledger and explain the trade-offs."),
        "pro",
    )
    assert (cheap.complexity, cheap.model) == ("simple", "gpt-4o-mini")
    assert (hard.complexity, hard.model) == ("complex", "gpt-4o")


def test_route_batch_equals_route(router):
    """route_batch classifies in one batch and decides exactly as route does one by one."""
    requests = [RouteRequest("claude-opus-4-1", "anthropic", text) for text in ("thanks!", "Explain TCP slow start.")]
    assert router.route_batch(requests, "enterprise") == [router.route(r, "enterprise") for r in requests]


def test_route_does_no_io(monkeypatch):
    """route() opens no file and no socket, even for a model it has not priced before: a pure decision."""
    import builtins
    import socket

    router = Router()

    def refuse(*args, **kwargs):
        raise AssertionError("route() did I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    decision = router.route(RouteRequest("gpt-4.1-mini", "openai", "hello"), "enterprise")
    assert decision.model == "gpt-4o-mini"  # priced in memory: gpt-4.1-mini ($0.40/$1.60) costs more
