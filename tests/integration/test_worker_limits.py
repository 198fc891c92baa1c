"""Limits on a real worker: --max-frame (1009) and the outbound queue (4029)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import msgpack
import orjson
import pytest
import trio

from mc.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PONG, OP_TEXT
from tests.procs import Proc, running, worker_proc

from .test_worker_bad_input import bystander
from .wsclient import (
    JSON,
    MSGPACK,
    PROTOCOLS,
    connect,
    masked_fragment,
    raw_connect,
    unique,
)

pytestmark = pytest.mark.timeout(60)

MAX_FRAME = 1024


@pytest.fixture(scope="module")
def small_frames() -> Iterator[Proc]:
    with running(worker_proc("--max-frame", str(MAX_FRAME))) as (w,):
        yield w


def publish_of_size(proto: str, size: int, topic: str = "t") -> dict:
    """A publish frame whose encoding in ``proto`` is exactly ``size`` bytes."""
    enc = (lambda o: msgpack.packb(o, use_bin_type=True)) if proto == MSGPACK else orjson.dumps
    frame = {"type": "publish", "topic": topic, "id": "big", "data": ""}
    pad = size - len(enc(frame))
    while True:
        frame["data"] = "x" * pad
        n = len(enc(frame))
        if n == size:
            return frame
        pad += size - n


# -------------------------------------------------------------- max frame


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_message_at_the_limit_is_accepted(small_frames, proto):
    topic = unique("t")
    async with connect(small_frames.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(small_frames.url, "/v1/app", proto=proto, client=unique("a")) as a:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
        frame = publish_of_size(proto, MAX_FRAME, topic)
        assert (await a.ack(frame))["delivered"] == 1
        # what the worker sends may be larger than the inbound limit
        assert (await c.recv_type("message"))["data"] == frame["data"]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("kind", ["app", "consumer", "chat"])
async def test_message_over_the_limit_closes_1009(small_frames, proto, kind):
    path, query = {
        "app": ("/v1/app", {"client": unique("a")}),
        "consumer": ("/v1/consumer", {"name": unique("c")}),
        "chat": (f"/v1/chat/{unique('room')}", {"client": unique("a")}),
    }[kind]
    async with bystander(small_frames.url) as b:
        async with connect(small_frames.url, path, proto=proto, **query) as c:
            big = publish_of_size(proto, MAX_FRAME + 1)
            await c.send(big)
            await c.expect_close(1009)
        await b.check()


async def test_fragmented_message_over_the_limit_closes_1009(small_frames):
    """The limit is on the whole message, not on each fragment."""
    async with bystander(small_frames.url) as b:
        async with raw_connect(small_frames.url, "/v1/app", client=unique("frag")) as raw:
            # a fragmented message under the limit is fine
            await raw.send_bytes(masked_fragment(OP_TEXT, b'{"type":"ping",'))
            await raw.send_bytes(masked_fragment(0x80 | OP_CONT, b'"id":"frag"}'))
            assert await raw.recv() == {"type": "pong", "id": "frag"}
            # two fragments of 600 bytes: each under 1024, together over it
            await raw.send_bytes(masked_fragment(OP_TEXT, b" " * 600))
            await raw.send_bytes(masked_fragment(0x80 | OP_CONT, b" " * 600))
            close = await raw.read_close()
            assert close is not None and close[0] == 1009, close
        await b.check()


# ---------------------------------------------------------- slow consumer

PAYLOAD = "x" * 50_000  # ~50 KB per message: 4 MiB of queue is ~85 messages
MAX_PUBLISH = 2000


async def keep_alive_without_reading(raw, stop: trio.Event) -> None:
    """Unsolicited pongs keep the idle timer quiet; nothing is ever read."""
    while not stop.is_set():
        await raw.send_frame(OP_PONG, b"")
        with trio.move_on_after(0.5):
            await stop.wait()


async def drain_until_close(raw, proto: str) -> list[dict]:
    """Read everything the slow consumer was sent: whole messages, then the close frame."""
    messages = []
    while True:
        event = await raw.read_frame(10)
        assert event is not None, "connection dropped without a close frame (stream cut?)"
        op, payload = event
        if op == OP_CLOSE:
            assert payload[0] == 4029, payload
            return messages
        if op in (OP_TEXT, OP_BINARY):
            frame = msgpack.unpackb(payload) if proto == MSGPACK else orjson.loads(payload)
            assert frame["type"] == "message", frame
            messages.append(frame)


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_slow_consumer_is_closed_4029_and_others_keep_receiving(worker, proto):
    topic = unique("firehose")
    async with AsyncExitStack() as stack:
        slow = await stack.enter_async_context(
            raw_connect(worker.url, "/v1/consumer", proto=proto, name=unique("slow"), rcvbuf=4096))
        fast = await stack.enter_async_context(
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("fast")))
        app = await stack.enter_async_context(
            connect(worker.url, "/v1/app", proto=JSON, client=unique("pub")))
        await slow.send({"type": "subscribe", "topic": topic, "id": "s"})
        assert await slow.recv() == {"type": "ack", "id": "s"}
        await fast.ack({"type": "subscribe", "topic": topic, "id": "s"})
        await app.ack({"type": "publish", "topic": topic, "data": "sync", "id": "sync"})
        assert (await fast.recv_type("message"))["data"] == "sync"

        fast_got: list[int] = []
        published = 0
        stop = trio.Event()

        async def read_fast():
            while True:
                frame = await fast.recv(10)
                if frame["type"] == "message":
                    fast_got.append(frame["data"]["i"])

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_alive_without_reading, slow, stop)
                nursery.start_soon(read_fast)
                # publish until the worker stops counting the slow consumer
                deliveries = []
                while published < MAX_PUBLISH:
                    ack = await app.ack({"type": "publish", "topic": topic,
                                         "data": {"i": published, "pad": PAYLOAD},
                                         "id": f"p{published}"})
                    published += 1
                    deliveries.append(ack["delivered"])
                    if ack["delivered"] == 1:
                        break
                assert deliveries[-1] == 1, "the slow consumer was never cut off"
                assert set(deliveries[:-1]) == {2}
                # once cut off it stays out of routing, and the fast one gets everything
                for _ in range(20):
                    ack = await app.ack({"type": "publish", "topic": topic,
                                         "data": {"i": published, "pad": "small"},
                                         "id": f"p{published}"})
                    assert ack["delivered"] == 1
                    published += 1
                stop.set()
                # the slow consumer finally reads: whole frames in order, then 4029
                drained = await drain_until_close(slow, proto)
                assert drained[0]["data"] == "sync"
                got = [m["data"]["i"] for m in drained[1:]]
                assert got == list(range(len(got)))
                assert len(got) < published
                seqs = [m["seq"] for m in drained]
                assert seqs == sorted(seqs)
                with trio.fail_after(10):
                    while len(fast_got) < published:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert fast_got == list(range(published))
        # answering the close ends the connection
        await slow.send_frame(OP_CLOSE, (4029).to_bytes(2, "big"))
        await slow.wait_eof()


async def test_slow_group_member_is_cut_off_and_the_group_keeps_every_message(worker):
    topic, group = unique("jobs"), unique("grp")
    async with AsyncExitStack() as stack:
        slow = await stack.enter_async_context(
            raw_connect(worker.url, "/v1/consumer", name=unique("slow"), rcvbuf=4096))
        fast = await stack.enter_async_context(
            connect(worker.url, "/v1/consumer", name=unique("fast")))
        app = await stack.enter_async_context(
            connect(worker.url, "/v1/app", proto=MSGPACK, client=unique("pub")))
        await slow.send({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
        assert (await slow.recv())["type"] == "ack"
        await fast.ack({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
        await fast.ack({"type": "pause", "id": "pz"})  # all traffic to the slow member first

        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_alive_without_reading, slow, stop)
                n = 0
                while True:
                    ack = await app.ack({"type": "publish", "topic": topic,
                                         "data": {"i": n, "pad": PAYLOAD}, "id": f"p{n}"})
                    n += 1
                    if ack["delivered"] == 0:
                        break  # the slow member is cut off; the other one is paused
                    assert n < MAX_PUBLISH, "the slow member was never cut off"
                await fast.ack({"type": "resume", "id": "rs"})
                # every later message goes to the live member, none to the closing one
                for i in range(n, n + 50):
                    ack = await app.ack({"type": "publish", "topic": topic, "data": {"i": i},
                                         "id": f"p{i}"})
                    assert ack["delivered"] == 1
                got = [f["data"]["i"] for f in await fast.fence() if f["type"] == "message"]
                assert got == list(range(n, n + 50))
                stop.set()
        drained = await drain_until_close(slow, JSON)
        assert all(m["data"]["i"] < n for m in drained)
