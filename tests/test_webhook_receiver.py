"""The loopback webhook receiver the tests share (otel_llmcost.testing.webhook), driven by real HTTP clients."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from otel_llmcost.testing import WebhookReceiver
from otel_llmcost.testing.webhook import Headers


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver("/hook") as running:
        yield running


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 10) -> int:
    """POST with urllib, as WebhookSink does; the status, 4xx and 5xx included."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Bytes as written on the socket (for what urllib will not send); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_records_method_path_query_headers_body_and_json(receiver: WebhookReceiver) -> None:
    """A POST is kept whole: method, path apart from query, headers as sent, exact bytes and parsed JSON."""
    body = b'{"level": "warn",  "spend": "0.70"}'
    assert post(receiver.url + "?attempt=2", body, {"Content-Type": "application/json", "X-Sig": "t=1,v1=ab"}) == 200
    (delivery,) = receiver.deliveries()
    assert (delivery.method, delivery.path, delivery.query, delivery.status) == ("POST", "/hook", "attempt=2", 200)
    assert delivery.body == body  # the bytes as sent, spacing included: signatures are over them
    assert delivery.json == {"level": "warn", "spend": "0.70"}
    assert delivery.headers["x-sig"] == delivery.headers["X-SIG"] == "t=1,v1=ab"
    assert "X-Sig" in list(delivery.headers) and "content-type" in delivery.headers
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/hook" and receiver.port > 0


def test_non_json_bodies_and_other_methods_are_kept_with_json_none(receiver: WebhookReceiver) -> None:
    """A body that is not JSON has json None (the bytes stay); PUT and GET are recorded like POST."""
    assert post(receiver.base_url + "/other", b"\x1f\x8b not json") == 200
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    connection.request("PUT", "/put", body=b"[1, 2]")
    assert connection.getresponse().status == 200
    connection.close()
    assert urllib.request.urlopen(receiver.base_url + "/status", timeout=10).status == 200
    got = [(d.method, d.path, d.json, d.body) for d in receiver.deliveries()]
    assert got == [("POST", "/other", None, b"\x1f\x8b not json"), ("PUT", "/put", [1, 2], b"[1, 2]"),
                   ("GET", "/status", None, b"")]
    assert [d.path for d in receiver.deliveries("/put")] == ["/put"]


def test_scripted_statuses_come_first_then_the_default(receiver: WebhookReceiver) -> None:
    """script(500, 400) answers the next two requests so; then `status` answers the rest."""
    receiver.script(500, 400)
    receiver.status = 503
    assert [post(receiver.url, b"{}") for _ in range(4)] == [500, 400, 503, 503]
    assert [d.status for d in receiver.deliveries()] == [500, 400, 503, 503]


def test_wait_for_returns_once_enough_arrived_from_many_threads(receiver: WebhookReceiver) -> None:
    """Eight senders at once: every request is kept once, and wait_for sees them all."""
    def send(sender: int) -> None:
        for n in range(10):
            post(receiver.url, json.dumps({"sender": sender, "n": n}).encode())

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(8)]
    for thread in threads:
        thread.start()
    got = receiver.wait_for(80, timeout=30)
    for thread in threads:
        thread.join()
    assert sorted((d.json["sender"], d.json["n"]) for d in got) == [(s, n) for s in range(8) for n in range(10)]


def test_wait_for_says_what_arrived_when_the_count_is_not_reached(receiver: WebhookReceiver) -> None:
    """Too few requests: AssertionError naming the count expected and the requests that did arrive."""
    post(receiver.base_url + "/a", b"{}")
    with pytest.raises(AssertionError, match=r"expected 1 request\(s\) to /b within 0.2 s; 1 arrived: "
                                             r"\['POST /a -> 200'\]"):
        receiver.wait_for(1, timeout=0.2, path="/b")
    assert len(receiver.wait_for(1, path="/a")) == 1


def test_held_answers_wait_for_release_but_are_recorded_at_once(receiver: WebhookReceiver) -> None:
    """hold(): the request is kept at once and its answer waits for release()."""
    receiver.hold()
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(post(receiver.url, b'{"n": 1}')))
    sender.start()
    receiver.wait_for(1)
    sender.join(0.3)
    assert sender.is_alive() and answers == []  # still waiting for its answer
    receiver.release()
    sender.join(10)
    assert answers == [200]


def test_a_hung_or_slow_answer_times_the_sender_out_and_close_drops_it() -> None:
    """status None never answers, a long delay answers too late: the sender times out; close() drops both."""
    with WebhookReceiver("/hook", status=None) as receiver:
        with pytest.raises(TimeoutError):
            post(receiver.url, b"{}", timeout=0.3)
        receiver.status, receiver.delay = 200, 60.0
        with pytest.raises(TimeoutError):
            post(receiver.url, b"{}", timeout=0.3)
    assert [d.status for d in receiver.deliveries()] == [None, None]  # neither was ever answered


def test_close_refuses_connections_and_start_binds_the_same_port_again() -> None:
    """Closed: connection refused at the same address; started again: served on that port."""
    receiver = WebhookReceiver("/hook").start()
    url, port = receiver.url, receiver.port
    receiver.close()
    with pytest.raises(urllib.error.URLError) as refused:
        post(url, b"{}")
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    with receiver:
        assert receiver.port == port
        assert post(url, b"{}") == 200
    assert len(receiver.deliveries()) == 1


def test_chunked_bodies_are_read_whole(receiver: WebhookReceiver) -> None:
    """Transfer-Encoding: chunked is decoded into the body a Content-Length would have carried."""
    answer = raw_request(receiver.port, b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                         b"6\r\n{\"a\": \r\n2\r\n1}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200")
    assert receiver.deliveries()[0].json == {"a": 1}


def test_unreadable_requests_get_a_clear_4xx_and_are_listed_as_refused() -> None:
    """A Content-Length that is no number gets 400, a body over max_body 413; neither is a delivery."""
    with WebhookReceiver("/hook", max_body=8) as receiver:
        bad = raw_request(receiver.port, b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
        assert bad.startswith(b"HTTP/1.0 400") and b"'ten' is not a byte count" in bad
        assert post(receiver.url, b'{"a": "too long"}') == 413
        assert receiver.deliveries() == []
        assert len(receiver.refused) == 2 and "over the 8-byte limit" in receiver.refused[1]


def test_bad_arguments_and_an_unstarted_receiver_say_what_to_do() -> None:
    """A path without '/' or a negative delay is a ValueError; an address before start() a RuntimeError."""
    with pytest.raises(ValueError, match="must start with '/'"):
        WebhookReceiver("hook")
    with pytest.raises(ValueError, match="delay must be zero or more"):
        WebhookReceiver(delay=-1)
    with pytest.raises(RuntimeError, match="call start"):
        _ = WebhookReceiver().url


def test_headers_look_up_in_any_case_and_join_repeats() -> None:
    """Headers: case-insensitive lookup, names as sent, a repeated field joined with ', '."""
    headers = Headers([("X-Tag", "a"), ("Content-Type", "application/json"), ("x-tag", "b")])
    assert headers["x-TAG"] == "a, b" and list(headers) == ["X-Tag", "Content-Type"] and len(headers) == 2
    assert "CONTENT-TYPE" in headers and 3 not in headers and headers.get("missing") is None
    assert dict(headers) == {"X-Tag": "a, b", "Content-Type": "application/json"}
