"""`otel-llmcost report`: cost breakdowns, the month-end projection and budgets, in the terminal or as
JSON, CSV or one self-contained HTML file.

    otel-llmcost report llmcost.db --group-by model,tier --since 30d
    otel-llmcost report spans/ --budgets llmcost.yaml --format html -o report.html
    otel-llmcost report http://localhost:9090 --budget 500 --fail-on-overrun

Exit status: 0, 2 for unusable input (the message says why), 3 with `--fail-on-overrun` when a budget
is projected over its amount by more than the margin (a cron job's alert).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._cli import add_common, emit, parse_duration, resolve, run
from .schema import ReportInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-llmcost report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    parser.add_argument("--group-by", default="provider,model",
                        help="comma-separated: provider, model, user, tier, feature, day, tenant, operation")
    parser.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    parser.add_argument("--budgets", help="budget config file (the YAML of OTEL_LLMCOST_CONFIG): each calendar "
                                          "budget is checked against its projection")
    parser.add_argument("--budget", type=float, help="one global monthly budget in USD")
    parser.add_argument("--margin", type=float, default=0.20,
                        help="flag a budget projected over its amount by more than this (default 0.20)")
    parser.add_argument("--advice", action="store_true", help="add the savings advice (as `advise`) to the report")
    parser.add_argument("--fail-on-overrun", action="store_true", help="exit 3 when a budget is flagged")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run("report", build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from ..budget.errors import ConfigError
    from .breakdown import breakdown, parse_group_by, with_day
    from .projection import check_budgets, project, single_budget
    from .render import Report, print_report, report_csv, report_json, terminal
    from .sources import load

    source, zone, since, until = resolve(args)
    group_by = parse_group_by(args.group_by)
    if not 0 <= args.margin < 10:
        raise ReportInputError(f"--margin {args.margin}: give a fraction such as 0.2 for 20%")
    frame = load(source, since, until, step=parse_duration(args.step), progress=not args.no_progress)
    timezone = str(zone)
    table = breakdown(frame, group_by, timezone)
    notes: list[str] = []
    checks = []
    projection = None
    try:
        projection = project(frame, until, None, timezone)
    except ReportInputError as exc:
        notes.append(f"no projection: {exc}")
    if args.budgets:
        from ..budget.config import load_budget_config

        try:
            config = load_budget_config(args.budgets)
        except ConfigError as exc:
            raise ReportInputError(str(exc)) from None
        found, budget_notes = check_budgets(frame, config, until, args.margin)
        checks.extend(found)
        notes.extend(budget_notes)
    if args.budget is not None and projection is not None:
        checks.append(single_budget(frame, args.budget, until, timezone, args.margin))
    if frame["duration_s"].isna().all():
        notes.append("latency is not in this source (Prometheus keeps histograms, not calls): p95 shows no data")
    daily = with_day(frame, timezone)
    report = Report(source=source, since=since.isoformat() if since else None, until=until.isoformat(),
                    group_by=[key for key in args.group_by.split(",") if key.strip()], table=table,
                    projection=projection, budgets=checks, notes=notes,
                    daily=daily[["day", "model", "cost_usd"]].assign(model=daily["model"].fillna("(none)")),
                    savings_by_day=daily.groupby("day")[["cost_usd", "saved_usd"]].sum())
    if args.format == "table":
        from rich.console import Console

        if args.output:
            with args.output.open("w", encoding="utf-8") as out:
                print_report(report, Console(file=out, width=200))
        else:
            print_report(report, terminal())
    elif args.format == "json":
        emit(report_json(report), args.output)
    elif args.format == "csv":
        emit(report_csv(report), args.output)
    else:
        from .html import render_html

        advice = []
        if args.advice:
            from .savings import advise

            advice = advise(frame)
        emit(render_html(report, advice), args.output)
    if args.fail_on_overrun and any(check.over for check in checks):
        return 3
    return 0
