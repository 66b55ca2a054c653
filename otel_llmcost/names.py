"""The one place that names span attributes and metrics.

Names that the OpenTelemetry GenAI semantic conventions define come from
`opentelemetry-semantic-conventions`, so a rename upstream shows up here as an import error rather than
as dashboards that silently go empty. Names the conventions do not have yet live under ``llmcost.``;
``gen_ai.usage.cost`` is the key OpenLIT and Langfuse already read, so we write it too.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server

# --- GenAI semantic conventions -------------------------------------------------------------------
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_REQUEST_MAX_TOKENS: Final = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_TEMPERATURE: Final = _gen_ai.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_TOP_P: Final = _gen_ai.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_TOP_K: Final = _gen_ai.GEN_AI_REQUEST_TOP_K
GEN_AI_REQUEST_SEED: Final = _gen_ai.GEN_AI_REQUEST_SEED
GEN_AI_REQUEST_STREAM: Final = _gen_ai.GEN_AI_REQUEST_STREAM
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
# The conventions renamed cache_creation to cache_write in the semantic-conventions-genai repository;
# the released package still has only the old name. We write the new one and read both.
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = _gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS
ERROR_TYPE: Final = _error.ERROR_TYPE
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT

# --- Cost: the key other tools already read --------------------------------------------------------
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"

# --- Ours ------------------------------------------------------------------------------------------
LLMCOST_CACHE_STATUS: Final = "llmcost.cache.status"
LLMCOST_COST_SAVED: Final = "llmcost.cost.saved"
LLMCOST_CACHE_TIER: Final = "llmcost.cache.tier"
LLMCOST_CACHE_SIMILARITY: Final = "llmcost.cache.similarity"
LLMCOST_PRICE_KNOWN: Final = "llmcost.price.known"
LLMCOST_PRICE_SOURCE: Final = "llmcost.price.source"
LLMCOST_BATCH: Final = "llmcost.batch"
LLMCOST_USAGE_ESTIMATED: Final = "llmcost.usage.estimated"
LLMCOST_STREAM_INCOMPLETE: Final = "llmcost.stream.incomplete"
LLMCOST_BUDGET_LEVEL: Final = "llmcost.budget.level"
# Where a ledger error happened: "call" (a call's own write, or bad input) or "replay" (the backlog's retry).
LLMCOST_BUDGET_LEDGER_PATH: Final = "llmcost.budget.ledger.path"
LLMCOST_ROUTE_FROM_MODEL: Final = "llmcost.route.from_model"
LLMCOST_USER_ID: Final = "llmcost.user.id"
LLMCOST_TENANT_ID: Final = "llmcost.tenant.id"
LLMCOST_USER_TIER: Final = "llmcost.user.tier"
LLMCOST_FEATURE: Final = "llmcost.feature"
LLMCOST_ROUTE_KIND: Final = "llmcost.route.kind"
LLMCOST_CACHE_SEMANTIC_REFUSED: Final = "llmcost.cache.semantic.refused"
LLMCOST_ROUTE_COMPLEXITY: Final = "llmcost.route.complexity"
# Prompt fingerprints for the savings advisor (keyed hashes, never text; see fingerprint.py).
LLMCOST_PROMPT_PREFIX_HASHES: Final = "llmcost.prompt.prefix_hashes"
LLMCOST_PROMPT_PREFIX_TOKENS: Final = "llmcost.prompt.prefix_tokens"
LLMCOST_QUERY_HASH: Final = "llmcost.query.hash"

# Values of llmcost.cache.status
CACHE_MISS: Final = "miss"
CACHE_EXACT_HIT: Final = "exact_hit"
CACHE_SEMANTIC_HIT: Final = "semantic_hit"
CACHE_BYPASS: Final = "bypass"

# Values of llmcost.route.kind (metric attribute: what the guard's routing step did with a call; the span's
# llmcost.route.reason keeps the router's full sentence, too varied for a metric label).
ROUTE_KEPT: Final = "kept"
ROUTE_COMPLEXITY: Final = "complexity"
ROUTE_BUDGET_THROTTLE: Final = "budget_throttle"
ROUTE_NOT_ALLOWED: Final = "not_allowed"

# Values of gen_ai.token.type: the conventions define input and output; cache and reasoning shares are
# recorded as their own series so that dashboards can show what the provider cache saved.
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# --- Metrics -------------------------------------------------------------------------------------
METRIC_TOKEN_USAGE: Final = _gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
METRIC_OPERATION_DURATION: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
METRIC_TIME_TO_FIRST_CHUNK: Final = _gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
METRIC_COST: Final = "llmcost.cost"
METRIC_COST_SAVED: Final = "llmcost.cost.saved"
METRIC_CACHE_LOOKUPS: Final = "llmcost.cache.lookups"
METRIC_UNKNOWN_PRICE_CALLS: Final = "llmcost.price.unknown"
METRIC_CACHED_INPUT_TOKENS: Final = "llmcost.usage.cache_read.input_tokens"
METRIC_CACHE_WRITE_TOKENS: Final = "llmcost.usage.cache_write.input_tokens"
METRIC_REASONING_TOKENS: Final = "llmcost.usage.reasoning.output_tokens"
METRIC_RATELIMIT_REJECTIONS: Final = "llmcost.ratelimit.rejections"
METRIC_BUDGET_UTILIZATION: Final = "llmcost.budget.utilization"
METRIC_ROUTE_DECISIONS: Final = "llmcost.route.decisions"
METRIC_CACHE_SEMANTIC_REFUSALS: Final = "llmcost.cache.semantic.refusals"
METRIC_PROMPT_CACHE_SAVED: Final = "llmcost.prompt_cache.saved"
METRIC_BUDGET_PROJECTED: Final = "llmcost.budget.projected"
# The budget ledger's health (`BudgetEngine.stats`, `pending()`): spend waiting for the ledger during an
# outage (gauges), spend dropped for good and errors (counters), cost events the processor's queue refused.
METRIC_BUDGET_BACKLOG_SPEND: Final = "llmcost.budget.backlog.spend"  # USD waiting for the ledger
METRIC_BUDGET_BACKLOG_WRITES: Final = "llmcost.budget.backlog.writes"  # {write} waiting for the ledger
METRIC_BUDGET_BACKLOG_LOST: Final = "llmcost.budget.backlog.lost"  # USD dropped for good (counter)
METRIC_BUDGET_BACKLOG_DROPPED: Final = "llmcost.budget.backlog.dropped"  # {write} dropped for good (counter)
METRIC_BUDGET_BACKLOG_JOURNAL_ERRORS: Final = "llmcost.budget.backlog.journal.errors"  # {error} (counter)
METRIC_BUDGET_LEDGER_ERRORS: Final = "llmcost.budget.ledger.errors"  # {error} by LLMCOST_BUDGET_LEDGER_PATH
METRIC_BUDGET_EVENTS_DROPPED: Final = "llmcost.budget.events.dropped"  # {event} the processor's queue refused

# Advisory bucket boundaries the GenAI conventions give for their histograms.
TOKEN_USAGE_BUCKETS: Final = tuple(float(4**i) for i in range(14))  # 1, 4, 16 ... 67108864
DURATION_BUCKETS: Final = tuple(round(0.01 * 2**i, 2) for i in range(14))  # 0.01 ... 81.92 s

# Attributes copied from the attribution context onto metrics (low cardinality); user and tenant ids
# join them only when the user enables it (OTEL_LLMCOST_METRICS_INCLUDE_USER).
METRIC_ATTRIBUTION_KEYS: Final = (LLMCOST_USER_TIER, LLMCOST_FEATURE)
HIGH_CARDINALITY_ATTRIBUTION_KEYS: Final = (LLMCOST_USER_ID, LLMCOST_TENANT_ID)
