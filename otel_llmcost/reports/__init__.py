"""Reports and the savings advisor: `otel-llmcost report` and `otel-llmcost advise`.

Calls come from the embedded store, OTLP JSON(L) span files or a Prometheus server, as one pandas
frame (`otel_llmcost.reports.schema`); breakdowns, the month-end projection and the savings advice are
computed on that frame and rendered as terminal tables, JSON, CSV or one self-contained HTML file.

What the advisor reads about prompts (keyed prefix and query hashes, never text) is recorded at call
time by `otel_llmcost.fingerprint`. pandas is an extra (`pip install 'otel-llmcost[reports]'`), imported
only when a report runs.
"""
