"""Tenant isolation of every response cache: another tenant (or user) tries to read a tenant's cached
answer through the real SDKs by exact replay, by paraphrase and by guessing its namespace, on the
memory, SQLite and Redis storages, exact and semantic caches together; and across SDKs of one tenant.

tests/cache/test_semantic.py and tests/cache/test_keys.py check the same at the cache and key level;
this is the attacker's view from the call path, with a secret only the victim's answer contains.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import otel_llmcost
from otel_llmcost.cache import ExactCache, SemanticCache
from otel_llmcost.cache.callpath import ResponseCache
from otel_llmcost.cache.embedders import HashingEmbedder
from otel_llmcost.cache.policy import ThresholdPolicy
from otel_llmcost.guard import install_guard
from otel_llmcost.telemetry import Telemetry
from otel_llmcost.testing.llm_server import LoopbackLLMServer, Reply
from tests.conftest import llmcost_spans

from .helpers import ManagedRedis

SECRET = "ACME-ONLY: the merger closes on 3 March, price 41.20 per share"
QUESTION = "When does the merger close and at what price per share?"
PARAPHRASE = "At what price per share and when does the merger close?"
VICTIM = {"tenant_id": "acme", "user_id": "alice"}
#: Who tries, and how: other tenants, no attribution, the victim's tenant as another user, and ids crafted
#: to collide with the victim's scope after joining, quoting, case-folding or truncation.
ATTACKERS = {
    "other tenant": {"tenant_id": "globex", "user_id": "bob"},
    "anonymous": {},
    "same tenant, other user": {"tenant_id": "acme", "user_id": "mallory"},
    "victim's user id, no tenant": {"user_id": "alice"},
    "victim's tenant, no user": {"tenant_id": "acme"},
    "JSON injection in tenant id": {"tenant_id": 'acme","llmcost.user.id":"alice', "user_id": "x"},
    "JSON injection in user id": {"tenant_id": "acme", "user_id": 'alice"}'},
    "separator in tenant id": {"tenant_id": "acme:alice"},
    "case folded": {"tenant_id": "ACME", "user_id": "ALICE"},
    "trailing NUL": {"tenant_id": "acme\x00", "user_id": "alice"},
    "trailing space": {"tenant_id": "acme ", "user_id": "alice"},
    "tenant and user swapped": {"tenant_id": "alice", "user_id": "acme"},
}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def storage_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cache.db"
    else:
        server = ManagedRedis(tmp_path / "redis")
        server.start()
        yield f"{server.url}?prefix=iso-{uuid.uuid4().hex}"
        server.close()


def sent(server: LoopbackLLMServer) -> int:
    return sum(1 for r in server.requests if r.provider is not None)


@pytest.mark.reliability(
    "another tenant or user reads a tenant's cached answer: exact replay, paraphrase, 10 crafted scope ids "
    "(memory, SQLite and Redis storages; exact + semantic caches)",
    "every attempt goes to the provider and never gets the victim's answer; the victim's own replay and "
    "paraphrase are served from cache",
    covered_by=["tests/cache/test_semantic.py::test_crafted_tenant_ids_miss[memory]",
                "tests/cache/test_callpath.py::test_tenants_never_share_answers"],
)
def test_no_tenant_reads_another_tenants_cached_answer(instrumented: Telemetry, storage_uri: str,
                                                        llm_server: LoopbackLLMServer, span_exporter: Any,
                                                        record_number: Any) -> None:
    """A secret cached for acme/alice is served to acme/alice only, whatever the attacker sends."""
    semantic_uri = storage_uri.replace("cache.db", "semantic.db").replace("?prefix=iso-", "?prefix=isos-")
    exact = ExactCache(storage_uri)
    semantic = SemanticCache(HashingEmbedder(), ThresholdPolicy(0.6), semantic_uri)
    install_guard(cache=ResponseCache(exact, semantic))
    with openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as client:

        def ask(text: str, who: dict[str, str]) -> str:
            with otel_llmcost.attributes(**who):
                answer = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": text}], temperature=0)
            return answer.choices[0].message.content or ""

        llm_server.script(Reply(provider="openai", text=SECRET))
        assert ask(QUESTION, VICTIM) == SECRET
        assert ask(QUESTION, VICTIM) == SECRET  # exact hit
        assert ask(PARAPHRASE, VICTIM) == SECRET  # semantic hit: the attacks below would find it if leaky
        assert sent(llm_server) == 1
        leaked = []
        attempts = 0
        for name, who in ATTACKERS.items():
            for text in (QUESTION, PARAPHRASE):  # the paraphrase may hit the attacker's own new entry
                before = sent(llm_server)
                answer = ask(text, who)
                attempts += 1
                if SECRET in answer or (text == QUESTION and sent(llm_server) != before + 1):
                    leaked.append(f"{name}: {text!r}")
    statuses = [s.attributes.get("llmcost.cache.status") for s in llmcost_spans(span_exporter)]
    record_number("attacks", attempts)
    record_number("answers leaked", len(leaked))
    assert leaked == []
    assert statuses[:3] == ["miss", "exact_hit", "semantic_hit"]
    exact.close()
    semantic.close()


@pytest.mark.reliability(
    "one tenant's answer asked for through another provider's SDK (OpenAI answer, Anthropic request)",
    "never served across providers: the Anthropic call goes to Anthropic",
)
def test_answers_never_cross_providers(instrumented: Telemetry, llm_server: LoopbackLLMServer) -> None:
    """The same tenant asking the same question through another SDK is not served the first SDK's answer."""
    install_guard(cache=ResponseCache(ExactCache(), SemanticCache(HashingEmbedder(), ThresholdPolicy(0.6))))
    llm_server.script(Reply(provider="openai", text=SECRET))
    with otel_llmcost.attributes(**VICTIM), \
            openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0) as oai, \
            anthropic.Anthropic(base_url=llm_server.anthropic_base_url, api_key="k", max_retries=0,
                                open_telemetry=False) as claude:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}],
                                    temperature=0)
        message = claude.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                         messages=[{"role": "user", "content": QUESTION}], extra_body={"temperature": 0})
    assert SECRET not in message.content[0].text  # type: ignore[union-attr]
    assert sum(1 for r in llm_server.requests if r.provider == "anthropic") == 1
