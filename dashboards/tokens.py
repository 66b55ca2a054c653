"""Dashboard "Tokens and caching": where the tokens go, and what the provider's prompt cache and our
response cache save."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import metrics as m
from .common import assemble
from .panels import (
    BLUE,
    GREEN,
    ORANGE,
    PERCENT,
    RED,
    TOKENS,
    TOKENS_PER_MIN,
    USD,
    USD_PER_HOUR,
    YELLOW,
    Query,
    single_stat,
    time_series,
)

UID = "llmcost-tokens"
TITLE = "Tokens and caching"

TOKEN_SUM = m.selector(f"{m.TOKEN_USAGE}_sum")
REASONING = m.selector(m.REASONING_TOKENS)
CACHE_READ = m.selector(m.CACHE_READ_TOKENS)
CACHE_WRITE = m.selector(m.CACHE_WRITE_TOKENS)
LOOKUPS = m.selector(m.CACHE_LOOKUPS, m.CACHE)


def _input_rate() -> str:
    series = m.selector(f"{m.TOKEN_USAGE}_sum", m.CALL, f'{m.TOKEN_TYPE}="input"')
    return f"sum(rate({series}[$__rate_interval]))"


def _tokens_total(token_type: str) -> str:
    series = m.selector(f"{m.TOKEN_USAGE}_sum", m.CALL, f'{m.TOKEN_TYPE}="{token_type}"')
    return f"sum({m.over_range(series)})"


def build() -> dm.Dashboard:
    tokens = [
        single_stat("Input tokens", "Input tokens over the time range, cached ones included "
                    "(gen_ai.client.token.usage, type input).", TOKENS, Query(_tokens_total("input"), "input", True)),
        single_stat("Output tokens", "Output tokens over the time range, reasoning included (type output).",
                    TOKENS, Query(_tokens_total("output"), "output", True)),
        single_stat("Reasoning tokens", "Output tokens a reasoning model spent thinking over the time range "
                    "(billed as output, never shown to the user).", TOKENS,
                    Query(f"sum({m.over_range(REASONING)})", "reasoning", True)),
        single_stat("Reasoning share of output", "Reasoning tokens over all output tokens in the time range: "
                    "how much of the output bill is thinking.", PERCENT,
                    Query(f"sum({m.over_range(REASONING)}) / {_tokens_total('output')}", "reasoning share", True),
                    ((None, GREEN), (0.5, YELLOW), (0.8, ORANGE))),
        time_series(
            "Input, output and reasoning tokens", "Tokens per minute by type: input and output from "
            "gen_ai.client.token.usage (any instrumentation that follows the GenAI conventions), reasoning "
            "from llmcost.usage.reasoning.output_tokens (a part of output).", TOKENS_PER_MIN,
            [Query(f"sum by ({m.TOKEN_TYPE}) (rate({TOKEN_SUM}[$__rate_interval])) * 60", f"{{{{{m.TOKEN_TYPE}}}}}"),
             Query(f"sum(rate({REASONING}[$__rate_interval])) * 60", "reasoning")], width=12),
        time_series(
            "Tokens by model", "Input plus output tokens per minute by the model called.", TOKENS_PER_MIN,
            [Query(f"sum by ({m.REQUEST_MODEL}) (rate({TOKEN_SUM}[$__rate_interval])) * 60",
                   f"{{{{{m.REQUEST_MODEL}}}}}")], stacked=True, width=12),
    ]
    prompt_cache = [
        time_series(
            "Provider prompt cache: read and write share of input", "Input tokens the provider read from its "
            "prompt cache (billed at a discount) and wrote to it (billed at a premium by Anthropic), as a share "
            "of all input tokens. A long stable prefix (system prompt, tools) first in the prompt raises the "
            "read share.", PERCENT,
            [Query(f"sum(rate({CACHE_READ}[$__rate_interval])) / {_input_rate()}", "read"),
             Query(f"sum(rate({CACHE_WRITE}[$__rate_interval])) / {_input_rate()}", "write")],
            ((None, RED), (0.2, YELLOW), (0.5, GREEN)), max_value=1, width=12),
        time_series(
            "Provider prompt cache: money saved", "USD per hour the provider's prompt cache saved: cache-read "
            "tokens priced as plain input, less what they were billed (llmcost.prompt_cache.saved).",
            USD_PER_HOUR, [Query(f"sum by ({m.PROVIDER}) (rate({m.selector(m.PROMPT_CACHE_SAVED)}"
                                 f"[$__rate_interval])) * 3600", f"{{{{{m.PROVIDER}}}}}")], width=8),
        single_stat("Prompt cache saved", "USD the provider's prompt cache saved over the time range.", USD,
                    Query(f"sum({m.over_range(m.selector(m.PROMPT_CACHE_SAVED))})", "saved", True), decimals=4,
                    width=4, height=8),
    ]
    hit = f'{m.CACHE_STATUS}=~"{m.HIT_STATUSES}"'
    could_hit = f'{m.CACHE_STATUS}=~"{m.LOOKUP_STATUSES}"'
    hit_rate = (f"sum(rate({m.selector(m.CACHE_LOOKUPS, m.CACHE, hit)}[$__rate_interval])) / "
                f"sum(rate({m.selector(m.CACHE_LOOKUPS, m.CACHE, could_hit)}[$__rate_interval]))")
    hit_rate_range = (f"sum({m.over_range(m.selector(m.CACHE_LOOKUPS, m.CACHE, hit))}) / "
                      f"sum({m.over_range(m.selector(m.CACHE_LOOKUPS, m.CACHE, could_hit))})")
    saved = m.selector(m.COST_SAVED)
    bypassed = m.selector(m.CACHE_LOOKUPS, m.CACHE, f'{m.CACHE_STATUS}="bypass"')
    refusals = m.selector(m.CACHE_REFUSALS, m.CACHE)
    response_cache = [
        single_stat("Cache hit rate", "Share of cacheable lookups the response cache answered over the time "
                    "range (exact and semantic hits over hits and misses; bypassed calls left out).", PERCENT,
                    Query(hit_rate_range, "hit rate", True), ((None, RED), (0.1, YELLOW), (0.3, GREEN))),
        single_stat("USD saved by the cache", "What the calls the response cache answered would have cost, "
                    "at today's prices, over the time range (llmcost.cost.saved).", USD,
                    Query(f"sum({m.over_range(saved)})", "saved", True), decimals=4),
        single_stat("False hits refused", "Semantic-cache lookups over the time range whose close match a "
                    "false-hit guard refused (another number, a negation, swapped roles...): each one a wrong "
                    "answer not served.", "suffix: lookups",
                    Query(f"sum({m.over_range(refusals)})", "refused", True), ((None, BLUE),)),
        single_stat("Lookups bypassed", "Lookups that skipped the cache over the time range "
                    "(non-deterministic calls, cache_control('bypass'), or a cache storage that is down and "
                    "left alone until its next probe).", "suffix: lookups",
                    Query(f"sum({m.over_range(bypassed)})", "bypassed", True)),
        time_series(
            "Application cache lookups by status", "Response-cache lookups per minute by llmcost.cache.status: "
            "exact_hit, semantic_hit, miss, bypass.", "suffix: lookups/min",
            [Query(f"sum by ({m.CACHE_STATUS}) (rate({LOOKUPS}[$__rate_interval])) * 60", f"{{{{{m.CACHE_STATUS}}}}}")],
            stacked=True, width=12),
        time_series(
            "Application cache hit rate", "Hits over hits and misses, per interval, with the share of each hit "
            "kind.", PERCENT,
            [Query(hit_rate, "hit rate"),
             Query(f"sum by ({m.CACHE_STATUS}) (rate({m.selector(m.CACHE_LOOKUPS, m.CACHE, hit)}[$__rate_interval]))"
                   f" / scalar(sum(rate({m.selector(m.CACHE_LOOKUPS, m.CACHE, could_hit)}[$__rate_interval])))",
                   f"{{{{{m.CACHE_STATUS}}}}}")],
            ((None, RED), (0.1, YELLOW), (0.3, GREEN)), max_value=1, width=12),
        time_series(
            "USD saved by the cache", "USD per hour the response cache saved, by provider.", USD_PER_HOUR,
            [Query(f"sum by ({m.PROVIDER}) (rate({saved}[$__rate_interval])) * 3600", f"{{{{{m.PROVIDER}}}}}")],
            stacked=True, width=12),
        time_series(
            "False-hit guard refusals", "Semantic-cache close matches refused per minute by the false-hit guards "
            "(llmcost.cache.semantic.refusals), by provider. A rise after a threshold change means the "
            "embedder now finds more look-alikes.", "suffix: lookups/min",
            [Query(f"sum by ({m.PROVIDER}) (rate({refusals}[$__rate_interval])) * 60", f"{{{{{m.PROVIDER}}}}}")],
            ((None, BLUE),), bars=True, width=12),
    ]
    return assemble(UID, TITLE, "Tokens by type and model, the provider's prompt cache and the response cache.", [
        ("Tokens", tokens), ("Provider prompt cache", prompt_cache), ("Application response cache", response_cache),
    ])
