"""`otel-llmcost processor`: budgets applied behind the Collector, from OTLP metrics and spans.

Parts, one idea each: `otlp` (decoding bodies, limits), `lite` (the trimmed view of trace requests the
hot path reads), `attributes` (OTLP attribute values), `events` (cost events in nano-dollars),
`metrics` and `spans` (which points and spans carry spend), `pricing` (token metrics and spans priced
by model), `store` with `sqlite_store` and `redis_store` (stream state, dedup marks and spend committed
atomically), `accounting` (budget matching and alerts), `hints_api` (`/v1/hints`), `exposition`
(`/metrics`), `app` (HTTP), `config` (the `processor:` section), `cli`.

    otel-llmcost processor --config llmcost.yaml --port 4319

Point the Collector's `otlphttp` exporter at it (see collector/otelcol.yaml); apps poll hints with
`otel_llmcost.hints.HintsClient`.

Needs the ``service`` extra (``pip install 'otel-llmcost[service]'``) for the OTLP protobuf messages.
"""

from __future__ import annotations

from .app import ProcessorService
from .config import ProcessorConfig, load_processor_config
from .store import IngestStore, open_store

__all__ = ["IngestStore", "ProcessorConfig", "ProcessorService", "load_processor_config", "open_store"]
