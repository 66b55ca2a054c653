"""Loaded by `otel-llmcost run` before the user's program, as `opentelemetry-instrument` does."""

import importlib.util
import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _start() -> None:
    try:
        from otel_llmcost import embedded

        embedded.start()
    except Exception:  # never stop the user's program from starting
        logging.getLogger("otel_llmcost").exception("otel-llmcost: the embedded mode could not start")


def _chain() -> None:
    """Run the sitecustomize this one shadows, if the environment had one further down the path."""
    for entry in sys.path:
        directory = os.path.abspath(entry or ".")
        candidate = os.path.join(directory, "sitecustomize.py")
        if directory == _HERE or not os.path.isfile(candidate):
            continue
        spec = importlib.util.spec_from_file_location("_llmcost_chained_sitecustomize", candidate)
        if spec and spec.loader:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return


_start()
_chain()
