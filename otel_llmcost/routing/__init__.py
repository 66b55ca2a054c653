"""Model routing: send each call to the cheapest model that can handle it, within what its tier and
budget allow. A pure decision, no I/O: the cost guard calls it in the SDK call path.

    from otel_llmcost.routing import RouteRequest, Router
    router = Router.from_config()              # routing: section of $OTEL_LLMCOST_CONFIG, or the defaults
    decision = router.route(RouteRequest("gpt-4o", "openai", "What time do you close?"), tier="pro",
                            hints=engine.hints(attributes))
    decision.model, decision.reason            # 'gpt-4o-mini', 'simple query → cheap model gpt-4o-mini'

Parts: `complexity` (levels and the classifier protocol), `classifier` (keyword/shape heuristic),
`knn` (nearest labelled examples over sentence embeddings), `examples` (labelled JSONL, a shipped
default set), `table` (tiers, complexity → model per provider), `config` (the YAML section),
`router` (the decision), `evaluate` (`otel-llmcost route-eval`).
"""

from __future__ import annotations

from .classifier import HeuristicClassifier, Signals
from .complexity import COMPLEXITIES, Classifier, Complexity, parse_complexity
from .config import RoutingConfig, load_routing_config, parse_routing_config
from .examples import LabelledExample, default_examples, load_examples, parse_examples
from .knn import KNNClassifier
from .router import RouteDecision, Router, RouteRequest, catalog_price, last_user_text
from .table import (
    ALL_MODELS,
    REQUESTED,
    RoutingTable,
    TierRule,
    default_table,
    model_family,
    provider_key,
)

__all__ = [
    "ALL_MODELS",
    "COMPLEXITIES",
    "REQUESTED",
    "Classifier",
    "Complexity",
    "HeuristicClassifier",
    "KNNClassifier",
    "LabelledExample",
    "RouteDecision",
    "RouteRequest",
    "Router",
    "RoutingConfig",
    "RoutingTable",
    "Signals",
    "TierRule",
    "catalog_price",
    "default_examples",
    "default_table",
    "last_user_text",
    "load_examples",
    "load_routing_config",
    "model_family",
    "parse_complexity",
    "parse_examples",
    "parse_routing_config",
    "provider_key",
]
