"""Security of what leaves the process or comes into the service: signed webhook alerts, verifiable from
the README's recipe alone, and the receiver's size limits.

(Hints tokens, the receiver fuzz and slow-loris are in test_service_faults.py; secrets in telemetry in
test_privacy.py; cache tenant isolation in test_isolation.py.)
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_llmcost.budget import Alert, WebhookSink, verify_signature
from otel_llmcost.testing import WebhookReceiver

from .helpers import Processor

SECRET = "whsec-reliability-0123456789"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver("/alerts") as made:
        yield made


def readme_recipe(secret: str, header: str, body: bytes) -> bool:
    """Verification written from the README's sentence alone, not from our code:
    ``X-LLMCost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.mark.reliability(
    "budget alert webhooks: forged, tampered, replayed (stale) and unsigned deliveries",
    "every delivery is signed as the README documents (verifiable from the README alone); tampered body, "
    "wrong secret, a timestamp older than the tolerance and a missing signature are all rejected",
    covered_by=["tests/budget/test_webhook.py::test_signed_json_is_retried_after_a_500_and_verifies"],
)
@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_webhook_alerts_are_signed_as_documented(hook: WebhookReceiver, fmt: str) -> None:
    """The README's recipe verifies a real delivery; every alteration of it fails verification."""
    documented = README.read_text(encoding="utf-8")
    assert re.search(r"X-LLMCost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256\(secret, \"<t>\.<raw body>\"\)>",
                     documented), "the signature is no longer documented in the README"
    sink = WebhookSink(hook.url, secret=SECRET, format=fmt)  # type: ignore[arg-type]
    now = datetime.now(timezone.utc)
    sink.send(Alert(budget="monthly", scope_key="global", level="warn", spend=Decimal("70"), limit=Decimal("100"),
                    threshold=Decimal("0.7"), window_start=now, window_end=now, forecast=None, at=now))
    assert sink.flush(10)
    sink.close()
    (delivery,) = hook.deliveries()
    headers, body = delivery.headers, delivery.body
    signature = headers["x-llmcost-signature"]
    assert readme_recipe(SECRET, signature, body)
    assert verify_signature(SECRET, signature, body)
    assert not verify_signature(SECRET, signature, body + b" ")
    assert not verify_signature(SECRET, signature, body.replace(b"70", b"7"))
    assert not verify_signature("another-secret", signature, body)
    assert not verify_signature(SECRET, signature, body, now=time.time() + 301)  # a replay 5 minutes later
    assert not verify_signature(SECRET, "", body)
    assert not verify_signature(SECRET, "v1=" + signature.split("v1=")[1], body)  # timestamp stripped
    assert SECRET not in body.decode() and SECRET not in str(headers)


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[Processor]:
    running = Processor(tmp_path)
    yield running
    running.close()


@pytest.mark.reliability(
    "oversize OTLP bodies: over max_body, a Content-Length lie, a gzip bomb (1 MiB → 300 MiB)",
    "413 before the body is read (max_body) or before it is inflated past max_decompressed; the service "
    "stays up and its memory is not spent on the body",
    covered_by=["tests/service/test_http.py::test_oversized_body_and_gzip_bomb_get_413"],
)
def test_oversize_bodies_and_gzip_bombs_are_refused(processor: Processor, record_number: Any) -> None:
    """The receiver refuses bodies over its limits without reading or inflating them."""
    headers = {"Content-Type": "application/x-protobuf"}
    assert processor.request("POST", "/v1/metrics", b"\x00" * (256 * 1024 + 1), headers) == 413
    bomb = gzip.compress(b"\x00" * (300 * 2**20), compresslevel=9)
    record_number("gzip bomb size (bytes)", len(bomb))
    assert processor.request("POST", "/v1/metrics", bomb, {**headers, "Content-Encoding": "gzip"}) == 413
    # A Content-Length far over the limit is refused from the headers alone: nothing is sent after them.
    with socket.create_connection(("127.0.0.1", processor.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 413")
    assert processor.healthy()
