"""A small client of the Prometheus HTTP API: what Grafana's Prometheus datasource calls, nothing more."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query (bad PromQL) or could not be reached; the message has the query."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]
    """(unix seconds, value); an instant query gives one point."""


class PrometheusAPI:
    def __init__(self, url: str, timeout: float = 20.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        request = urllib.request.Request(f"{self.url}{path}?{query}" if query else f"{self.url}{path}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise PrometheusQueryError(f"{path} {params.get('query', '')!r}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise PrometheusQueryError(f"Prometheus at {self.url} did not answer ({exc}); is it running?") from None
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path} {params.get('query', '')!r}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: datetime) -> list[Series]:
        data = self._get("/api/v1/query", {"query": expr, "time": at.timestamp()})
        if data["resultType"] == "scalar":
            return [Series({}, [(float(data["result"][0]), float(data["result"][1]))])]
        return [Series(item["metric"], [(float(item["value"][0]), float(item["value"][1]))])
                for item in data["result"]]

    def query_range(self, expr: str, start: datetime, end: datetime, step: float) -> list[Series]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": start.timestamp(), "end": end.timestamp(),
                                                  "step": step})
        return [Series(item["metric"], [(float(t), float(v)) for t, v in item["values"]]) for item in data["result"]]

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values", {}))

    def label_values(self, label: str, match: str) -> list[str]:
        """What a Grafana `label_values(match, label)` variable lists."""
        return list(self._get(f"/api/v1/label/{label}/values", {"match[]": match}))
