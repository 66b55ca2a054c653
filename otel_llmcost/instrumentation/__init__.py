"""One OpenTelemetry instrumentor per LLM SDK; none imports its SDK until `instrument()` runs."""
