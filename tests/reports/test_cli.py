"""`otel-llmcost report` / `advise` end to end: every format, exit codes, and the HTML in headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from otel_llmcost.cli import main as cli_main
from otel_llmcost.testing.processes import require

UNTIL = "2026-11-16"


def run(capsys, *argv):
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_json_totals_and_projection(capsys, store_path, workload):
    """JSON: the breakdown's total row is the workload's cost, and the projection is there."""
    code, out, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--format", "json", "--budget", "5")
    assert code == 0
    body = json.loads(out)
    total = body["breakdown"][-1]
    assert total["provider"] == "total"
    assert total["calls"] == len(workload)
    assert total["cost_usd"] == pytest.approx(float(sum(c.cost for c in workload)), rel=1e-9)
    assert body["projection"]["window_start"].startswith("2026-11-01")
    assert body["budgets"][0]["over"] is True  # about $17 projected against $5


def test_report_group_by_feature_csv(capsys, store_path, workload):
    """CSV by feature: one row per feature plus the total, costs summing to the workload's."""
    code, out, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--group-by", "feature",
                       "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    features = {c.feature for c in workload}
    assert {r["feature"] for r in rows} == features | {"total"}
    nightly = next(r for r in rows if r["feature"] == "nightly-summary")
    assert int(nightly["calls"]) == sum(1 for c in workload if c.feature == "nightly-summary")


def test_report_table_and_fail_on_overrun(capsys, store_path):
    """The terminal table shows the projection; --fail-on-overrun exits 3 when a budget is flagged."""
    code, out, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--budget", "5", "--fail-on-overrun",
                       "--group-by", "day")
    assert code == 3
    assert "Month-end projection" in out and "OVERRUN" in out and "2026-11-15" in out
    code, _, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--budget", "1000", "--fail-on-overrun")
    assert code == 0


def test_report_budgets_file(capsys, store_path, tmp_path):
    """--budgets reads the budget config format; a broken file is an error naming the field."""
    config = tmp_path / "llmcost.yaml"
    config.write_text("budgets:\n  - {name: per-user, amount: 3, scope: {by: user}}\n")
    code, out, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--budgets", str(config), "--format", "json")
    assert code == 0
    scopes = {b["scope"] for b in json.loads(out)["budgets"]}
    assert scopes == {"user=u-ana", "user=u-ben", "user=u-cho", "user=u-dev"}
    config.write_text("budgets:\n  - {name: x, amount: -3}\n")
    code, _, err = run(capsys, "report", str(store_path), "--budgets", str(config))
    assert code == 2 and "amount" in err


@pytest.mark.parametrize("argv, message", [
    (["--group-by", "colour"], "cannot group by colour; use any of provider"),
    (["--since", "yesterday-ish"], "is not a time"),
    (["--since", "2026-11-20", "--until", "2026-11-10"], "is not before"),
    (["--timezone", "Mars/Olympus"], "unknown time zone"),
])
def test_report_bad_options_exit_2(capsys, store_path, argv, message):
    """Bad options: exit 2 and a message saying what to give instead."""
    code, _, err = run(capsys, "report", str(store_path), *argv)
    assert code == 2
    assert message in err


def test_advise_table_and_csv(capsys, otlp_dir):
    """advise on exported span files: four recommendations with sample sizes and confidence."""
    code, out, _ = run(capsys, "advise", str(otlp_dir), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["kind"] for r in rows} == {"routing", "prompt_caching", "app_caching", "batching"}
    assert all(r["confidence"] in ("low", "medium", "high") for r in rows)
    code, out, _ = run(capsys, "advise", str(otlp_dir))
    assert code == 0 and "Savings advice from" in out and "per month" in out


def test_advise_empty_store_is_a_clear_error(capsys, tmp_path):
    """An empty store: exit 2 and how the store gets filled."""
    from otel_llmcost.store import connect

    connect(tmp_path / "empty.db").close()
    code, _, err = run(capsys, "advise", str(tmp_path / "empty.db"))
    assert code == 2 and "no LLM calls" in err and "otel-llmcost run" in err


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, unfiltered."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r) for r in rows]


def test_html_report_renders_offline_in_chromium(capsys, store_path, tmp_path):
    """The HTML report is one file with inline SVG charts and no link out; headless Chromium renders it
    to a screenshot with the charts' colours in it."""
    page = tmp_path / "report.html"
    code, _, _ = run(capsys, "report", str(store_path), "--until", UNTIL, "--budget", "15", "--format", "html",
                     "--advice", "-o", str(page))
    assert code == 0
    text = page.read_text()
    assert text.count("<svg") == 3 and "<script" not in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    shot = tmp_path / "report.png"
    subprocess.run([require("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                    "--window-size=1200,1700", "--virtual-time-budget=5000", f"--screenshot={shot}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1200, 1700)
    channels = len(rows[0]) // width
    colours = {row[x:x + 3] for row in rows[::7] for x in range(0, len(row), channels * 5)}
    assert len(colours) > 20  # text, charts and tables, not a blank page
    blue = bytes((0x25, 0x63, 0xEB))  # the projection line and the first bar
    assert any(blue in row for row in rows)
