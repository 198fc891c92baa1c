"""Misbehaving clients against a real worker: close codes, error frames, bystanders.

Every test runs next to a bystander (an app publishing to a consumer on the
same worker) and checks it still works afterwards: one bad client must never
disturb another connection.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import msgpack
import orjson
import pytest

from mc.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, encode_masked_frame

from .cluster import wait_for
from .wsclient import (
    JSON,
    MSGPACK,
    PROTOCOLS,
    Client,
    connect,
    http_get,
    masked_fragment,
    raw_connect,
    unique,
)

pytestmark = pytest.mark.timeout(60)


class Bystander:
    def __init__(self, app: Client, consumer: Client, topic: str) -> None:
        self.app, self.consumer, self.topic = app, consumer, topic
        self.n = 0

    async def check(self) -> None:
        self.n += 1
        ack = await self.app.ack({"type": "publish", "topic": self.topic, "data": self.n,
                                  "id": f"b{self.n}"})
        assert ack["delivered"] == 1
        msg = await self.consumer.recv_type("message")
        assert msg["data"] == self.n


@asynccontextmanager
async def bystander(url: str):
    topic = unique("bystander")
    async with connect(url, "/v1/app", proto=MSGPACK, client=unique("by-app")) as app, \
            connect(url, "/v1/consumer", proto=JSON, name=unique("by-svc")) as consumer:
        await consumer.ack({"type": "subscribe", "topic": topic, "id": "s"})
        b = Bystander(app, consumer, topic)
        await b.check()
        yield b
        await b.check()


def endpoint(kind: str) -> tuple[str, dict]:
    if kind == "app":
        return "/v1/app", {"client": unique("bad")}
    if kind == "consumer":
        return "/v1/consumer", {"name": unique("bad")}
    return f"/v1/chat/{unique('room')}", {"client": unique("bad")}


KINDS = ("app", "consumer", "chat")

# ----------------------------------------------------------- 4000 violations

UNDECODABLE = {
    JSON: {
        "garbage": "{not json",
        "empty": "",
        "array": '[{"type": "ping"}]',
        "string": '"ping"',
        "number": "42",
        "trailing": '{"type": "ping"} {}',
    },
    MSGPACK: {
        "garbage": b"\xc1",
        "empty": b"",
        "array": msgpack.packb([{"type": "ping"}]),
        "string": msgpack.packb("ping"),
        "truncated": b"\x82\xa4type",
        "trailing": msgpack.packb({"type": "ping"}) + b"\x01",
        "ext": msgpack.packb(msgpack.ExtType(5, b"x")),
    },
}
UNDECODABLE_CASES = [(proto, name) for proto, cases in UNDECODABLE.items() for name in cases]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("proto", "case"), UNDECODABLE_CASES,
                         ids=[f"{p.split('.')[-1]}-{n}" for p, n in UNDECODABLE_CASES])
async def test_undecodable_frame_closes_4000(worker, kind, proto, case):
    path, query = endpoint(kind)
    async with bystander(worker.url) as b:
        async with connect(worker.url, path, proto=proto, **query) as c:
            await c.send_raw(UNDECODABLE[proto][case])
            await c.expect_close(4000)
        await b.check()


WRONG_ENDPOINT = [
    ("app", {"type": "subscribe", "topic": "a"}),
    ("app", {"type": "notify", "to": {}, "data": 1}),
    ("app", {"type": "send", "data": 1}),
    ("app", {"type": "pause"}),
    ("consumer", {"type": "publish", "topic": "a", "data": 1}),
    ("consumer", {"type": "send", "data": 1}),
    ("chat", {"type": "publish", "topic": "a", "data": 1}),
    ("chat", {"type": "subscribe", "topic": "a"}),
    ("chat", {"type": "notify", "to": {}, "data": 1}),
]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(("kind", "frame"), WRONG_ENDPOINT,
                         ids=[f"{k}-{f['type']}" for k, f in WRONG_ENDPOINT])
async def test_frame_of_another_endpoint_closes_4000(worker, proto, kind, frame):
    path, query = endpoint(kind)
    async with bystander(worker.url) as b:
        async with connect(worker.url, path, proto=proto, **query) as c:
            await c.send({**frame, "id": "wrong"})
            await c.expect_close(4000)
        await b.check()


# ------------------------------------------------- bad_request, stays open

BAD_REQUESTS = [
    ("app", {"type": "frobnicate"}),
    ("app", {"no_type": True}),
    ("app", {"type": 7}),
    ("app", {"type": "publish", "data": 1}),  # no topic
    ("app", {"type": "publish", "topic": "a..b", "data": 1}),
    ("app", {"type": "publish", "topic": ".a", "data": 1}),
    ("app", {"type": "publish", "topic": "a.*", "data": 1}),  # a pattern is not a topic
    ("app", {"type": "publish", "topic": "t" * 129, "data": 1}),
    ("app", {"type": "publish", "topic": 5, "data": 1}),
    ("app", {"type": "publish", "topic": "a"}),  # no data
    ("app", {"type": "publish", "topic": "a", "data": 1, "key": "bad key"}),
    ("app", {"type": "publish", "topic": "a", "data": 1, "trace": "t" * 129}),
    ("app", {"type": "publish", "topic": "a", "data": 1, "trace": 5}),
    ("consumer", {"type": "subscribe"}),
    ("consumer", {"type": "subscribe", "topic": "a.>.b"}),
    ("consumer", {"type": "subscribe", "topic": ""}),
    ("consumer", {"type": "subscribe", "topic": "a", "group": "bad group"}),
    ("consumer", {"type": "subscribe", "topic": "a", "key": "bad key"}),
    ("consumer", {"type": "unsubscribe"}),
    ("consumer", {"type": "notify", "to": {"tags": "x"}, "data": 1}),
    ("consumer", {"type": "notify", "to": {}}),  # no data
    ("consumer", {"type": "frobnicate"}),
    ("chat", {"type": "send"}),  # no data
    ("chat", {"type": "frobnicate"}),
]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(("kind", "frame"), BAD_REQUESTS,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_REQUESTS)])
async def test_bad_request_is_answered_and_connection_stays(worker, proto, kind, frame):
    path, query = endpoint(kind)
    async with bystander(worker.url) as b:
        async with connect(worker.url, path, proto=proto, **query) as c:
            err = await c.request({**frame, "id": "req-1"})
            assert err["type"] == "error"
            assert err["code"] == "bad_request"
            assert err["id"] == "req-1"
            assert isinstance(err["reason"], str) and err["reason"]
            # without an id the error comes all the same, without an id
            await c.send(frame)
            err2 = await c.recv_type("error")
            assert err2["code"] == "bad_request" and "id" not in err2
            # the connection still works
            await c.send({"type": "ping", "id": "after"})
            assert await c.recv_type("pong") == {"type": "pong", "id": "after"}
        await b.check()


# A msgpack map with a key that is not a string is a request mc can read (a
# map), just not accept: error bad_request with its id, never a 4000 close.
INT_KEYS = {
    "app": {"type": "publish", "topic": "t", "data": {1: "one"}},
    "consumer": {"type": "notify", "to": {}, "data": {2: "two"}},
    "chat": {"type": "send", "data": [{3: "three"}]},
}


@pytest.mark.parametrize("kind", KINDS)
async def test_msgpack_integer_keys_are_bad_request(worker, kind):
    path, query = endpoint(kind)
    async with bystander(worker.url) as b:
        async with connect(worker.url, path, proto=MSGPACK, **query) as c:
            err = await c.request({**INT_KEYS[kind], "id": "ik"})
            assert (err["type"], err["code"], err["id"]) == ("error", "bad_request", "ik"), err
            # a non-string key at the top level too, and without an id
            await c.send({"type": "ping", 7: "x"})
            err2 = await c.recv_type("error")
            assert err2["code"] == "bad_request" and "id" not in err2
            assert await c.fence() == []  # open, and nothing else was sent
        await b.check()


async def test_integer_keys_publish_reaches_nobody(worker):
    topic = unique("ik")
    async with connect(worker.url, "/v1/consumer", proto=MSGPACK, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=MSGPACK, client=unique("a")) as a:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
        err = await a.request({"type": "publish", "topic": topic, "data": {1: 2}, "id": "p"})
        assert (err["type"], err["code"], err["id"]) == ("error", "bad_request", "p")
        assert await c.fence() == []
        assert (await a.ack({"type": "publish", "topic": topic, "data": {"1": 2}, "id": "q"}))[
            "delivered"] == 1
        assert (await c.recv_type("message"))["data"] == {"1": 2}


async def test_data_a_recipient_cannot_carry_is_refused_with_the_id(worker):
    """Bytes map keys are msgpack data a JSON consumer cannot receive: the
    publisher gets error bad_request with its id; the consumer gets nothing."""
    topic = unique("bk")
    async with bystander(worker.url) as b:
        async with connect(worker.url, "/v1/consumer", proto=JSON, name=unique("json")) as c, \
                connect(worker.url, "/v1/app", proto=MSGPACK, client=unique("bin")) as a:
            await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
            await a.send({"type": "publish", "topic": topic, "data": {b"k": 1}, "id": "bk1"})
            err = await a.recv_until("error")  # fails fast (no wait for the id) while unfixed
            assert (err["code"], err.get("id")) == ("bad_request", "bk1"), err
            assert await c.fence() == []
            assert await a.fence() == []
        await b.check()


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("bad_id", ["x" * 65, "", 12, ["a"]], ids=["long", "empty", "int", "list"])
async def test_invalid_id_is_bad_request_without_id(worker, proto, bad_id):
    async with connect(worker.url, "/v1/app", proto=proto, client=unique("app")) as c:
        await c.send({"type": "ping", "id": bad_id})
        err = await c.recv_type("error")
        assert err["code"] == "bad_request" and "id" not in err
        await c.send({"type": "ping", "id": "x" * 64})  # 64 is fine
        assert await c.recv_type("pong") == {"type": "pong", "id": "x" * 64}


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_unknown_fields_are_ignored(worker, proto):
    topic = unique("t")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("a")) as a:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s", "future": {"x": 1}})
        await a.ack({"type": "publish", "topic": topic, "data": 1, "id": "p", "priority": 9})
        msg = await c.recv_type("message")
        assert msg["data"] == 1 and "priority" not in msg


# ------------------------------------------------ RFC 6455 violations (raw)


@pytest.mark.parametrize("kind", KINDS)
async def test_unmasked_frame_closes_1002(worker, kind):
    path, query = endpoint(kind)
    async with bystander(worker.url) as b:
        async with raw_connect(worker.url, path, **query) as raw:
            await raw.send_frame(OP_TEXT, b'{"type":"ping","id":"x"}', masked=False)
            close = await raw.read_close()
            assert close is not None and close[0] == 1002, close
            await raw.wait_eof()
        await b.check()


RAW_VIOLATIONS = {
    "reserved-bits": (bytes((0xC1, 0x80)) + b"\0\0\0\0", 1002),
    "unknown-opcode": (bytes((0x83, 0x80)) + b"\0\0\0\0", 1002),
    "continuation-first": (bytes((0x80, 0x80)) + b"\0\0\0\0", 1002),
    "fragmented-ping": (bytes((0x09, 0x80)) + b"\0\0\0\0", 1002),
    "invalid-utf8": (bytes((0x81, 0x82)) + b"\0\0\0\0" + b"\xc3\x28", 1007),
    # a text frame ending in the first byte of a two-byte character
    "unfinished-utf8": (bytes((0x81, 0x82)) + b"\0\0\0\0" + b"a\xc3", 1007),
}


@pytest.mark.parametrize("case", list(RAW_VIOLATIONS))
async def test_framing_violations_close_the_connection(worker, case):
    data, code = RAW_VIOLATIONS[case]
    async with bystander(worker.url) as b:
        async with raw_connect(worker.url, "/v1/app", client=unique("bad")) as raw:
            await raw.send_bytes(data)
            close = await raw.read_close()
            assert close is not None and close[0] == code, close
            await raw.wait_eof()
        await b.check()


async def test_fragmented_text_ending_in_an_unfinished_character_closes_1007(worker):
    async with bystander(worker.url) as b:
        async with raw_connect(worker.url, "/v1/app", client=unique("utf8")) as raw:
            # a character split across two fragments is fine: "\u00e9" is c3 a9
            await raw.send_bytes(masked_fragment(OP_TEXT, b'{"type":"ping","id":"\xc3'))
            await raw.send_bytes(masked_fragment(0x80 | OP_CONT, b'\xa9"}'))
            assert await raw.recv() == {"type": "pong", "id": "\u00e9"}
            # every fragment valid so far, but the message ends inside a character
            await raw.send_bytes(masked_fragment(OP_TEXT, b'{"type":"ping",'))
            await raw.send_bytes(masked_fragment(0x80 | OP_CONT, b'"id":"x"}\xc3'))
            close = await raw.read_close()
            assert close is not None and close[0] == 1007, close
            await raw.wait_eof()
        await b.check()


async def test_raw_client_closing_normally(worker):
    """A client close is answered with a close frame and the socket is dropped."""
    async with raw_connect(worker.url, "/v1/consumer", name=unique("svc")) as raw:
        await raw.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
        close = await raw.read_close()
        assert close is not None and close[0] == 1000
        await raw.wait_eof()


async def test_frames_pipelined_with_the_handshake(worker):
    """Frames sent right behind the upgrade request (same packet) are not lost."""
    early = b"".join(encode_masked_frame(OP_BINARY, msgpack.packb({"type": "ping", "id": f"p{i}"}))
                     for i in range(3))
    async with raw_connect(worker.url, "/v1/app", proto=MSGPACK, client=unique("fast"),
                           welcome=False, early=early) as raw:
        frames = [await raw.recv() for _ in range(4)]
        assert frames[0]["type"] == "welcome"
        assert [f["id"] for f in frames[1:]] == ["p0", "p1", "p2"]


async def test_connection_dropped_mid_frame_does_not_hurt(worker):
    async with bystander(worker.url) as b:
        async with raw_connect(worker.url, "/v1/app", client=unique("drop")) as raw:
            frame = bytes((0x81, 0x80 | 100)) + b"\0\0\0\0" + b"{" * 10  # 90 bytes missing
            await raw.send_bytes(frame)
            assert await connections(worker) == 3  # the bystander's two and this one

        async def forgotten():
            return await connections(worker) == 2

        await wait_for(forgotten, what="the worker dropping the half-sent connection")
        await b.check()


async def connections(worker) -> int:
    """The worker's open connections, from its /healthz."""
    status, _, body = await http_get(worker.url, "/healthz")
    assert status == 200
    return orjson.loads(body)["connections"]
