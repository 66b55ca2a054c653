"""`otel-llmcost processor --config PATH [--host 127.0.0.1] [--port 4319]`: run the processor service.

Prints one line with the address it listens on once it accepts requests (a `--port 0` caller reads the
port from it), serves until SIGTERM or Ctrl-C, then flushes alert sinks and closes the ledger.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..budget.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-llmcost processor",
        description="OTLP/HTTP receiver that applies budgets to LLM spend from metrics (and, if told, spans), "
                    "serves routing hints (/v1/hints), Prometheus metrics (/metrics) and /healthz.")
    parser.add_argument("--config", required=True, help="budget config YAML with an optional processor: section")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1 or the config's)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 4319 or the config's; 0: any)")
    parser.add_argument("--prices-file", default=None, help="price overrides (default $OTEL_LLMCOST_PRICES_FILE)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..budget import BudgetEngine
    from ..errors import PriceFileError
    from ..pricing import load_catalog
    from .app import ProcessorService
    from .config import DEFAULT_LEDGER, load_processor_config
    from .store import open_store

    try:
        budgets, settings = load_processor_config(args.config)
        if args.host is not None:
            settings = replace(settings, host=args.host)
        if args.port is not None:
            settings = replace(settings, port=args.port)
        catalog = load_catalog(args.prices_file)
        store = open_store(budgets.ledger or DEFAULT_LEDGER, retention=settings.retention,
                           dedup_window=settings.dedup_window)
        engine = BudgetEngine(budgets, store)
    except (ConfigError, PriceFileError) as exc:
        print(f"otel-llmcost processor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"otel-llmcost processor: cannot open the config or ledger: {exc}", file=sys.stderr)
        return 2
    token = os.environ.get(settings.token_env) or None
    if token is None:
        logging.getLogger(__name__).warning(
            "no bearer token in %s: /v1/hints answers 403 until one is set", settings.token_env)
    service = ProcessorService(engine, store, settings, catalog=catalog, token=token)
    try:
        server = service.make_server()
    except OSError as exc:
        print(f"otel-llmcost processor: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        engine.close()
        store.close()
        return 2

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    host, port = settings.host, server.server_address[1]
    print(f"otel-llmcost processor listening on http://{host}:{port} (ledger {store.uri}, "
          f"span accounting {settings.span_accounting})", flush=True)
    _tune_gc()
    service.start_alerts()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.stop_alerts()
        engine.close()
        store.close()
    return 0


def _tune_gc() -> None:
    """Make the cyclic garbage collector run less often in this process (the processor owns it).

    The ingest path allocates about ten container objects per span and frees nearly all of them with
    the request; at the default gen-0 threshold (700) the collector ran about three times a request
    and rescanned the long-lived caches: about 10% of the service's CPU, measured. What is alive at
    start (config, catalog, modules) is frozen out of the scans; the caches are bounded, so a higher
    threshold costs little memory.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


if __name__ == "__main__":
    sys.exit(main())
