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
#: the worker's outbound queue limits per connection (PROTOCOL.md "Limits")
MAX_QUEUED_FRAMES = 4096
MAX_QUEUED_BYTES = 4 * 1024 * 1024


async def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll a plain predicate until it holds; fail after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"{what} not reached within {timeout}s")


async def keep_alive_without_reading(raw, stop: trio.Event) -> None:
    """Unsolicited pongs keep the idle timer quiet; nothing is ever read."""
    while not stop.is_set():
        await raw.send_frame(OP_PONG, b"")
        with trio.move_on_after(0.5):
            await stop.wait()


async def drain_until_close(raw, proto: str, sizes: list[int] | None = None) -> list[dict]:
    """Read everything the slow consumer was sent: whole messages, then the close frame.

    ``sizes`` (if given) gets each message's size on the wire (frame header included).
    """
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
            if sizes is not None:
                sizes.append(len(payload) + (2 if len(payload) < 126 else 4 if len(payload) < 65536 else 10))


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
                sizes: list[int] = []
                drained = await drain_until_close(slow, proto, sizes)
                assert drained[0]["data"] == "sync"
                got = [m["data"]["i"] for m in drained[1:]]
                # the first big message at least was on its way (whole, or its tail kept)
                assert got[:1] == [0] and got == list(range(len(got)))
                assert len(got) < published
                seqs = [m["seq"] for m in drained]
                assert seqs == sorted(seqs)
                # What was written to it but never arrived is what the worker had queued
                # when it gave up: 4 MiB of these messages (the frame limit is far off).
                # The overflowing message counts as delivered but is never queued, and
                # the tail of a message already partly sent is kept (it arrives): one off.
                given = len(deliveries) - 1  # every publish but the last counted it
                lost = given - len(got)
                fewest, most = MAX_QUEUED_BYTES // max(sizes[1:]), MAX_QUEUED_BYTES // min(sizes[1:])
                assert fewest - 1 <= lost <= most + 1, (lost, fewest, most, given, len(got))
                await wait_until(lambda: len(fast_got) >= published, 10, "the fast consumer's share")
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


# ---------------------------------------------------- the frame limit, exactly

TINY_BATCH = 512
MAX_TINY = 200_000  # far beyond what the 4 MiB byte limit alone would let through


@pytest.fixture(scope="module")
def quiet_worker() -> Iterator[Proc]:
    """Default heartbeat (25 s): no server pings among the frames a test counts.

    The consumer that never reads reads its close only once the flood's last
    batch is acknowledged; on a loaded CI machine that once took longer than
    the default 2 s ``close_timeout``, and the worker then rightly dropped the
    connection without the close reaching it. 30 s takes timing out of it.
    """
    with running(worker_proc("--close-timeout", "30")) as (w,):
        yield w


async def flood(app, topic: str, counted: list[int]) -> int:
    """Publish tiny messages in pipelined batches until a publish reaches nobody;
    ``counted`` gets every ``ack.delivered``. Returns how many were published."""
    published = 0
    while published < MAX_TINY:
        for i in range(published, published + TINY_BATCH):
            await app.send({"type": "publish", "topic": topic, "data": i, "id": f"t{i}"})
        for i in range(published, published + TINY_BATCH):
            ack = await app.recv_type("ack", 10)
            assert ack["id"] == f"t{i}"
            counted.append(ack["delivered"])
        published += TINY_BATCH
        if counted[-1] == 0:
            return published
    raise AssertionError(f"the consumer that never reads was not cut off after {published}")


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_outbound_queue_holds_at_most_4096_frames(quiet_worker, proto):
    """A consumer that never reads while an app floods it with tiny messages is
    closed with 4029 once 4096 frames wait for it (their bytes are far below
    4 MiB), whatever its socket buffers absorbed before."""
    topic = unique("flood")
    async with AsyncExitStack() as stack:
        slow = await stack.enter_async_context(
            raw_connect(quiet_worker.url, "/v1/consumer", proto=proto, name=unique("slow"), rcvbuf=4096))
        app = await stack.enter_async_context(
            connect(quiet_worker.url, "/v1/app", proto=MSGPACK, client=unique("pub")))
        await slow.send({"type": "subscribe", "topic": topic, "id": "s"})
        assert await slow.recv() == {"type": "ack", "id": "s"}
        counted: list[int] = []
        with trio.fail_after(60):
            await flood(app, topic, counted)
        given = counted.index(0)  # the slow consumer is counted until it is cut off...
        assert set(counted[:given]) == {1} and set(counted[given:]) == {0}  # ...and never after
        sizes: list[int] = []
        drained = await drain_until_close(slow, proto, sizes)
        assert [m["data"] for m in drained] == list(range(len(drained)))  # whole, in order
        # written to it but never sent: the queue when it overflowed. The overflowing
        # frame counts as delivered without being queued; a partly sent frame's tail
        # is queued and still arrives (so the difference may be one less)
        lost = given - len(drained)
        assert lost in (MAX_QUEUED_FRAMES, MAX_QUEUED_FRAMES + 1), (lost, given, len(drained))
        assert MAX_QUEUED_FRAMES * max(sizes) < MAX_QUEUED_BYTES / 4  # not the byte limit
        print(f"\n[limits] {proto}: {given} messages given to the consumer that never read, "
              f"{len(drained)} reached it (socket buffers), {lost} queued when it was cut off")


# ------------------------------------------------------- subscriptions

MAX_SUBSCRIPTIONS = 1000


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_the_1001st_subscription_is_too_large(worker, proto):
    root = unique("many")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("a")) as a:
        for i in range(MAX_SUBSCRIPTIONS - 1):  # pipelined: no id, no ack
            await c.send({"type": "subscribe", "topic": f"{root}.{i}"})
        last = MAX_SUBSCRIPTIONS - 1
        assert await c.ack({"type": "subscribe", "topic": f"{root}.{last}", "id": "s1000"}) == \
            {"type": "ack", "id": "s1000"}
        err = await c.request({"type": "subscribe", "topic": f"{root}.over", "id": "s1001"})
        assert (err["type"], err["code"], err["id"]) == ("error", "too_large", "s1001"), err
        assert "1000" in err["reason"]
        # a different key or group is another subscription: refused too
        err = await c.request({"type": "subscribe", "topic": f"{root}.0", "key": "k", "id": "k"})
        assert (err["code"], err["id"]) == ("too_large", "k")
        # the refused one does not exist; the others do; repeating one changes nothing
        assert (await a.ack({"type": "publish", "topic": f"{root}.over", "data": 1, "id": "p1"}))[
            "delivered"] == 0
        assert (await a.ack({"type": "publish", "topic": f"{root}.{last}", "data": 2, "id": "p2"}))[
            "delivered"] == 1
        assert (await c.recv_type("message"))["data"] == 2
        await c.ack({"type": "subscribe", "topic": f"{root}.7", "id": "again"})
        # one freed: room for exactly one more
        await c.ack({"type": "unsubscribe", "topic": f"{root}.0", "id": "u"})
        await c.ack({"type": "subscribe", "topic": f"{root}.over", "id": "s1001b"})
        err = await c.request({"type": "subscribe", "topic": f"{root}.over2", "id": "s1002"})
        assert (err["code"], err["id"]) == ("too_large", "s1002")
        assert await c.fence() == []  # open all along, nothing unexpected
