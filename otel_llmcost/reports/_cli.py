"""Options `report` and `advise` share: where calls come from, the time window, output format."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..environment_variables import OTEL_LLMCOST_STORE
from .schema import ReportInputError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """`2026-11-02` (midnight in `zone`), an ISO date-time (naive: in `zone`), or `7d` / `24h` ago."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReportInputError(f"{text!r} is not a time: use 2026-11-02, 2026-11-02T14:00, or 7d / 24h ago") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def parse_duration(text: str) -> timedelta:
    match = _RELATIVE.match(text.strip())
    if not match:
        raise ReportInputError(f"{text!r} is not a duration: use 30s, 5m, 1h, 1d")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=None,
                        help="the embedded SQLite store (default $OTEL_LLMCOST_STORE or ./llmcost.db), an OTLP "
                             "JSON(L) span file or a directory of them, or a Prometheus URL (http://host:9090)")
    parser.add_argument("--since", help="start: 2026-11-01, 2026-11-01T09:00, or 30d (ago)")
    parser.add_argument("--until", help="end, exclusive (default now); also the 'as of' of the projection")
    parser.add_argument("--timezone", default="UTC", help="for days and the month (IANA name, default UTC)")
    parser.add_argument("--step", default="1h", help="Prometheus only: the time step of the counters (default 1h)")
    parser.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on long reads")


def resolve(args: argparse.Namespace) -> tuple[str, ZoneInfo, datetime | None, datetime]:
    """(source, zone, since, until) from the common options; ReportInputError on bad values."""
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportInputError(f"unknown time zone {args.timezone!r}; use an IANA name such as Europe/Paris") from None
    now = datetime.now(zone)
    since = parse_when(args.since, zone, now) if args.since else None
    until = parse_when(args.until, zone, now) if args.until else now
    if since is not None and since >= until:
        raise ReportInputError(f"--since {args.since} is not before --until {args.until or 'now'}")
    source = args.source or os.environ.get(OTEL_LLMCOST_STORE) or "llmcost.db"
    return source, zone, since, until


def emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


def fail(command: str, error: object) -> int:
    print(f"otel-llmcost {command}: {error}", file=sys.stderr)
    return 2


def run(command: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
        argv: Sequence[str] | None) -> int:
    """Parse, run, and turn bad input or a missing extra into one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except ReportInputError as error:
        return fail(command, error)
    except ImportError as error:
        return fail(command, f"{error}; install the reports extra: pip install 'otel-llmcost[reports]'")
