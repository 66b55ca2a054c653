"""`otel-llmcost processor`: budgets applied behind the Collector, from OTLP metrics and spans.

Parts, one idea each: `otlp` (decoding bodies), `metrics` and `spans` (which points and spans carry
spend), `pricing` (token metrics and spans priced by model), `store` with `sqlite_store` and
`redis_store` (stream state, dedup marks and spend committed atomically), `accounting` (budgets and
alerts), `hints_api`, `exposition` (`/metrics`), `app` (HTTP), `config`, `cli`.

Needs the ``service`` extra (``pip install 'otel-llmcost[service]'``) for the OTLP protobuf messages.
"""

from __future__ import annotations

from .app import ProcessorService
from .config import ProcessorConfig, load_processor_config
from .store import IngestStore, open_store

__all__ = ["IngestStore", "ProcessorConfig", "ProcessorService", "load_processor_config", "open_store"]
