"""The projected end-of-window spend: the in-process gauge and the service's /metrics say the same."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llmcost.budget import Budget, BudgetEngine, ForecastPolicy, Scope
from otel_llmcost.budget.processor import BudgetProcessor
from otel_llmcost.budget.windows import CalendarWindow, RollingWindow
from otel_llmcost.service.exposition import budget_gauges

NOW = datetime(2026, 11, 16, 0, 0, tzinfo=timezone.utc)  # half of November gone


def test_projected_gauge_in_process_and_in_the_service_exposition():
    """Spend $30 by mid-month projects $60; rolling windows have no projection, so no series."""
    budgets = [Budget("monthly", Decimal(100), CalendarWindow("month"), forecast=ForecastPolicy(min_elapsed=Decimal(0))),
               Budget("rolling", Decimal(5), RollingWindow(__import__("datetime").timedelta(hours=24)),
                      scope=Scope(match={"feature": "x"}))]
    engine = BudgetEngine(budgets, sinks=[], clock=lambda: NOW)
    engine.record_cost(Decimal(30), {"llmcost.feature": "x"}, NOW)
    reader = InMemoryMetricReader()
    processor = BudgetProcessor(engine, meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        data = reader.get_metrics_data()
        points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  if m.name == "llmcost.budget.projected" for p in m.data.data_points]
        units = {m.unit for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == "llmcost.budget.projected"}
    finally:
        processor.shutdown()
    assert units == {"USD"}
    assert [(dict(p.attributes), p.value) for p in points] == [
        ({"llmcost.budget.name": "monthly", "llmcost.budget.scope": "global"}, 60.0)]
    text = "\n".join(budget_gauges(engine.state()))
    assert 'llmcost_budget_projected_USD{llmcost_budget_name="monthly",llmcost_budget_scope="global"} 60' in text
    assert 'llmcost_budget_projected_USD{llmcost_budget_name="rolling"' not in text
