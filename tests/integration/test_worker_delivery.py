"""App publish -> consumer ``message`` on one real worker: fields, acks, routing."""

from __future__ import annotations

import base64
import itertools
import re
import time

import pytest
import trio

from .wsclient import JSON, MSGPACK, PROTOCOLS, connect, unique

pytestmark = pytest.mark.timeout(60)


def sample_data(proto: str):
    """What an app of this codec publishes: msgpack carries raw bytes too."""
    if proto == MSGPACK:
        return {"n": 1, "raw": b"\x00\xff\x10bytes", "text": "h\u00e9llo"}
    return {"n": 1, "list": [1, 2.5, None, True], "text": "h\u00e9llo"}


def as_received(data, proto: str):
    """``data`` as a consumer of codec ``proto`` sees it (bytes become base64 in JSON)."""
    if proto == JSON and isinstance(data, dict):
        return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                for k, v in data.items()}
    return data


@pytest.mark.parametrize("app_proto", PROTOCOLS)
@pytest.mark.parametrize("consumer_proto", PROTOCOLS)
async def test_publish_reaches_consumer_with_all_fields(worker, app_proto, consumer_proto):
    topic = unique("orders") + ".eu"
    client = unique("pub")
    async with connect(worker.url, "/v1/consumer", proto=consumer_proto, name=unique("svc")) as c, \
            connect(worker.url, "/v1/app", proto=app_proto, client=client, device="tablet") as a:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s1"})
        data = sample_data(app_proto)
        before = time.time_ns() // 1_000_000
        ack = await a.ack({"type": "publish", "topic": topic, "key": "k-1", "data": data,
                           "id": "p1", "trace": "trace-abc"})
        assert ack == {"type": "ack", "id": "p1", "delivered": 1}
        msg = await c.recv_type("message")
        after = time.time_ns() // 1_000_000
        assert msg["topic"] == topic
        assert msg["key"] == "k-1"
        assert msg["data"] == as_received(data, consumer_proto)
        assert msg["from"] == {"client": client, "device": "tablet"}
        assert msg["worker"] == f"w{worker.port}"
        assert isinstance(msg["seq"], int) and msg["seq"] > 0
        assert isinstance(msg["ts"], int) and before - 1000 <= msg["ts"] <= after + 1000
        assert msg["trace"] == "trace-abc"
        # optional fields are absent when not given; null data is a value
        await a.send({"type": "publish", "topic": topic, "data": None})
        msg2 = await c.recv_type("message")
        assert msg2["data"] is None
        assert "key" not in msg2
        assert re.fullmatch(r"[0-9a-z]{1,6}-[0-9a-z]+", msg2["trace"])  # made by the worker
        assert msg2["seq"] > msg["seq"]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_seq_increases_and_ack_counts_consumers(worker, proto):
    topic = unique("t")
    async with connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        # nobody subscribed: delivered 0, and still acknowledged
        assert (await a.ack({"type": "publish", "topic": topic, "data": 1, "id": "x"}))["delivered"] == 0
        async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c1")) as c1, \
                connect(worker.url, "/v1/consumer", proto=JSON, name=unique("c2")) as c2, \
                connect(worker.url, "/v1/consumer", proto=MSGPACK, name=unique("c3")) as c3:
            for c in (c1, c2, c3):
                await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
            seqs = []
            for i in range(10):
                ack = await a.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"})
                assert ack["delivered"] == 3
            for c in (c1, c2, c3):
                got = [m for m in await c.fence() if m["type"] == "message"]
                assert [m["data"] for m in got] == list(range(10))
                seqs.append([m["seq"] for m in got])
            assert seqs[0] == seqs[1] == seqs[2]  # one seq per message, the same for everyone
            assert all(x < y for x, y in itertools.pairwise(seqs[0]))
            # a publish without an id is not acknowledged
            await a.send({"type": "publish", "topic": topic, "data": "quiet"})
            assert (await c1.recv_type("message"))["data"] == "quiet"
            await a.expect_silence(0.2)


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_wildcard_patterns(worker, proto):
    root = unique("w")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("star")) as star, \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("tail")) as tail, \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("mid")) as mid, \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("exact")) as exact, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        await star.ack({"type": "subscribe", "topic": f"{root}.*", "id": "s"})
        await tail.ack({"type": "subscribe", "topic": f"{root}.>", "id": "s"})
        await mid.ack({"type": "subscribe", "topic": f"{root}.*.created", "id": "s"})
        await exact.ack({"type": "subscribe", "topic": f"{root}.eu", "id": "s"})
        expected = {
            root: 0,
            f"{root}.eu": 3,  # star, tail, exact
            f"{root}.us": 2,  # star, tail
            f"{root}.eu.created": 2,  # tail, mid
            f"{root}.eu.deleted": 1,  # tail
            f"{root}.eu.x.created": 1,  # tail
            f"other.{root}.eu": 0,
        }
        for i, (topic, n) in enumerate(expected.items()):
            ack = await a.ack({"type": "publish", "topic": topic, "data": topic, "id": f"p{i}"})
            assert ack["delivered"] == n, topic

        def topics(frames):
            return [f["topic"] for f in frames if f["type"] == "message"]

        assert topics(await star.fence()) == [f"{root}.eu", f"{root}.us"]
        assert topics(await tail.fence()) == [f"{root}.eu", f"{root}.us", f"{root}.eu.created",
                                              f"{root}.eu.deleted", f"{root}.eu.x.created"]
        assert topics(await mid.fence()) == [f"{root}.eu.created"]
        assert topics(await exact.fence()) == [f"{root}.eu"]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_overlapping_subscriptions_deliver_once(worker, proto):
    root = unique("o")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        for i, pattern in enumerate((f"{root}.a", f"{root}.*", f"{root}.>")):
            await c.ack({"type": "subscribe", "topic": pattern, "id": f"s{i}"})
        # subscribing twice to the same thing is harmless
        await c.ack({"type": "subscribe", "topic": f"{root}.a", "id": "again"})
        ack = await a.ack({"type": "publish", "topic": f"{root}.a", "data": 1, "id": "p"})
        assert ack["delivered"] == 1
        assert [f["data"] for f in await c.fence() if f["type"] == "message"] == [1]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_key_filters(worker, proto):
    topic = unique("k")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("k1")) as k1, \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("any")) as anyk, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        await k1.ack({"type": "subscribe", "topic": topic, "key": "user-1", "id": "s"})
        await anyk.ack({"type": "subscribe", "topic": topic, "key": "*", "id": "s"})
        cases = [("user-1", 2), ("user-2", 1), (None, 1)]
        for i, (key, n) in enumerate(cases):
            frame = {"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}
            if key is not None:
                frame["key"] = key
            assert (await a.ack(frame))["delivered"] == n
        assert [(f["data"], f.get("key")) for f in await k1.fence()] == [(0, "user-1")]
        assert [(f["data"], f.get("key")) for f in await anyk.fence()] == [
            (0, "user-1"), (1, "user-2"), (2, None)]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_pause_resume_unsubscribe(worker, proto):
    topic = unique("p")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/consumer", proto=proto, name=unique("other")) as other, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
        await other.ack({"type": "subscribe", "topic": topic, "id": "s"})

        async def publish(n, expect):
            assert (await a.ack({"type": "publish", "topic": topic, "data": n, "id": f"p{n}"}))[
                "delivered"] == expect

        await publish(1, 2)
        assert await c.ack({"type": "pause", "id": "pz"}) == {"type": "ack", "id": "pz"}
        await publish(2, 1)
        await publish(3, 1)
        assert [f["data"] for f in await c.fence()] == [1]  # nothing while paused
        assert await c.ack({"type": "resume", "id": "rs"}) == {"type": "ack", "id": "rs"}
        await publish(4, 2)
        assert [f["data"] for f in await c.fence()] == [4]  # paused messages are not replayed
        # unsubscribe: nothing more, other subscribers unaffected
        assert await c.ack({"type": "unsubscribe", "topic": topic, "id": "u"}) == {"type": "ack", "id": "u"}
        await publish(5, 1)
        assert await c.fence() == []
        assert [f["data"] for f in await other.fence()] == [1, 2, 3, 4, 5]
        # unsubscribing something never subscribed is acknowledged too
        assert (await c.ack({"type": "unsubscribe", "topic": "never.was", "id": "u2"}))["type"] == "ack"
        # pause / resume without an id are silent
        await c.send({"type": "pause"})
        await c.send({"type": "resume"})
        assert await c.fence() == []


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_order_preserved_per_publisher(worker, proto):
    topic = unique("ord")
    n = 500
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("p1")) as p1, \
            connect(worker.url, "/v1/app", proto=JSON, client=unique("p2")) as p2:
        await c.ack({"type": "subscribe", "topic": topic, "id": "s"})
        received: list[dict] = []

        async def publish(app, tag):
            for i in range(n):
                await app.send({"type": "publish", "topic": topic, "data": {"p": tag, "i": i}})
            await app.ack({"type": "publish", "topic": topic, "data": {"p": tag, "i": n}, "id": "end"})

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, p1, "a")
                nursery.start_soon(publish, p2, "b")
                while len(received) < 2 * (n + 1):
                    received.append(await c.recv_type("message"))
        for tag in ("a", "b"):
            assert [m["data"]["i"] for m in received if m["data"]["p"] == tag] == list(range(n + 1))
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_consumers_do_not_receive_from_apps_of_other_topics_or_each_other(worker, proto):
    t1, t2 = unique("t1"), unique("t2")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("c")) as c, \
            connect(worker.url, "/v1/app", proto=proto, client=unique("pub")) as a:
        await c.ack({"type": "subscribe", "topic": t1, "id": "s"})
        assert (await a.ack({"type": "publish", "topic": t2, "data": 0, "id": "p"}))["delivered"] == 0
        assert await c.fence() == []
        # a publishing app gets nothing back for its own publish except the ack
        assert await a.fence() == []


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_same_client_and_device_replaces_older_connection(worker, proto):
    client = unique("dup")
    async with connect(worker.url, "/v1/app", proto=proto, client=client, device="phone") as first, \
            connect(worker.url, "/v1/app", proto=proto, client=client, device="web") as web, \
            connect(worker.url, "/v1/app", proto=proto, client=client, device="phone") as second:
        await first.expect_close(4009)
        # the newer connection and the other device both keep working
        assert await second.fence() == []
        assert await web.fence() == []
        # and notifications go to the new one only
        async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("n")) as c:
            ack = await c.ack({"type": "notify", "to": {"client": client, "device": "phone"},
                               "data": "hi", "id": "n1"})
            assert ack["delivered"] == 1
            assert (await second.recv_type("notify"))["data"] == "hi"
