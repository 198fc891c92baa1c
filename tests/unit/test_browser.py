"""Browser support without a browser: browser=1 frames (mc.worker.browser), origins and
CORS decisions (mc.master.origins), the worker's Origin check, the history ring."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from mc.master.history import CAPACITY, History, parse_seconds
from mc.master.origins import refused, same_origin
from mc.protocol.control import Metrics
from mc.websocket import OP_BINARY, OP_CLOSE, OP_TEXT, FrameParser
from mc.worker.answers import Respond, redirect, refuse, unavailable
from mc.worker.browser import browser_answer, frame_of

from .test_core import make_core, request


def frames_after_101(data: bytes) -> list[tuple[int, object]]:
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return list(FrameParser(1 << 20, expect_masked=False).feed(rest))


def test_redirect_becomes_a_frame_and_4307() -> None:
    req = request("/v1/chat/room?client=a&browser=1")
    out = browser_answer(req, redirect("ws://w2:7102/v1/chat/room?client=a&browser=1"))
    assert out is not None
    (op, payload), (cop, close) = frames_after_101(out)
    assert op == OP_TEXT
    assert orjson.loads(payload) == {"type": "redirect", "url": "ws://w2:7102/v1/chat/room?client=a&browser=1"}
    assert cop == OP_CLOSE and close[0] == 4307  # type: ignore[index]


@pytest.mark.parametrize(("answer", "status"), [
    (refuse(400, "bad_request", "client is required"), 400),
    (refuse(401, "unauthorized", "bad token"), 401),
    (refuse(403, "forbidden", "origin"), 403),
    (refuse(404, "not_found", "no chat session 'x'"), 404),
    (refuse(409, "forbidden", "chat session is full"), 409),
])
def test_refusals_become_error_frames(answer: Respond, status: int) -> None:
    out = browser_answer(request("/v1/app?client=a&browser=1"), answer)
    assert out is not None
    (_, payload), (_, close) = frames_after_101(out)
    assert orjson.loads(payload) == {"type": "error", "code": answer.body["error"],
                                     "reason": answer.body["reason"], "status": status}
    assert close[0] == 4000 + status  # type: ignore[index]


def test_503_carries_retry_after() -> None:
    frame, code = frame_of(503, unavailable("draining").body, {"retry-after": "1"})
    assert frame == {"type": "error", "code": "unavailable", "reason": "draining", "status": 503,
                     "retry_after": 1}
    assert code == 4503


def test_msgpack_offer_gets_a_binary_frame() -> None:
    out = browser_answer(request("/v1/app?client=a&browser=1", protocols="mc.v1.msgpack"),
                         refuse(404, "not_found", "x"))
    assert out is not None and b"Sec-WebSocket-Protocol: mc.v1.msgpack" in out
    (op, payload), _ = frames_after_101(out)
    assert op == OP_BINARY and msgpack.unpackb(payload)["status"] == 404


def test_plain_http_without_browser_1_or_upgrade() -> None:
    assert browser_answer(request("/v1/app?client=a"), refuse(404, "not_found", "x")) is None
    no = refuse(426, "bad_request", "x")
    assert browser_answer(request("/v1/app?browser=1", upgrade=False), no) is None
    assert browser_answer(request("/healthz?browser=1"), Respond(200, {})) is None
    # an unknown subprotocol only: no frame the client could read, so plain HTTP
    assert browser_answer(request("/v1/app?browser=1", protocols="other"), no) is None


def test_worker_refuses_foreign_origins_only_when_set() -> None:
    core, _ = make_core(allowed_origins=("http://app.example",))
    bad = core.handshake(request("/v1/app?client=a", extra="Origin: http://evil.example"), 0.0)
    assert isinstance(bad, Respond) and bad.status == 403 and bad.body["error"] == "forbidden"
    good = core.handshake(request("/v1/app?client=a", extra="Origin: http://app.example"), 0.0)
    assert not isinstance(good, Respond)
    assert not isinstance(core.handshake(request("/v1/app?client=b"), 0.0), Respond)  # no Origin: not a page
    foreign = request("/v1/app?client=a", extra="Origin: http://x")
    assert not isinstance(make_core()[0].handshake(foreign, 0.0), Respond)
    assert not isinstance(make_core(allowed_origins=("*",))[0].handshake(foreign, 0.0), Respond)


def test_origin_decisions() -> None:
    host = {"host": "127.0.0.1:7100"}
    assert not refused(None, host, "http", ("http://a",))
    assert not refused("http://evil", host, "http", ())  # unset: nothing is refused
    assert refused("http://evil", host, "http", ("http://a",))
    assert not refused("http://a", host, "http", ("http://a",))
    assert not refused("http://evil", host, "http", ("*",))
    assert not refused("http://127.0.0.1:7100", host, "ws", ("http://a",))  # the master's own pages
    assert same_origin("https://h:1", "h:1", "wss") and not same_origin("http://h:1", "h:1", "https")


def test_history_ring_is_bounded_and_ordered() -> None:
    h = History(capacity=5)
    for t in range(12):
        h.add(t * 1000, Metrics(connections=t), [("w1", Metrics(connections=t, msgs_in_rate=0.5))])
    assert len(h) == 5
    assert [s.ts for s in h.last(3)] == [9000, 10000, 11000]
    assert [s.ts for s in h.last(100)] == [7000, 8000, 9000, 10000, 11000]
    assert h.last(0) == []
    last = h.last(1)[0].to_json()
    assert last["connections"] == 11 and last["workers"]["w1"] == {
        "connections": 11, "msgs_in_per_s": 0.5, "msgs_out_per_s": 0.0, "sessions": 0}


@pytest.mark.parametrize(("raw", "want"), [
    (None, CAPACITY), ("1", 1), ("900", 900), ("0", None), ("901", None), ("-5", None), ("x", None),
    ("1e3", None), ("", None), ("99999999999", None),
])
def test_parse_seconds(raw: str | None, want: int | None) -> None:
    assert parse_seconds(raw) == want
