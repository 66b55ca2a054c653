"""Webhook alerts against a real HTTP server on loopback: signature, retries, formats, limits."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from otel_llmcost.budget import Alert, BudgetEngine, WebhookSink, verify_signature
from otel_llmcost.testing import WebhookReceiver

from .helpers import free_port

SECRET = "s3cret-for-tests"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver("/hook") as running:
        yield running


def an_alert(level: str = "throttle") -> Alert:
    return Alert(
        budget="monthly",
        scope_key="tenant=acme",
        level=level,  # type: ignore[arg-type]
        spend=Decimal("0.86"),
        limit=Decimal("1.00"),
        threshold=Decimal("0.85"),
        window_start=datetime(2026, 11, 1, tzinfo=timezone.utc),
        window_end=datetime(2026, 12, 1, tzinfo=timezone.utc),
        forecast=Decimal("1.31"),
        at=datetime(2026, 11, 20, tzinfo=timezone.utc),
    )


def test_signed_json_is_retried_after_a_500_and_verifies(receiver: WebhookReceiver) -> None:
    """A 500 then a 200: the alert arrives twice, each signed with HMAC-SHA256 over 't.body'."""
    receiver.script(500, 200)
    sink = WebhookSink(receiver.url, secret=SECRET, backoff=0.01)
    sink.send(an_alert())
    assert sink.flush(10)
    assert (sink.delivered, sink.failed, sink.retries) == (1, 0, 1)
    assert len(receiver.deliveries()) == 2
    for delivery in receiver.deliveries():
        headers, body = delivery.headers, delivery.body
        header = headers["X-LLMCost-Signature"]
        fields = dict(part.split("=", 1) for part in header.split(","))
        expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected)
        assert verify_signature(SECRET, header, body)
        assert not verify_signature("wrong", header, body)
        assert not verify_signature(SECRET, header, body + b" ")
        assert headers["Content-Type"] == "application/json"
    payload = json.loads(receiver.deliveries()[-1].body)
    assert payload["budget"] == "monthly" and payload["scope_key"] == "tenant=acme"
    assert (payload["level"], payload["spend"], payload["limit"], payload["forecast"]) == (
        "throttle",
        "0.86",
        "1.00",
        "1.31",
    )
    assert payload["window_end"] == "2026-12-01T00:00:00+00:00"
    sink.close()


def test_slack_format_is_a_text_payload(receiver: WebhookReceiver) -> None:
    """format='slack' posts {"text": ...} with the alert's sentence."""
    sink = WebhookSink(receiver.url, format="slack")
    sink.send(an_alert("stop"))
    assert sink.flush(10)
    delivery = receiver.deliveries()[0]
    assert json.loads(delivery.body) == {"text": an_alert("stop").text()}
    assert "X-LLMCost-Signature" not in delivery.headers
    sink.close()


def test_client_errors_are_not_retried(receiver: WebhookReceiver) -> None:
    """A 400 is final: one attempt, counted as failed."""
    receiver.script(400, 200)
    sink = WebhookSink(receiver.url, backoff=0.01)
    sink.send(an_alert())
    assert sink.flush(10)
    assert (sink.delivered, sink.failed, len(receiver.deliveries())) == (0, 1, 1)
    sink.close()


def test_unreachable_endpoint_is_retried_then_counted_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    """Connection refused is retried with backoff up to max_attempts, then logged and counted."""
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", max_attempts=3, backoff=0.01, timeout=1)
    sink.send(an_alert())
    assert sink.flush(10)
    assert (sink.delivered, sink.failed, sink.retries) == (0, 1, 2)
    assert "not delivered after 3 attempt(s)" in caplog.text
    sink.close()


def test_send_never_blocks_and_a_full_queue_drops(receiver: WebhookReceiver) -> None:
    """send() returns at once; past the queue bound alerts are dropped and counted, the rest delivered."""
    receiver.hold()
    sink = WebhookSink(receiver.url, queue_size=2)
    sink.send(an_alert())
    receiver.wait_for(1, timeout=10)  # in flight: its answer is held back
    for _ in range(5):
        sink.send(an_alert())  # returns at once although the endpoint does not answer: two queued, 3 dropped
    assert sink.dropped == 3
    assert sink.delivered == 0 and len(receiver.deliveries()) == 1  # nothing else got through while held
    receiver.release()
    assert sink.flush(10)
    assert sink.delivered == 3 == len(receiver.deliveries())
    sink.close()


def test_engine_from_yaml_posts_signed_alerts(
    receiver: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A YAML config with a webhook: crossing warn posts one signed alert, verified by the receiver."""
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    config = tmp_path / "llmcost.yaml"
    config.write_text(
        "budgets:\n  - {name: monthly, amount: 1}\n"
        f"alerts:\n  log: false\n  webhooks:\n    - {{url: '{receiver.url}', secret_env: HOOK_SECRET}}\n",
        encoding="utf-8",
    )
    engine = BudgetEngine.from_config(config)
    engine.record_cost(Decimal("0.71"), {})
    engine.record_cost(Decimal("0.01"), {})
    engine.close()
    (delivery,) = receiver.deliveries()
    assert verify_signature(SECRET, delivery.headers["X-LLMCost-Signature"], delivery.body)
    assert json.loads(delivery.body)["level"] == "warn"
