"""The worker core (mc.worker.core) with no sockets: a fake Sink and a hand-moved clock.

Every handshake answer, every client frame, every close code and the control
messages are driven through the core's inputs and checked at its outputs,
plus a hypothesis state machine of connection states against a reference
model.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Any

import hypothesis.strategies as st
import msgpack
import orjson
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mc.channels import encoded
from mc.protocol import JSON, MSGPACK, CloseCode, Notification, Target
from mc.protocol.control import (
    PRESENCE_CHUNK,
    SPLIT_FRAME,
    Adopt,
    Deliver,
    Delivered,
    Drain,
    Drained,
    ForwardNotify,
    HandedOff,
    HandOff,
    Heartbeat,
    Kick,
    Notified,
    Presence,
    Recorded,
    Register,
    Registered,
    Release,
)
from mc.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeReader,
    HandshakeRequest,
    encode_masked_frame,
)
from mc.worker.answers import Accept, Locate, LocateFailed, Owned, Respond
from mc.worker.config import WorkerConfig
from mc.worker.core import WorkerCore
from mc.worker.peer import APP, CHAT, CONSUMER, Peer
from mc.worker.states import CLOSED, CLOSING, HANDSHAKING, OPEN, Event, StateError, advance

KEY = base64.b64encode(os.urandom(16)).decode()


class FakeSink:
    """Records what the core decides; writes to a non-OPEN connection are dropped (as the Flusher does)."""

    def __init__(self) -> None:
        self.frames: dict[Peer, list[Any]] = {}
        self.closes: dict[Peer, tuple[int, str]] = {}
        self.dropped: set[Peer] = set()
        self.control: list[Any] = []
        self.linked = True
        self.parsers: dict[Peer, FrameParser] = {}

    def write(self, conn: Peer, data: bytes) -> None:
        if conn.state is not OPEN:
            return
        parser = self.parsers.setdefault(conn, FrameParser(1 << 20, expect_masked=False))
        for op, payload in parser.feed(data):
            if op == OP_PING:
                self.frames.setdefault(conn, []).append("PING")
            elif op == OP_PONG:
                self.frames.setdefault(conn, []).append("PONG")
            else:
                self.frames.setdefault(conn, []).append(conn.codec.decode(payload))

    def write_many(self, conns: Sequence[Peer], data: bytes) -> None:
        for conn in conns:
            self.write(conn, data)

    def close(self, conn: Peer, code: int, reason: str) -> None:
        assert conn.state is OPEN, "a close frame goes out once, while open"
        assert conn not in self.closes
        self.closes[conn] = (code, reason)

    def drop(self, conn: Peer) -> None:
        self.dropped.add(conn)

    def send_control(self, message: Any) -> bool:
        if not self.linked:
            return False
        self.control.append(message)
        return True

    def got(self, conn: Peer) -> list[Any]:
        out = self.frames.get(conn, [])
        self.frames[conn] = []
        return out


def request(target: str = "/v1/app?client=alice", *, version: str = "13", key: str | None = KEY,
            upgrade: bool = True, protocols: str | None = None, extra: str = "") -> HandshakeRequest:
    lines = [f"GET {target} HTTP/1.1", "Host: w"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Version: {version}"]
        if key is not None:
            lines.append(f"Sec-WebSocket-Key: {key}")
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if extra:
        lines.append(extra)
    req = HandshakeReader().feed(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert req is not None
    return req


def make_core(**cfg: Any) -> tuple[WorkerCore, FakeSink]:
    sink = FakeSink()
    config = WorkerConfig(**{"heartbeat": 10.0, **cfg})
    return WorkerCore(config, sink, worker_id="w1", instance=0xABC, wall_ms=lambda: 1234), sink


def connect(core: WorkerCore, target: str = "/v1/app?client=alice", now: float = 0.0, **kw: Any) -> Peer:
    answer = core.handshake(request(target, **kw), now)
    if isinstance(answer, Locate):  # clustered: the master says this worker owns it
        answer = core.located(answer, Owned(), now)
    assert isinstance(answer, Accept), answer
    return core.open(answer, now, Peer)


def frame(obj: Any, codec: Any = JSON) -> bytes:
    return encode_masked_frame(OP_TEXT if codec is JSON else OP_BINARY, codec.encode(obj))


def send(core: WorkerCore, conn: Peer, obj: Any, now: float = 0.0) -> None:
    core.received(conn, frame(obj, conn.codec), now)


# ------------------------------------------------------------------ states


def test_transition_table() -> None:
    assert advance(HANDSHAKING, Event.ACCEPT) is OPEN
    assert advance(OPEN, Event.SEND_CLOSE) is CLOSING
    assert advance(CLOSING, Event.CLOSE_RECEIVED) is CLOSED
    assert advance(CLOSING, Event.TIMEOUT) is CLOSED
    assert advance(OPEN, Event.ABORT) is CLOSED
    for state, event in [(OPEN, Event.ACCEPT), (CLOSED, Event.SEND_CLOSE), (OPEN, Event.TIMEOUT),
                         (HANDSHAKING, Event.SEND_CLOSE)]:
        with pytest.raises(StateError):
            advance(state, event)


# --------------------------------------------------------------- handshake


def status(answer: Any) -> int:
    assert isinstance(answer, Respond), answer
    return answer.status


@pytest.mark.parametrize(("target", "kw", "expected"), [
    ("/nowhere", {}, 404),
    ("/v1/app?client=a", {"upgrade": False}, 426),
    ("/v1/app?client=a", {"version": "8"}, 426),
    ("/v1/app?client=a", {"key": None}, 400),
    ("/v1/app?client=a", {"key": "short"}, 400),
    ("/v1/app", {}, 400),
    ("/v1/app?client=bad%20name", {}, 400),
    ("/v1/app?client=a", {"protocols": "other"}, 400),
    ("/v1/consumer", {}, 400),
    ("/v1/chat/bad%20name?client=a", {}, 400),
    ("/v1/chat/room?client=a&mode=sideways", {}, 400),
    ("/v1/chat/room?client=a&mode=join", {}, 404),
])
def test_refused_handshakes(target: str, kw: dict[str, Any], expected: int) -> None:
    core, _ = make_core()
    answer = core.handshake(request(target, **kw), 0.0)
    assert status(answer) == expected
    assert core.stats.rejected == 1
    assert not core.connections


def test_version_refusal_names_version_13_and_upgrade_refusal_names_websocket() -> None:
    core, _ = make_core()
    version = core.handshake(request(version="8"), 0.0)
    assert isinstance(version, Respond) and ("Sec-WebSocket-Version", "13") in version.headers
    assert b"Sec-WebSocket-Version: 13\r\n" in version.response()
    plain = core.handshake(request(upgrade=False), 0.0)
    assert isinstance(plain, Respond) and ("Upgrade", "websocket") in plain.headers


def test_healthz_answers_with_the_worker_and_its_count() -> None:
    core, _ = make_core()
    connect(core)
    answer = core.handshake(request("/healthz", upgrade=False), 0.0)
    assert isinstance(answer, Respond) and answer.status == 200
    assert answer.body == {"worker": "w1", "connections": 1}
    assert core.stats.rejected == 0


def test_draining_and_connection_limit_answer_503_with_retry_after() -> None:
    core, _ = make_core(max_connections=1)
    connect(core)
    full = core.handshake(request("/v1/app?client=b"), 0.0)
    assert status(full) == 503 and ("Retry-After", "1") in full.headers  # type: ignore[union-attr]
    core2, _ = make_core()
    core2.drain(0.0)
    assert status(core2.handshake(request(), 0.0)) == 503


def test_codec_negotiation() -> None:
    core, _ = make_core()
    plain = core.handshake(request(), 0.0)
    assert isinstance(plain, Accept) and plain.codec is JSON and plain.subprotocol is None
    binary = core.handshake(request(protocols="x, mc.v1.msgpack, mc.v1.json"), 0.0)
    assert isinstance(binary, Accept) and binary.codec is MSGPACK and binary.subprotocol == "mc.v1.msgpack"


def test_chat_full_is_409_but_the_same_device_may_replace() -> None:
    core, _ = make_core(chat_max_members=1)
    connect(core, "/v1/chat/room?client=a")
    assert status(core.handshake(request("/v1/chat/room?client=b"), 0.0)) == 409
    assert isinstance(core.handshake(request("/v1/chat/room?client=a"), 0.0), Accept)


def test_clustered_chat_locates_then_accepts_redirects_or_refuses() -> None:
    core, _ = make_core(masters=("http://m",))
    locate = core.handshake(request("/v1/chat/room?client=a&x=1"), 0.0)
    assert isinstance(locate, Locate) and locate.session == "room" and locate.create
    assert isinstance(core.located(locate, Owned(), 0.0), Accept)
    moved = core.located(locate, "ws://other:1", 0.0)
    assert status(moved) == 307
    assert ("Location", "ws://other:1/v1/chat/room?client=a&x=1") in moved.headers  # type: ignore[union-attr]
    assert status(core.located(locate, LocateFailed(True, "room"), 0.0)) == 404
    assert status(core.located(locate, LocateFailed(False, "master unreachable"), 0.0)) == 503
    join = core.handshake(request("/v1/chat/room?client=a&mode=join"), 0.0)
    assert isinstance(join, Locate) and not join.create


# ---------------------------------------------------------------- welcome


def test_welcome_per_endpoint() -> None:
    core, sink = make_core()
    app = connect(core, "/v1/app?client=alice&device=phone&tags=a,b")
    assert sink.got(app) == [{"type": "welcome", "worker": "w1", "heartbeat": 10.0,
                              "client": "alice", "device": "phone"}]
    assert app.tags == ("a", "b") and app.state is OPEN
    consumer = connect(core, "/v1/consumer?name=billing")
    assert sink.got(consumer) == [{"type": "welcome", "worker": "w1", "heartbeat": 10.0, "name": "billing"}]
    bob = connect(core, "/v1/chat/room?client=bob")
    alice = connect(core, "/v1/chat/room?client=alice")
    assert sink.got(alice)[0]["members"] == ["bob", "alice"]
    assert sink.got(bob) == [{"type": "welcome", "worker": "w1", "heartbeat": 10.0, "session": "room",
                              "client": "bob", "members": ["bob"]}, {"type": "joined", "client": "alice"}]


def test_replaced_app_and_chat_member_get_4009() -> None:
    core, sink = make_core()
    old = connect(core, "/v1/app?client=a&device=d")
    new = connect(core, "/v1/app?client=a&device=d")
    assert sink.closes[old][0] == CloseCode.REPLACED and old.state is CLOSING
    assert new.state is OPEN and core.hub.app("a", "d") is new
    m1 = connect(core, "/v1/chat/r?client=a")
    connect(core, "/v1/chat/r?client=a")
    assert sink.closes[m1][0] == CloseCode.REPLACED


# ----------------------------------------------------------------- frames


def test_publish_reaches_subscribers_with_one_message_frame_and_acks_the_count() -> None:
    core, sink = make_core()
    consumer = connect(core, "/v1/consumer?name=c")
    app = connect(core, "/v1/app?client=alice&device=phone")
    send(core, consumer, {"type": "subscribe", "topic": "orders.>", "id": "s"})
    assert sink.got(consumer)[-1] == {"type": "ack", "id": "s"}
    send(core, app, {"type": "publish", "topic": "orders.eu", "data": {"n": 1}, "key": "k",
                     "id": "p", "trace": "t1"})
    assert sink.got(consumer) == [{"type": "message", "topic": "orders.eu", "data": {"n": 1},
                                   "from": {"client": "alice", "device": "phone"}, "worker": "w1",
                                   "seq": 1, "ts": 1234, "key": "k", "trace": "t1"}]
    assert sink.got(app)[-1] == {"type": "ack", "id": "p", "delivered": 1}
    send(core, app, {"type": "publish", "topic": "other", "data": 1, "id": "q"})
    assert sink.got(app)[-1] == {"type": "ack", "id": "q", "delivered": 0}
    assert core.seq == 1  # a publish nobody receives uses no seq
    assert core.stats.messages_in == 3 and core.stats.messages_out == 1


def test_unsubscribe_pause_resume() -> None:
    core, sink = make_core()
    consumer = connect(core, "/v1/consumer?name=c")
    app = connect(core)
    for obj in ({"type": "subscribe", "topic": "t", "id": "1"}, {"type": "pause", "id": "2"}):
        send(core, consumer, obj)
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "p"})
    assert sink.got(app)[-1]["delivered"] == 0
    send(core, consumer, {"type": "resume", "id": "3"})
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "p"})
    assert sink.got(app)[-1]["delivered"] == 1
    send(core, consumer, {"type": "unsubscribe", "topic": "t", "id": "4"})
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "p"})
    assert sink.got(app)[-1]["delivered"] == 0
    acks = [f["id"] for f in sink.got(consumer) if f["type"] == "ack"]
    assert acks == ["1", "2", "3", "4"]


def test_subscription_limit_is_too_large_with_the_id() -> None:
    core, sink = make_core(max_subscriptions=2)
    consumer = connect(core, "/v1/consumer?name=c")
    for i in range(3):
        send(core, consumer, {"type": "subscribe", "topic": f"t{i}", "id": str(i)})
    assert sink.got(consumer)[-1] == {"type": "error", "code": "too_large", "id": "2",
                                      "reason": "a connection may hold at most 2 subscriptions"}


def test_ping_frame_and_websocket_ping() -> None:
    core, sink = make_core()
    app = connect(core)
    sink.got(app)
    send(core, app, {"type": "ping", "id": "x"})
    core.received(app, encode_masked_frame(OP_PING, b"hi"), 0.0)
    assert sink.got(app) == [{"type": "pong", "id": "x"}, "PONG"]


def test_chat_send_reaches_the_others_with_seq() -> None:
    core, sink = make_core()
    a = connect(core, "/v1/chat/r?client=a")
    b = connect(core, "/v1/chat/r?client=b")
    sink.got(a), sink.got(b)
    send(core, a, {"type": "send", "data": "hi", "id": "1", "trace": "tr"})
    send(core, a, {"type": "send", "data": "again"})
    assert sink.got(b) == [{"type": "chat", "from": "a", "data": "hi", "seq": 1, "ts": 1234, "trace": "tr"},
                           {"type": "chat", "from": "a", "data": "again", "seq": 2, "ts": 1234,
                            "trace": core._trace_prefix + "1"}]  # none from the client: the worker's
    assert sink.got(a) == [{"type": "ack", "id": "1", "seq": 1}]


def test_leaving_member_is_announced_and_the_room_lingers() -> None:
    core, sink = make_core(chat_linger=5.0)
    a = connect(core, "/v1/chat/r?client=a")
    b = connect(core, "/v1/chat/r?client=b")
    sink.got(a)
    core.closed(b, 1.0)
    assert sink.got(a) == [{"type": "left", "client": "b"}]
    core.closed(a, 2.0)
    core.tick(6.0)
    assert "r" in core.rooms
    core.tick(7.5)
    assert "r" not in core.rooms
    assert Release("r") in sink.control


def test_unknown_type_is_bad_request_and_wrong_endpoint_or_garbage_closes_4000() -> None:
    core, sink = make_core()
    app = connect(core)
    send(core, app, {"type": "nope", "id": "i"})
    assert sink.got(app)[-1] == {"type": "error", "code": "bad_request",
                                 "reason": "unknown frame type 'nope'", "id": "i"}
    assert app.state is OPEN
    send(core, app, {"type": "subscribe", "topic": "t"})
    assert sink.closes[app][0] == CloseCode.VIOLATION and app.state is CLOSING
    other = connect(core, "/v1/app?client=b")
    core.received(other, encode_masked_frame(OP_TEXT, b"{not json"), 0.0)
    assert sink.closes[other][0] == CloseCode.VIOLATION


def test_data_the_recipient_codec_cannot_carry_is_an_error_with_the_request_id() -> None:
    core, sink = make_core()
    consumer = connect(core, "/v1/consumer?name=c")  # JSON
    send(core, consumer, {"type": "subscribe", "topic": "t"})
    app = connect(core, protocols="mc.v1.msgpack")
    sink.got(app)
    core.received(app, encode_masked_frame(OP_BINARY, msgpack.packb(
        {"type": "publish", "topic": "t", "data": {b"k": 1}, "id": "p1"}, use_bin_type=True)), 0.0)
    reply = sink.got(app)[-1]
    assert reply["type"] == "error" and reply["code"] == "bad_request" and reply["id"] == "p1"
    assert app.state is OPEN


def test_chat_data_the_others_codec_cannot_carry_is_an_error_with_the_send_id() -> None:
    core, sink = make_core()
    connect(core, "/v1/chat/r?client=a")  # JSON
    b = connect(core, "/v1/chat/r?client=b", protocols="mc.v1.msgpack")
    sink.got(b)
    core.received(b, encode_masked_frame(OP_BINARY, msgpack.packb(
        {"type": "send", "data": {b"k": 1}, "id": "s1"}, use_bin_type=True)), 0.0)
    reply = sink.got(b)[-1]
    assert reply["type"] == "error" and reply["code"] == "bad_request" and reply["id"] == "s1"
    assert b.state is OPEN


@pytest.mark.parametrize(("frame", "reason", "rid"), [
    ({"type": "send", "id": "s1"}, "data is required", "s1"),
    ({"type": "send", "data": 1, "id": "s2", "trace": ""},
     "trace must be a string of 1 to 128 characters", "s2"),
    ({"type": "send", "data": 1, "id": 7}, "id must be a string of 1 to 64 characters", None),
])
def test_a_bad_chat_send_is_bad_request_and_relays_nothing(frame: dict, reason: str, rid: str | None) -> None:
    core, sink = make_core()
    a = connect(core, "/v1/chat/r?client=a")
    b = connect(core, "/v1/chat/r?client=b")
    sink.got(a), sink.got(b)
    send(core, a, frame)
    assert sink.got(a) == [{"type": "error", "code": "bad_request", "reason": reason, "id": rid}
                           if rid is not None else {"type": "error", "code": "bad_request", "reason": reason}]
    assert sink.got(b) == [] and a.state is OPEN


def test_chat_others_follow_joins_and_leaves() -> None:
    """A sender's cached list of the others is redone when anyone joins or leaves."""
    core, sink = make_core()
    a = connect(core, "/v1/chat/r?client=a")
    b = connect(core, "/v1/chat/r?client=b")
    send(core, a, {"type": "send", "data": 1})
    c = connect(core, "/v1/chat/r?client=c")
    sink.got(a), sink.got(b), sink.got(c)
    send(core, a, {"type": "send", "data": 2})
    assert [f["data"] for f in sink.got(c)] == [2] and [f["data"] for f in sink.got(b)] == [2]
    core.closed(b, 1.0)
    sink.got(a), sink.got(c)
    send(core, a, {"type": "send", "data": 3})
    assert [f["data"] for f in sink.got(c)] == [3] and sink.got(b) == []


@pytest.mark.parametrize(("data", "code"), [
    (encode_masked_frame(OP_TEXT, b"x" * 70_000), 1009),
    (bytes([0x81 | 0x40, 0x80]) + b"\0\0\0\0", 1002),  # a reserved bit
    (encode_masked_frame(OP_TEXT, b"\xff"), 1007),
    (encode_masked_frame(OP_TEXT, "é".encode()[:1]), 1007),  # an unfinished UTF-8 character
])
def test_rfc6455_violations_close_and_stop_reading(data: bytes, code: int) -> None:
    core, sink = make_core()
    app = connect(core)
    core.received(app, data, 0.0)
    assert sink.closes[app][0] == code
    assert app.state is CLOSED and app in sink.dropped


def _fragment(op: int, payload: bytes, fin: bool) -> bytes:
    mask = b"\0\0\0\0"
    return bytes([(0x80 if fin else 0) | op, 0x80 | len(payload)]) + mask + payload


def test_too_many_fragments_close_1009() -> None:
    core, sink = make_core(max_fragments=8)
    app = connect(core)
    core.received(app, _fragment(OP_TEXT, b"", False) + _fragment(OP_CONT, b"", False) * 8, 0.0)
    assert sink.closes[app] == (1009, "message in more than 8 fragments")
    ok = connect(core, "/v1/app?client=b")
    msg = orjson.dumps({"type": "ping", "id": "f"})
    core.received(ok, _fragment(OP_TEXT, msg[:5], False) + _fragment(OP_CONT, msg[5:], True), 0.0)
    assert sink.got(ok)[-1] == {"type": "pong", "id": "f"}


def test_client_close_is_echoed_and_the_connection_is_done() -> None:
    core, sink = make_core()
    app = connect(core)
    core.received(app, encode_masked_frame(OP_CLOSE, (4001).to_bytes(2, "big")), 0.0)
    assert sink.closes[app][0] == 4001 and app.state is CLOSED and app in sink.dropped
    other = connect(core, "/v1/app?client=b")
    core.received(other, encode_masked_frame(OP_CLOSE, (1003).to_bytes(2, "big")), 0.0)
    assert sink.closes[other][0] == 1000  # codes a server must not echo become 1000


def test_our_close_waits_for_the_reply_then_times_out() -> None:
    core, sink = make_core(close_timeout=2.0)
    app = connect(core)
    core.close(app, CloseCode.NORMAL, "bye", 0.0)
    assert app.state is CLOSING and app not in sink.dropped
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "late"})
    assert core.stats.messages_in == 0  # a closing connection's frames are ignored
    core.tick(1.9)
    assert app.state is CLOSING
    core.tick(2.0)
    assert app.state is CLOSED and app in sink.dropped
    replied = connect(core, "/v1/app?client=b")
    core.close(replied, CloseCode.NORMAL, "bye", 3.0)
    core.received(replied, encode_masked_frame(OP_CLOSE, (1000).to_bytes(2, "big")), 3.1)
    assert replied.state is CLOSED and replied in sink.dropped


def test_pings_every_heartbeat_and_idle_connections_close_4008() -> None:
    core, sink = make_core(heartbeat=4.0)
    quiet = connect(core)
    busy = connect(core, "/v1/app?client=b")
    sink.got(quiet), sink.got(busy)
    t = 0.0
    while t < 12.0:
        t += 1.0
        send(core, busy, {"type": "pong"}, t)
        core.tick(t)
    assert sink.got(busy).count("PING") == 3
    assert quiet not in sink.closes  # silent for exactly 3 heartbeats: still open
    core.tick(13.0)
    assert sink.closes[quiet][0] == CloseCode.IDLE and busy not in sink.closes
    assert core.stats.idle_closes == 1


def test_overflow_closes_4029_once_and_is_counted() -> None:
    core, sink = make_core()
    consumer = connect(core, "/v1/consumer?name=c")
    core.overflowed(consumer, 0.0)
    core.overflowed(consumer, 0.0)
    assert sink.closes[consumer][0] == CloseCode.SLOW
    assert core.stats.overflows == 1


def test_closing_connections_are_not_routed_to() -> None:
    core, sink = make_core()
    consumer = connect(core, "/v1/consumer?name=c")
    send(core, consumer, {"type": "subscribe", "topic": "t"})
    app = connect(core)
    core.close(consumer, CloseCode.NORMAL, "", 0.0)
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "p"})
    assert sink.got(app)[-1]["delivered"] == 0


LEAVE_OPEN = {
    "close": lambda core, c: core.close(c, CloseCode.NORMAL, "", 0.0),
    "overflow": lambda core, c: core.overflowed(c, 0.0),
    "fail": lambda core, c: core.received(c, encode_masked_frame(OP_TEXT, b"\xff"), 0.0),
    "client close": lambda core, c: core.received(c, encode_masked_frame(OP_CLOSE, b"\x03\xe8"), 0.0),
    "lost": lambda core, c: core.closed(c, 0.0),
}


@pytest.mark.parametrize("how", sorted(LEAVE_OPEN))
def test_a_cached_route_forgets_a_connection_that_leaves_open(how: str) -> None:
    """The route of a topic is cached at the first publish; every way out of OPEN invalidates it."""
    core, sink = make_core()
    leaving = connect(core, "/v1/consumer?name=c")
    staying = connect(core, "/v1/consumer?name=d")
    for c in (leaving, staying):
        send(core, c, {"type": "subscribe", "topic": "t"})
        send(core, c, {"type": "subscribe", "topic": "u", "group": "g"})
    leaving.queued = -1  # the least busy member of g while it is open
    app = connect(core)
    for topic in ("t", "u"):
        send(core, app, {"type": "publish", "topic": topic, "data": 1, "id": "p"})
    assert [f["delivered"] for f in sink.got(app)[-2:]] == [2, 1]
    assert sink.got(leaving)[-1]["topic"] == "u"
    LEAVE_OPEN[how](core, leaving)
    assert leaving.state is not OPEN
    for topic in ("t", "u"):
        send(core, app, {"type": "publish", "topic": topic, "data": 2, "id": "q"})
    assert [f["delivered"] for f in sink.got(app)[-2:]] == [1, 1]
    assert [f["topic"] for f in sink.got(staying) if f["type"] == "message"] == ["t", "t", "u"]


# ------------------------------------------------------------ notify, control


def test_standalone_notify_is_local_and_acked_at_once() -> None:
    core, sink = make_core()
    app = connect(core, "/v1/app?client=alice&tags=vip")
    sink.got(app)
    consumer = connect(core, "/v1/consumer?name=billing")
    send(core, consumer, {"type": "notify", "to": {"tags": ["vip"]}, "data": "hi", "id": "n1"})
    assert sink.got(app) == [{"type": "notify", "data": "hi", "from": "billing", "id": "n1",
                              "trace": core._trace_prefix + "1"}]
    assert sink.got(consumer)[-1] == {"type": "ack", "id": "n1", "delivered": 1}
    send(core, consumer, {"type": "notify", "data": "all"})
    assert sink.got(app)[0]["id"] == "w1-abc-1"  # a made-up id, unique per worker run


def test_clustered_notify_waits_for_the_masters_count() -> None:
    core, sink = make_core(masters=("http://m",))
    core.registered(Registered(5.0, 0.5), 0.0)
    app = connect(core, "/v1/app?client=alice")
    consumer = connect(core, "/v1/consumer?name=billing")
    sink.got(consumer)
    send(core, consumer, {"type": "notify", "to": {"client": "alice"}, "data": "x", "id": "n1"})
    forward = [m for m in sink.control if isinstance(m, ForwardNotify)][-1]
    assert forward.to == Target(client="alice")
    assert forward.frame == Notification("x", "billing", "n1", core._trace_prefix + "1")
    assert sink.got(consumer) == []
    core.control(Notified(forward.id, 2), 0.1)
    assert sink.got(consumer) == [{"type": "ack", "id": "n1", "delivered": 3}]
    # no answer: the ack goes out with the local count when the wait runs out, or the link drops
    send(core, consumer, {"type": "notify", "to": {"client": "alice"}, "data": "x", "id": "n2"})
    core.tick(5.9)
    assert [f for f in sink.got(consumer) if f != "PING"] == []
    core.tick(6.0)
    assert [f for f in sink.got(consumer) if f != "PING"] == [{"type": "ack", "id": "n2", "delivered": 1}]
    send(core, consumer, {"type": "notify", "to": {"client": "alice"}, "data": "x", "id": "n3"}, 6.5)
    core.link_down()
    assert sink.got(consumer) == [{"type": "ack", "id": "n3", "delivered": 1}]
    assert app.state is OPEN


def test_master_commands_deliver_kick_drain() -> None:
    core, sink = make_core(masters=("http://m",))
    app = connect(core, "/v1/app?client=alice&device=d")
    sink.got(app)
    core.control(Deliver(7, Target(client="alice"), Notification("hey", "api", "x1")), 0.0)
    assert sink.got(app) == [{"type": "notify", "data": "hey", "from": "api", "id": "x1"}]
    assert Delivered(7, 1) in sink.control
    core.control(Kick("alice", "d"), 0.0)
    assert sink.closes[app][0] == CloseCode.REPLACED and core.hub.app("alice", "d") is None
    other = connect(core, "/v1/app?client=bob")
    core.control(Drain(), 0.0)
    core.tick(0.0)
    assert sink.closes[other][0] == CloseCode.DRAINING and core.draining


def test_registration_conflicts_drop_sessions_and_presence_follows() -> None:
    core, sink = make_core(masters=("http://m",))
    a = connect(core, "/v1/app?client=a")
    member = connect(core, "/v1/chat/room?client=m")
    reg = core.registration("ws://w1:1")
    assert reg == Register("w1", "ws://w1:1", 19_990, {"room": 1}, (("a", "default"),), False)
    b = connect(core, "/v1/app?client=b")  # while the registration is in flight
    core.closed(a, 0.1)
    core.registered(Registered(5.0, 0.5, ("room",)), 0.2)
    assert sink.closes[member][0] == CloseCode.DRAINING and "room" not in core.rooms
    assert sink.control[-1] == Presence((("b", "default"),), (("a", "default"),), {})
    [beat] = core.report(1.0, 0.0, 0)
    assert isinstance(beat, Heartbeat)
    core.closed(b, 1.5)
    assert sink.control[-1] == Presence((), (("b", "default"),), {})


def test_a_large_registration_is_chunked_and_the_rest_follows_as_presence() -> None:
    """A worker with more apps than PRESENCE_CHUNK (a master restart at 20k apps)
    registers with the first chunk; the rest follow in chunks once it is taken."""
    core, sink = make_core(masters=("http://m",))
    apps = [connect(core, f"/v1/app?client=c{i:05}") for i in range(2 * PRESENCE_CHUNK + 5)]
    reg = core.registration("ws://w1:1")
    assert len(reg.presence) == PRESENCE_CHUNK
    sink.control.clear()
    core.closed(apps[0], 0.1)  # announced in the registration, gone before it was taken
    core.registered(Registered(5.0, 0.5), 0.2)
    chunks = [m for m in sink.control if isinstance(m, Presence)]
    assert [len(m.added) for m in chunks] == [PRESENCE_CHUNK, 5]
    assert chunks[0].removed == (("c00000", "default"),) and chunks[1].removed == ()
    announced = set(reg.presence) | {pair for m in chunks for pair in m.added}
    assert announced == {(f"c{i:05}", "default") for i in range(2 * PRESENCE_CHUNK + 5)}


def test_control_batches_split_below_the_frame_limit() -> None:
    """A burst of large messages becomes several frames, each at most SPLIT_FRAME."""
    big = [Presence(((f"{'x' * 100}{i}", "d" * 100),) * 1) for i in range(8000)]
    frames = encoded(big, msgpack.packb)
    assert len(frames) > 1 and all(len(f) <= SPLIT_FRAME for f in frames)
    decoded = [m for f in frames for m in (lambda v: v if isinstance(v, list) else [v])(msgpack.unpackb(f))]
    assert decoded == [m.to_wire() for m in big]
    assert encoded(big[0], msgpack.packb) == [msgpack.packb(big[0].to_wire())]


def test_heartbeat_reports_counts_rates_and_counters() -> None:
    core, _ = make_core()
    consumer = connect(core, "/v1/consumer?name=c")
    send(core, consumer, {"type": "subscribe", "topic": "t"})
    connect(core, "/v1/chat/room?client=m")
    app = connect(core)
    core.report(0.0, 0.0, 0)
    for _ in range(10):
        send(core, app, {"type": "publish", "topic": "t", "data": 1})
    core.overflowed(consumer, 1.0)
    core.handshake(request("/nowhere"), 1.0)
    [beat] = core.report(2.0, 12.5, 4096)
    assert isinstance(beat, Heartbeat)
    m = beat.metrics
    assert (m.connections, m.sessions, m.subscriptions) == (3, 1, 1)
    assert (m.msgs_in_rate, m.msgs_out_rate) == (5.0, 5.0)
    assert (m.overflows, m.rejected, m.cpu_percent, m.rss_bytes) == (1, 1, 12.5, 4096)


# ------------------------------------------------------------ state machine


class ConnectionStates(RuleBasedStateMachine):
    """Open, send, receive, overflow, close, idle and loss, in any order, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.core, self.sink = make_core(heartbeat=2.0, close_timeout=1.0)
        self.now = 0.0
        self.model: dict[Peer, str] = {}
        self.seen: dict[Peer, float] = {}
        self.close_at: dict[Peer, float] = {}
        self.n = 0

    def _conns(self, state: str) -> list[Peer]:
        return [c for c, s in self.model.items() if s == state]

    @rule()
    def open(self) -> None:
        self.n += 1
        conn = connect(self.core, f"/v1/app?client=c{self.n}", self.now)
        self.model[conn] = "open"
        self.seen[conn] = self.now

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def send_ping(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.model, key=lambda c: c.client)))
        if self.model[conn] in ("closed", "gone"):
            return  # the shell stops reading a closed connection
        before = len(self.sink.frames.get(conn, []))
        send(self.core, conn, {"type": "ping"}, self.now)
        if self.model[conn] == "open":
            assert self.sink.frames[conn][before:] == [{"type": "pong"}]
        self.seen[conn] = self.now

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def client_closes(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.model, key=lambda c: c.client)))
        if self.model[conn] in ("closed", "gone"):
            return  # the shell stops reading a closed connection
        self.core.received(conn, encode_masked_frame(OP_CLOSE, b""), self.now)
        self.model[conn] = "closed"

    @precondition(lambda self: self.model)
    @rule(data=st.data(), code=st.sampled_from([1000, 4029, 4503]))
    def server_closes(self, data: st.DataObject, code: int) -> None:
        conn = data.draw(st.sampled_from(sorted(self.model, key=lambda c: c.client)))
        if code == 4029:
            self.core.overflowed(conn, self.now)
        else:
            self.core.close(conn, code, "", self.now)
        if self.model[conn] == "open":
            self.model[conn] = "closing"
            self.close_at[conn] = self.now + 1.0

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def socket_lost(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.model, key=lambda c: c.client)))
        self.core.closed(conn, self.now)
        self.model[conn] = "gone"

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.core.tick(self.now)
        for conn, state in list(self.model.items()):
            if state == "closing" and self.close_at[conn] <= self.now:
                self.model[conn] = "closed"
        # idle: silent for 3 heartbeats (6 s); the scan runs at most every 0.5 s
        for conn in self._conns("open"):
            if self.seen[conn] < self.now - 6.5:
                assert self.sink.closes[conn][0] == CloseCode.IDLE
                self.model[conn] = "closing"
                self.close_at[conn] = self.core.config.close_timeout + self.now
        for conn in self._conns("open"):
            if conn.state is CLOSING:  # closed idle inside the scan-period slack
                self.model[conn] = "closing"
                self.close_at[conn] = conn.close_at

    @invariant()
    def states_match(self) -> None:
        expected = {"open": OPEN, "closing": CLOSING, "closed": CLOSED, "gone": CLOSED}
        for conn, state in self.model.items():
            assert conn.state is expected[state], (conn, state)
            assert (conn in self.core.connections) == (state != "gone")
            if state == "closed":
                assert conn in self.sink.dropped
        assert self.core.hub.app_count == len([c for c, s in self.model.items() if s != "gone"
                                                and self.core.hub.app(c.client, c.device) is c])


TestConnectionStates = ConnectionStates.TestCase
TestConnectionStates.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_peer_default_state_is_open_for_pure_tests() -> None:
    assert Peer(APP).state is OPEN and Peer(CHAT).kind == CHAT and Peer(CONSUMER).name == ""


# ------------------------------------------------------ presence before welcome


def linked_core(**cfg: Any) -> tuple[WorkerCore, FakeSink]:
    core, sink = make_core(masters=("http://m",), **cfg)
    core.registration("ws://w1:1")
    core.registered(Registered(5.0, 0.5), 0.0)
    return core, sink


def test_welcome_waits_for_the_master_to_record_the_app() -> None:
    core, sink = linked_core()
    app = connect(core, "/v1/app?client=alice&device=d")
    [announce] = [m for m in sink.control if isinstance(m, Presence)]
    assert announce.added == (("alice", "d"),) and announce.id is not None
    assert sink.got(app) == []  # no welcome yet
    core.control(Recorded(announce.id), 0.2)
    assert sink.got(app) == [{"type": "welcome", "worker": "w1", "heartbeat": 10.0,
                              "client": "alice", "device": "d"}]


def test_welcome_goes_out_local_after_the_wait_or_when_the_link_is_down() -> None:
    core, sink = linked_core(presence_wait=1.0)
    slow = connect(core, "/v1/app?client=a", now=0.0)
    core.tick(0.99)
    assert sink.got(slow) == []
    core.tick(1.0)
    assert sink.got(slow)[0]["presence"] == "local"
    late = [m for m in sink.control if isinstance(m, Presence)][-1]
    core.control(Recorded(late.id), 1.1)  # too late: no second welcome
    assert sink.got(slow) == []
    waiting = connect(core, "/v1/app?client=b", now=2.0)
    core.link_down()
    assert sink.got(waiting)[0]["presence"] == "local"
    unlinked = connect(core, "/v1/app?client=c", now=3.0)
    assert sink.got(unlinked)[0]["presence"] == "local"
    standalone, ssink = make_core()
    assert "presence" not in ssink.got(connect(standalone))[0]


def test_a_lost_presence_change_asks_for_a_full_registration() -> None:
    core, sink = linked_core()
    sink.linked = False  # the link's queue is full
    app = connect(core)
    assert core.resync_needed and sink.got(app)[0]["presence"] == "local"


# ----------------------------------------------------------- drain, rebalance


def test_drain_hands_sessions_over_then_closes_members_first_at_the_rate() -> None:
    core, sink = linked_core(drain_rate=100.0)
    apps = [connect(core, f"/v1/app?client=a{i}") for i in range(150)]
    members = [connect(core, f"/v1/chat/s{i % 3}?client=m{i}") for i in range(6)]
    send(core, members[0], {"type": "send", "data": "x"})
    core.drain(1.0)
    [handoff] = [m for m in sink.control if isinstance(m, HandOff)]
    assert handoff.sessions == {"s0": 1, "s1": 0, "s2": 0}
    assert status(core.handshake(request("/v1/app?client=z"), 1.0)) == 503
    core.tick(1.0)
    assert not any(m in sink.closes for m in members)  # they wait for the hand-off
    closed_apps = sum(a in sink.closes for a in apps)
    assert closed_apps <= 2
    core.control(HandedOff(), 1.01)
    t = 1.01
    while not all(m in sink.closes for m in members):
        t += 0.02
        core.tick(t)
    assert t < 1.1 and all(sink.closes[m] == (CloseCode.DRAINING, "session moved") for m in members)
    assert sum(a in sink.closes for a in apps) <= closed_apps + 1  # members went first
    while t < 2.2:
        t += 0.02
        core.tick(t)
    closed_apps = sum(a in sink.closes for a in apps)
    assert 100 <= closed_apps <= 130  # ~100 per second, not all at once
    for conn in [*apps, *members]:
        if conn in sink.closes:
            core.closed(conn, t)
    while core.connections:
        t += 0.1
        core.tick(t)
        for conn in list(core.connections):
            if conn in sink.closes:
                core.closed(conn, t)
    assert core.drained and Drained() in sink.control
    core.undrain()
    assert isinstance(core.handshake(request(), t), Accept) and not core.drained


def test_drain_without_a_master_closes_members_at_once_and_undrain_stops_it() -> None:
    core, sink = make_core(drain_rate=10.0)
    apps = [connect(core, f"/v1/app?client=a{i}") for i in range(50)]
    core.drain(0.0)
    core.tick(0.0)
    core.undrain()
    core.tick(5.0)
    assert 0 < sum(a in sink.closes for a in apps) < 50


def test_shed_closes_the_longest_idle_apps_and_never_chat() -> None:
    core, sink = make_core()
    apps = [connect(core, f"/v1/app?client=a{i}", now=float(i)) for i in range(5)]
    member = connect(core, "/v1/chat/r?client=m", now=0.0)
    core.shed(2, 10.0)
    core.tick(10.0)
    assert {a for a in apps if a in sink.closes} == {apps[0], apps[1]}
    assert sink.closes[apps[0]] == (CloseCode.DRAINING, "rebalancing") and member not in sink.closes


def test_adopted_and_handed_over_sessions_keep_their_seq() -> None:
    core, sink = linked_core()
    core.control(Adopt("room", 41), 0.0)
    a = connect(core, "/v1/chat/room?client=a")
    send(core, a, {"type": "send", "data": "x", "id": "1"})
    assert sink.got(a)[-1] == {"type": "ack", "id": "1", "seq": 42}
    locate = core.handshake(request("/v1/chat/other?client=b"), 0.0)
    assert isinstance(locate, Locate)
    b = core.open(core.located(locate, Owned(7), 0.0), 0.0, Peer)  # type: ignore[arg-type]
    send(core, b, {"type": "send", "data": "x", "id": "2"})
    assert sink.got(b)[-1] == {"type": "ack", "id": "2", "seq": 8}
    core.tick(100.0)  # an adopted session nobody joins lingers, then is released


# ------------------------------------------------------------- security


SECRET = "test-secret-long-enough-for-hs256-0123456789"


def token(sub: str = "alice", ttl: float = 60, **claims: Any) -> str:
    import time as _time

    import jwt
    now = _time.time()
    return jwt.encode({"sub": sub, "exp": now + ttl, "iat": now, **claims}, SECRET, algorithm="HS256")


def auth_core(**cfg: Any) -> tuple[WorkerCore, FakeSink, list[int]]:
    import time as _time

    from mc.tokens import TokenVerifier
    sink = FakeSink()
    wall = [int(_time.time() * 1000)]
    core = WorkerCore(WorkerConfig(heartbeat=10.0, **cfg), sink, worker_id="w1", instance=1,
                      wall_ms=lambda: wall[0], tokens=TokenVerifier(SECRET, ("HS256",)))
    return core, sink, wall


def test_app_tokens_at_the_handshake() -> None:
    core, _sink, _ = auth_core()
    assert status(core.handshake(request("/v1/app?client=alice"), 0.0)) == 401  # none
    assert status(core.handshake(request(f"/v1/app?token={token()}x"), 0.0)) == 401  # bad signature
    assert status(core.handshake(request(f"/v1/app?token={token(ttl=-60)}"), 0.0)) == 401  # expired
    assert status(core.handshake(request(f"/v1/app?client=bob&token={token()}"), 0.0)) == 401
    ok = core.handshake(request("/v1/app?tags=x", extra=f"Authorization: Bearer {token(tags=['vip'])}"), 0.0)
    assert isinstance(ok, Accept) and ok.client == "alice" and ok.tags == ("vip",)  # the claim wins
    plain = core.handshake(request(f"/v1/app?client=alice&tags=x&token={token()}"), 0.0)
    assert isinstance(plain, Accept) and plain.tags == ("x",)
    assert status(core.handshake(request(f"/v1/chat/secret?token={token(chat=['public.*'])}"), 0.0)) == 403
    assert isinstance(core.handshake(request(f"/v1/chat/public.a?token={token(chat=['public.*'])}"), 0.0),
                      Accept)
    body = core.handshake(request(f"/v1/app?token={token(ttl=-60)}"), 0.0).body  # type: ignore[union-attr]
    assert body == {"error": "unauthorized", "reason": "token expired"}


def test_publish_claim_limits_topics() -> None:
    core, sink, _ = auth_core()
    app = core.open(core.handshake(request(f"/v1/app?token={token(publish=['orders.>'])}"), 0.0),  # type: ignore[arg-type]
                    0.0, Peer)
    send(core, app, {"type": "publish", "topic": "orders.eu", "data": 1, "id": "ok"})
    send(core, app, {"type": "publish", "topic": "admin.x", "data": 1, "id": "no"})
    frames = sink.got(app)
    assert frames[-2] == {"type": "ack", "id": "ok", "delivered": 0}
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "forbidden" and frames[-1]["id"] == "no"


def test_expiry_closes_4001_unless_refreshed() -> None:
    core, sink, wall = auth_core()
    short = core.open(core.handshake(request(f"/v1/app?token={token(ttl=2)}"), 0.0), 0.0, Peer)  # type: ignore[arg-type]
    kept = core.open(core.handshake(request(f"/v1/app?client=bob&token={token('bob', ttl=2)}"), 0.0),  # type: ignore[arg-type]
                     0.0, Peer)
    send(core, kept, {"type": "refresh", "token": token("alice", ttl=60), "id": "r0"})  # another sub
    assert sink.got(kept)[-1]["code"] == "unauthorized"
    send(core, kept, {"type": "refresh", "token": "garbage", "id": "r1"})
    assert sink.got(kept)[-1] == {"type": "error", "code": "unauthorized", "id": "r1",
                                  "reason": "invalid token: DecodeError"}
    send(core, kept, {"type": "refresh", "token": token("bob", ttl=60), "id": "r2"})
    assert sink.got(kept)[-1] == {"type": "ack", "id": "r2"}
    wall[0] += 1500
    core.tick(1.5)
    assert short.state is OPEN
    wall[0] += 1000
    core.tick(2.5)
    assert sink.closes[short] == (CloseCode.TOKEN_EXPIRED, "token expired") and kept.state is OPEN
    assert core.stats.token_expiries == 1


def test_consumer_api_keys() -> None:
    core, _ = make_core(api_keys=("k1", "k2"))
    assert status(core.handshake(request("/v1/consumer?name=c"), 0.0)) == 401
    assert status(core.handshake(request("/v1/consumer?name=c&token=nope"), 0.0)) == 401
    assert isinstance(core.handshake(request("/v1/consumer?name=c", extra="Authorization: Bearer k2"), 0.0),
                      Accept)
    assert isinstance(core.handshake(request("/v1/app?client=a"), 0.0), Accept)  # apps use JWT, not keys


def test_rate_limits_answer_rate_limited_with_the_id() -> None:
    core, sink = make_core(publish_rate=2.0, notify_rate=1.0, handshake_rate=1.0)
    app = connect(core, now=0.0)
    for i in range(5):  # burst 2x: 4 pass at once
        send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": str(i)}, 0.0)
    frames = [f for f in sink.got(app) if f["type"] in ("ack", "error")]
    assert [f["type"] for f in frames] == ["ack"] * 4 + ["error"]
    assert frames[-1]["code"] == "rate_limited" and frames[-1]["id"] == "4"
    send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": "later"}, 0.5)  # refilled 1
    assert sink.got(app)[-1]["type"] == "ack"
    assert core.stats.rate_limited == 1
    for i in range(5):  # idle for long: the bucket is full again, but holds only the burst
        send(core, app, {"type": "publish", "topic": "t", "data": 1, "id": f"b{i}"}, 60.0)
    assert [f["type"] for f in sink.got(app)] == ["ack"] * 4 + ["error"]
    assert core.stats.rate_limited == 2
    core2, _ = make_core(handshake_rate=1.0)
    answers = [core2.handshake(request("/v1/app?client=x"), 0.0, "10.0.0.2") for _ in range(3)]
    assert [isinstance(a, Accept) for a in answers] == [True, True, False]
    assert status(answers[2]) == 429 and ("Retry-After", "1") in answers[2].headers  # type: ignore[union-attr]
    assert isinstance(core2.handshake(request("/v1/app?client=x"), 0.0, "10.0.0.3"), Accept)


def test_notify_rate_answers_rate_limited_with_the_id_and_delivers_nothing() -> None:
    core, sink = make_core(notify_rate=1.0)
    app = connect(core, "/v1/app?client=alice")
    sink.got(app)
    consumer = connect(core, "/v1/consumer?name=billing")
    sink.got(consumer)
    for i in range(3):  # burst 2x: 2 pass at once
        send(core, consumer, {"type": "notify", "to": {"client": "alice"}, "data": i, "id": f"n{i}"}, 0.0)
    assert sink.got(consumer) == [
        {"type": "ack", "id": "n0", "delivered": 1}, {"type": "ack", "id": "n1", "delivered": 1},
        {"type": "error", "code": "rate_limited", "reason": "at most 1 per second", "id": "n2"},
    ]
    assert [f["data"] for f in sink.got(app)] == [0, 1]
    send(core, consumer, {"type": "notify", "to": {"client": "alice"}, "data": 3, "id": "n3"}, 1.0)
    assert sink.got(consumer) == [{"type": "ack", "id": "n3", "delivered": 1}]
    assert core.stats.rate_limited == 1


def test_connections_gone_before_their_turn_cost_no_drain_budget() -> None:
    core, sink = make_core(drain_rate=10.0)
    apps = [connect(core, f"/v1/app?client=a{i}") for i in range(50)]
    core.drain(0.0)
    kept, gone = apps[:5], apps[5:]
    for conn in gone:  # their clients left on their own while queued
        core.closed(conn, 0.5)
    core.tick(1.0)  # one second's budget: 10, and only 5 are left to close
    assert all(sink.closes.get(c) == (CloseCode.DRAINING, "worker draining") for c in kept)
    assert not any(c in sink.closes for c in gone)


def test_made_up_traces_are_short_and_distinct() -> None:
    core, _ = make_core()
    other, _ = make_core()
    traces = {core._trace() for _ in range(1000)}
    assert len(traces) == 1000 and all(len(t) <= 9 for t in traces)
    assert WorkerCore(WorkerConfig(), FakeSink(), worker_id="w2", instance=0xABC,
                      wall_ms=lambda: 0)._trace_prefix != core._trace_prefix
    assert other._trace_prefix == core._trace_prefix  # same worker id and start: same prefix


def test_made_up_traces_count_in_base_36() -> None:
    """The table-driven counter agrees with plain base 36 across its digit boundaries."""
    core, _ = make_core()
    prefix = core._trace_prefix
    traces = [core._trace() for _ in range(3 * 36 * 36 + 5)]
    assert all(t.startswith(prefix) for t in traces)
    counts = [t[len(prefix):] for t in traces]
    assert [int(c, 36) for c in counts] == list(range(1, len(traces) + 1))
    assert not any(c.startswith("0") for c in counts)  # no padding
    assert traces[36 * 36 - 1] == prefix + "100"
