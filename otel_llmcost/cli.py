"""`otel-llmcost`: run an app with cost telemetry, show a demo, look up prices.

The commands only parse arguments and call into the parts that own the logic.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _cmd_prices(args: argparse.Namespace) -> int:
    from .errors import PriceFileError
    from .pricing import UnknownPriceError, load_catalog

    try:
        catalog = load_catalog(args.prices_file)
        prices = catalog.prices(args.model, args.provider)
    except (PriceFileError, UnknownPriceError) as exc:
        print(f"otel-llmcost: {exc}", file=sys.stderr)
        return 2

    def show(value: object) -> str:
        if value is None:
            return "-"
        tiers = getattr(value, "tiers", None)
        if tiers:
            steps = ", ".join(f"${t.price} above {t.start:,} input tokens" for t in tiers)
            return f"${value.base} ({steps})"  # type: ignore[attr-defined]
        return f"${value}"

    print(f"model:              {prices.model}")
    print(f"provider:           {prices.provider or '-'}")
    print(f"source:             {prices.source}")
    print("USD per million tokens:")
    print(f"  input             {show(prices.input_mtok)}")
    print(f"  cached input      {show(prices.cache_read_mtok)}")
    print(f"  cache write (5m)  {show(prices.cache_write_mtok)}")
    print(f"  cache write (1h)  {show(prices.cache_write_1h_mtok)}")
    print(f"  output            {show(prices.output_mtok)}")
    batch = f"x{prices.batch_multiplier}" if prices.batch_multiplier is not None else "-"
    print(f"batch discount:     {batch}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .embedded import RUN_ID_ENV, otlp_configured

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("otel-llmcost run: give the program to run, e.g. `otel-llmcost run -- python app.py`",
              file=sys.stderr)
        return 2
    env = dict(os.environ)
    if otlp_configured(env):
        # A pipeline is configured: behave exactly like opentelemetry-instrument, which finds our
        # instrumentors through their entry points.
        runner = shutil.which("opentelemetry-instrument")
        if runner is None:
            print("otel-llmcost run: OTLP is configured but opentelemetry-instrument is missing; "
                  "pip install 'otel-llmcost[otlp]'", file=sys.stderr)
            return 2
        os.execvpe(runner, [runner, *command], env)
    bootstrap = str(Path(__file__).with_name("_bootstrap"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (bootstrap, env.get("PYTHONPATH", "")) if p)
    env.setdefault(RUN_ID_ENV, uuid.uuid4().hex)
    if args.store:
        env["OTEL_LLMCOST_STORE"] = str(args.store)
    executable = shutil.which(command[0]) or command[0]
    try:
        os.execvpe(executable, command, env)
    except OSError as exc:
        print(f"otel-llmcost run: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.traffic:
        from .traffic import run_traffic

        return run_traffic(args.duration, max_calls=args.calls, rate=args.rate, config=args.config,
                           export_interval=args.export_interval)
    from .demo import run_demo

    return run_demo(store=args.store, calls=60 if args.calls is None else args.calls, otlp=args.otlp, export_interval=args.export_interval)


# Commands whose whole command line belongs to a part's own `main(argv)`.
_DELEGATED = {
    "route-eval": ("otel_llmcost.routing.evaluate",
                   "score a routing classifier on labelled queries and show what routing would cost and trade"),
    "cache-eval": ("otel_llmcost.cache.evaluate",
                   "hit and false-hit rates of the semantic cache on labelled pairs, per category, and the "
                   "best threshold for a target false-hit rate"),
    "report": ("otel_llmcost.reports.report",
               "cost breakdowns, month-end projection against budgets; table, JSON, CSV or HTML"),
    "advise": ("otel_llmcost.reports.advise",
               "savings advice (routing, prompt caching, app caching, batching) with its evidence"),
    "processor": ("otel_llmcost.service.cli",
                  "run the processor service: OTLP/HTTP in, budgets applied from metrics, /v1/hints and /metrics out"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-llmcost", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otel-llmcost {__version__}")
    sub = parser.add_subparsers(dest="command_name", required=True)

    demo = sub.add_parser("demo", help="run a realistic workload on the real SDKs against a built-in "
                                       "loopback server (no API key) and print what it cost")
    demo.add_argument("--store", type=Path, default=None, help="SQLite store to keep (default: a temporary one)")
    demo.add_argument("--calls", type=int, default=None, help="number of LLM calls in the workload (default 60; "
                                                               "--traffic: stop after that many)")
    demo.add_argument("--otlp", action="store_true",
                      help="also send spans and metrics over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT, _PROTOCOL)")
    demo.add_argument("--traffic", action="store_true",
                      help="traffic generator: the guarded workload over OTLP, repeated for --duration seconds "
                           "or until interrupted (the docker-compose demo app)")
    demo.add_argument("--duration", type=float, default=None, help="--traffic: seconds to run (default: until "
                                                                   "interrupted)")
    demo.add_argument("--rate", type=float, default=5.0, help="--traffic: calls per second (default 5)")
    demo.add_argument("--config", default=None, help="--traffic: llmcost config for budgets and the guard "
                                                      "(default: the demo's own)")
    demo.add_argument("--export-interval", type=float, default=2.0,
                      help="seconds between OTLP metric exports (default 2)")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run a program with every LLM SDK instrumented "
                                     "(`otel-llmcost run -- python app.py`)")
    run.add_argument("--store", type=Path, default=None, help="SQLite store (default ./llmcost.db)")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(func=_cmd_run)

    prices = sub.add_parser("prices", help="print the prices that would be used for a model, and their source")
    prices.add_argument("model")
    prices.add_argument("--provider", default=None,
                        help="gen_ai.provider.name or catalog id (openai, anthropic, gcp.gemini, ...)")
    prices.add_argument("--prices-file", default=None, help="price file with overrides (default: "
                                                          "$OTEL_LLMCOST_PRICES_FILE)")
    prices.set_defaults(func=_cmd_prices)

    for name, (_module, text) in _DELEGATED.items():
        delegated = sub.add_parser(name, add_help=False, help=f"{text} (`otel-llmcost {name} --help`)")
        delegated.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] and arguments[0] in _DELEGATED:
        # Their options (--help included) belong to the command's own parser, untouched by ours.
        module = importlib.import_module(_DELEGATED[arguments[0]][0])
        return int(module.main(arguments[1:]))
    args = build_parser().parse_args(arguments)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
