"""Grafana dashboards as code for otel-llmcost.

The dashboards are built with Grafana's own `grafana-foundation-sdk` and committed as JSON in
`dashboards/json/` beside the provisioning files in `dashboards/provisioning/`:

    python -m dashboards.generate            # rewrite dashboards/json/*.json
    python -m dashboards.generate --check    # exit 1 when the committed JSON is not what the code makes
    python -m dashboards.render --prometheus http://127.0.0.1:9090 --out shots/   # charts + screenshots

Metric names come from `otel_llmcost.names` through the Collector's Prometheus naming rules
(`dashboards.metrics`), so a rename in the instrumentation shows up as a changed dashboard, and the live
test (`tests/dashboards/test_dashboards_live.py`) checks every name against a real Prometheus.
"""
