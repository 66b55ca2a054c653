"""Write the dashboards' JSON (`python -m dashboards.generate`), or check that the committed JSON is what
the code makes (`--check`, exit 1 and the files that differ): the JSON in git is what Grafana loads,
the code is what people edit, and the check keeps the two from drifting apart."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from . import control, overview, tokens

JSON_DIR = Path(__file__).resolve().parent / "json"

DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    "llmcost-overview.json": overview.build,
    "llmcost-tokens.json": tokens.build,
    "llmcost-traffic.json": control.build,
}


def render(build: Callable[[], dm.Dashboard]) -> str:
    """The dashboard as the JSON we commit: sorted keys and a final newline, so diffs stay readable."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {name: render(build) for name, build in DASHBOARDS.items()}


def stale(directory: Path = JSON_DIR) -> dict[str, str]:
    """File name -> unified diff, for each committed file that differs from what the code makes (or is
    missing), and for JSON files in `directory` that no code makes any more."""
    problems: dict[str, str] = {}
    wanted = generated()
    for name, text in wanted.items():
        path = directory / name
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(keepends=True), text.splitlines(keepends=True),
                                        f"committed/{name}", f"generated/{name}", n=1)
            problems[name] = "".join(diff) if current else "missing"
    for path in sorted(directory.glob("*.json")):
        if path.name not in wanted:
            problems[path.name] = "no code generates it: delete it or add it to dashboards.generate.DASHBOARDS"
    return problems


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generated().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help=f"where the JSON lives (default {JSON_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.dir)
        for name, diff in problems.items():
            print(f"{args.dir / name}: differs from what dashboards/ generates\n{diff[:4000]}", file=sys.stderr)
        if problems:
            print("Run `python -m dashboards.generate` and commit dashboards/json/.", file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {args.dir}")
        return 0
    for path in write(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
