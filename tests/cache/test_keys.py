"""Exact keys, namespaces and the deterministic-call rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from otel_llmcost.cache import Namespace, cacheable, canonical_json, exact_key, split_conversation

BASE: dict[str, Any] = {
    "tenant": "acme",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "system": None,
    "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
    "response_format": {"type": "text"},
    "params": {"temperature": 0, "top_p": 1, "seed": 7, "max_tokens": 64, "stop": ["\n"], "n": 1},
}


def _key(**changes: Any) -> str:
    request = copy.deepcopy(BASE)
    request.update(changes)
    return exact_key(**request)


def test_key_is_sha256_hex_and_stable() -> None:
    """The key is a 64-digit hex sha256 and equal for equal requests built separately."""
    k = _key()
    assert len(k) == 64 and int(k, 16) >= 0
    assert _key() == k


def test_key_pinned_value() -> None:
    """The key of a fixed request never changes across versions of Python or of this code (KEY_VERSION 1)."""
    k = exact_key(tenant=None, provider="openai", model="m", messages=[{"role": "user", "content": "hi"}])
    assert k == exact_key(tenant=None, provider="openai", model="m", messages=({"content": "hi", "role": "user"},))
    assert canonical_json({"b": 1.0, "a": [0.5, None, {"z": None}]}) == '{"a":[0.5,null,{}],"b":1}'


def test_dict_order_does_not_change_the_key() -> None:
    """Reordered dict keys at any depth (messages, tools, params) give the same key."""
    reordered = {
        "params": dict(reversed(list(BASE["params"].items()))),
        "messages": [dict(reversed(list(m.items()))) for m in BASE["messages"]],
        "tools": [{"function": {"parameters": {"type": "object"}, "name": "add"}, "type": "function"}],
    }
    assert _key(**reordered) == _key()


def test_equal_numbers_and_absent_values_give_the_same_key() -> None:
    """0 and 0.0, 1 and 1.0 are one value; a parameter set to None is the same as not given."""
    params = dict(BASE["params"], temperature=0.0, top_p=1.0, logprobs=None)
    assert _key(params=params) == _key()


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant": "acme2"},
        {"tenant": None},
        {"provider": "azure"},
        {"model": "gpt-4o"},
        {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+3?"}]},
        {"messages": [{"role": "user", "content": "What is 2+2?"}]},
        {"messages": [{"role": "system", "content": "You are terse!"}, {"role": "user", "content": "What is 2+2?"}]},
        {"system": "Be kind."},
        {"tools": None},
        {"tools": [{"type": "function", "function": {"name": "sub", "parameters": {"type": "object"}}}]},
        {"response_format": {"type": "json_object"}},
        {"params": dict(BASE["params"], temperature=0.2)},
        {"params": dict(BASE["params"], top_p=0.9)},
        {"params": dict(BASE["params"], seed=8)},
        {"params": dict(BASE["params"], max_tokens=65)},
        {"params": dict(BASE["params"], stop=["\n\n"])},
        {"params": dict(BASE["params"], n=2)},
        {"params": dict(BASE["params"], presence_penalty=0.5)},
        {"params": dict(BASE["params"], extra_body={"top_k": 5})},
    ],
    ids=lambda c: ",".join(f"{k}" for k in c) + ":" + str(abs(hash(str(c))) % 1000),
)
def test_any_answer_changing_difference_changes_the_key(changes: dict[str, Any]) -> None:
    """Each field that can change the answer (tenant, provider, model, any message, system, tools, format, any sampling param) changes the key."""
    assert _key(**changes) != _key()


def test_transport_options_do_not_change_the_key() -> None:
    """Timeouts, retries, headers and API keys never change the answer, so not the key either."""
    params = dict(BASE["params"], timeout=30, max_retries=5, extra_headers={"x": "y"}, api_key="sk-…")
    assert _key(params=params) == _key()


def test_unserialisable_value_is_a_clear_type_error() -> None:
    """A value with no JSON form raises TypeError naming its type, never a silent key."""
    with pytest.raises(TypeError, match="object"):
        _key(params={"temperature": object()})


def test_sdk_objects_with_model_dump_are_keyed_by_their_fields() -> None:
    """Objects with model_dump() (pydantic, the SDKs' types) key like the dict they dump to."""

    class Msg:
        def model_dump(self, exclude_none: bool = False) -> dict[str, Any]:
            return {"role": "user", "content": "What is 2+2?"}

    plain = _key(messages=[BASE["messages"][0], {"role": "user", "content": "What is 2+2?"}])
    assert _key(messages=[BASE["messages"][0], Msg()]) == plain


@pytest.mark.parametrize(
    ("params", "cache_all", "expected"),
    [
        ({"temperature": 0}, False, True),
        ({"temperature": 0.0}, False, True),
        ({"temperature": 0.7, "seed": 1}, False, True),
        ({"seed": 0}, False, True),
        ({"temperature": 0.7}, False, False),
        ({}, False, False),
        (None, False, False),
        ({"temperature": None, "seed": None}, False, False),
        ({"temperature": False}, False, False),
        ({"config": {"temperature": 0}}, False, True),
        ({"generation_config": {"seed": 3}}, False, True),
        ({"temperature": 1.0}, True, True),
        (None, True, True),
    ],
)
def test_cacheable_only_deterministic_calls_unless_opted_in(
    params: dict[str, Any] | None, cache_all: bool, expected: bool
) -> None:
    """Temperature 0 or a seed makes a call cacheable; anything else only with cache_all."""
    assert cacheable(params, cache_all) is expected


def test_cacheable_reads_config_objects() -> None:
    """A google-genai style config object with temperature=0 counts as deterministic."""

    class Config:
        temperature = 0.0
        seed = None

    assert cacheable({"config": Config()}, cache_all=False)


def _ns(**changes: Any) -> Namespace:
    request = copy.deepcopy(BASE)
    request.update(changes)
    return Namespace.for_request(**request)


def test_namespace_ignores_only_the_last_user_message_text() -> None:
    """Two requests differing only in the last user message's text share a namespace."""
    other = [BASE["messages"][0], {"role": "user", "content": "How much is two plus two?"}]
    assert _ns(messages=other) == _ns()
    assert _ns(messages=other).id == _ns().id


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant": "other"},
        {"tenant": None},
        {"provider": "anthropic"},
        {"model": "gpt-4o"},
        {"system": "Be verbose."},
        {"messages": [{"role": "system", "content": "You are verbose."}, {"role": "user", "content": "What is 2+2?"}]},
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "What is 2+2?"},
            ]
        },
        {"tools": []},
        {"response_format": {"type": "json_object"}},
        {"params": dict(BASE["params"], temperature=0.3)},
        {"params": dict(BASE["params"], max_tokens=10)},
    ],
    ids=lambda c: ",".join(c),
)
def test_namespace_changes_with_everything_else(changes: dict[str, Any]) -> None:
    """Tenant, provider, model, system prompt, tools, format, params and earlier turns each give another namespace."""
    assert _ns(**changes).id != _ns().id


def test_crafted_tenant_ids_cannot_reach_another_namespace() -> None:
    """Tenant ids with separators or quotes that spell another tenant plus a field never share a namespace id."""
    a = _ns(tenant="acme", model="gpt-4o-mini")
    crafted = [
        "acme|gpt-4o-mini",
        "acme:openai:gpt-4o-mini",
        'acme","model":"gpt-4o-mini',
        "acme\x00",
        "acme ",
        "ACME",
        "",
    ]
    ids = {_ns(tenant=t).id for t in crafted}
    assert a.id not in ids
    assert len(ids) == len(crafted)
    # moving text between fields never collides either
    assert _ns(tenant="acme:openai", provider="x").id != _ns(tenant="acme", provider="openai:x").id


def test_image_parts_of_the_last_user_message_are_part_of_the_namespace() -> None:
    """The same question about two different images never shares a namespace (the text alone does not show the image)."""

    def with_image(url: str) -> list[dict[str, Any]]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]

    assert _ns(messages=with_image("https://a/cat.png")).id != _ns(messages=with_image("https://a/dog.png")).id
    _, text, others = split_conversation(with_image("https://a/cat.png"))
    assert text == "What is in this picture?"
    assert len(others) == 1


def test_split_conversation_reads_openai_anthropic_and_genai_shapes() -> None:
    """The last user text comes out of string content, text parts and google-genai parts alike."""
    assert split_conversation([{"role": "user", "content": "a"}])[1] == "a"
    assert split_conversation([{"role": "user", "content": [{"type": "text", "text": "b"}]}])[1] == "b"
    assert split_conversation([{"role": "user", "parts": [{"text": "c"}]}])[1] == "c"
    context, text, _ = split_conversation(
        [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    )
    assert text == "q2" and len(context) == 2
    assert split_conversation([{"role": "system", "content": "s"}]) == ([{"role": "system", "content": "s"}], "", [])
