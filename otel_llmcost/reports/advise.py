"""`otel-llmcost advise`: data-driven savings recommendations, each with its evidence and sample size.

    otel-llmcost advise llmcost.db --since 30d
    otel-llmcost advise spans/ --batch-features nightly-summary,eval --format json

See `otel_llmcost.reports.savings` for how each figure is computed. Exit status 0, or 2 for unusable
input (the message says why).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._cli import add_common, emit, parse_duration, resolve, run
from .schema import ReportInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-llmcost advise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--batch-features", help="comma-separated feature tags that can wait for batch results "
                                                 "(default: names like nightly, batch, eval, report, backfill)")
    parser.add_argument("--prompt-cache-ttl", default="5m", help="how long a provider keeps a prefix (default 5m)")
    parser.add_argument("--app-cache-ttl", default="1h", help="TTL of the application cache to assume (default 1h)")
    parser.add_argument("--prices-file", help="price overrides (default $OTEL_LLMCOST_PRICES_FILE)")
    parser.add_argument("--routing-config", help="config file whose routing: section gives the tiers' models")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run("advise", build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from ..errors import PriceFileError
    from ..pricing import load_catalog
    from ..routing import Router
    from .render import advice_csv, advice_json, print_advice, terminal
    from .savings import AdviceOptions, advise, observed_days
    from .sources import load

    source, _zone, since, until = resolve(args)
    options = AdviceOptions(
        prompt_cache_ttl_s=parse_duration(args.prompt_cache_ttl).total_seconds(),
        app_cache_ttl_s=parse_duration(args.app_cache_ttl).total_seconds(),
        batch_features=[f for f in args.batch_features.split(",") if f.strip()] if args.batch_features else None,
    )
    try:
        catalog = load_catalog(args.prices_file)
    except PriceFileError as exc:
        raise ReportInputError(str(exc)) from None
    try:
        router = Router.from_config(args.routing_config, prices=catalog) if args.routing_config else Router(prices=catalog)
    except Exception as exc:  # a config error of the routing part, whatever its type
        raise ReportInputError(f"{args.routing_config}: {exc}") from None
    frame = load(source, since, until, step=parse_duration(args.step), progress=not args.no_progress)
    recommendations = advise(frame, catalog, router, options)
    days = observed_days(frame)
    calls = int(frame["calls"].sum())
    if args.format == "table":
        from rich.console import Console

        if args.output:
            with args.output.open("w", encoding="utf-8") as out:
                print_advice(recommendations, Console(file=out, width=200), days, calls)
        else:
            print_advice(recommendations, terminal(), days, calls)
    elif args.format == "json":
        emit(advice_json(recommendations, {"source": source, "days": days, "calls": calls}), args.output)
    else:
        emit(advice_csv(recommendations), args.output)
    return 0
