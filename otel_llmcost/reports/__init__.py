"""Reports and the savings advisor: `otel-llmcost report` and `otel-llmcost advise`.

Calls come from the embedded store, OTLP JSON(L) span files or a Prometheus server, as one pandas
frame (`otel_llmcost.reports.schema`); breakdowns, the month-end projection and the savings advice are
computed on that frame and rendered as terminal tables, JSON, CSV or one self-contained HTML file.

This package imports nothing heavy at import time: the instrumentation uses `fingerprint` from here in
the call path, and pandas is an extra (`pip install 'otel-llmcost[reports]'`).
"""
