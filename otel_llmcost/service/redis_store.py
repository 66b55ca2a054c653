"""`redis://`: the ingest store shared by several processor replicas, in the budget ledger's Redis.

One Lua script (`lua/apply.lua`) applies a whole request: it reads and writes the series state and
dedup marks and adds the spend, atomically, so two replicas receiving the same retried payload (the
Collector's load balancing may send a retry elsewhere) count it once. Series state and marks expire
`retention` after their last use, marks after `dedup_window`. The script touches keys of several budgets and streams in one call,
so it needs a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

from ..budget.ledger.redis import RedisLedger
from .events import CostEvent
from .store import Target

_CHUNK = 2000  # events per script call: bounds the time Redis spends in one script


def _script() -> str:
    return resources.files(__package__).joinpath("lua").joinpath("apply.lua").read_text(encoding="utf-8")


class RedisIngestStore(RedisLedger):
    """The Redis budget ledger plus series state and dedup marks (see the module doc)."""

    def __init__(self, client: Any, *, prefix: str = "llmcost:budget", uri: str = "redis://",
                 retention: float = 7 * 86400.0, dedup_window: float = 3600.0) -> None:
        super().__init__(client, prefix=prefix, uri=uri)
        self.retention = retention
        self.dedup_window = dedup_window
        self._apply = client.register_script(_script())
        self._ingest = f"{prefix}:ingest"
        client.set(f"{self._ingest}:epoch", str(time.time_ns()), nx=True)
        self.epoch_ns = int(client.get(f"{self._ingest}:epoch"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "llmcost:budget", retention: float = 7 * 86400.0,
                 dedup_window: float = 3600.0, **options: Any) -> RedisIngestStore:
        """Connect with `redis.Redis.from_url` (redis://, rediss://, unix://)."""
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"the ledger {url} needs the redis client: pip install 'otel-llmcost[redis]'") from exc
        options.setdefault("decode_responses", True)
        options.setdefault("socket_timeout", 10.0)
        options.setdefault("socket_connect_timeout", 5.0)
        return cls(redis.Redis.from_url(url, **options), prefix=prefix, uri=url, retention=retention,
                   dedup_window=dedup_window)

    def apply(self, events: Sequence[CostEvent], event_targets: Sequence[tuple[int, ...]],
              targets: Sequence[Target], *, now: float | None = None) -> list[int]:
        # Chunks are separate scripts: each is atomic, and a failure after some chunks leaves those
        # committed and marked, so the Collector's retry of the whole request counts only the rest.
        result: list[int] = []
        for first in range(0, len(events), _CHUNK):
            chunk = events[first:first + _CHUNK]
            where = event_targets[first:first + _CHUNK]
            result += self._apply_chunk(chunk, where, targets)
        return result

    def _apply_chunk(self, events: Sequence[CostEvent], event_targets: Sequence[tuple[int, ...]],
                     targets: Sequence[Target]) -> list[int]:
        used = sorted({index for where in event_targets for index in where})
        local = {index: position + 1 for position, index in enumerate(used)}
        keys = [f"{self._ingest}:{event.key.hex()}" for event in events]
        keys += [self._hash(targets[i].key, targets[i].window.bucket) for i in used]
        keys += [self._index(targets[i].key.budget, targets[i].window.bucket) for i in used]
        args: list[Any] = [len(events), len(used), str(self.epoch_ns), int(self.retention * 1000),
                           int(self.dedup_window * 1000)]
        for event in events:
            args += [event.kind, str(event.time), repr(float(event.value)), event.units, str(event.start)]
        args += [",".join(str(local[i]) for i in where) for where in event_targets]
        for i in used:
            args += [int(targets[i].window.keep_until.timestamp() * 1000), targets[i].key.scope]
        return [int(x) for x in self._apply(keys=keys, args=args)]

    def stream_count(self) -> int | None:
        return None  # counting keys would scan the whole keyspace on every scrape
