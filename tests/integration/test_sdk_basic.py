"""The SDK against a real cluster (a master and two workers): every feature once."""

from __future__ import annotations

import base64

import pytest
import trio

import mc

from .test_sdk_support import (
    cluster,
    drain,
    eventually,
    first,
    nothing_more,
    online,
    receive,
    unique,
    worker_id,
)

pytestmark = pytest.mark.timeout(60)


async def test_publish_reaches_consumers_and_groups_share(two):
    master, _ = two
    topic = unique("orders") + ".eu"
    async with mc.connect_consumer(master.http, name="billing-1") as b1, \
            mc.connect_consumer(master.http, name="billing-2") as b2, \
            mc.connect_consumer(master.http, name="audit") as audit, \
            mc.connect_app(master.http, client=unique("alice"), device="phone") as app:
        assert len(b1.workers) == len(b2.workers) == 2  # every consumer is on every worker
        await b1.subscribe("orders.>", group="billing")  # another topic tree: not matched
        await b1.subscribe(topic.replace(".eu", ".*"), group="billing")
        await b2.subscribe(topic.replace(".eu", ".>"), group="billing")
        await audit.subscribe(topic)
        for i in range(10):
            # one member of the group plus the ungrouped subscriber
            assert await app.publish(topic, {"id": i}, key=f"k{i}") == 2
        seen = [await receive(audit) for _ in range(10)]
        assert [m.data for m in seen] == [{"id": i} for i in range(10)]
        msg = seen[0]
        assert (msg.topic, msg.key, msg.sender.client, msg.sender.device) == \
            (topic, "k0", app.client, "phone")
        assert msg.worker == app.worker and msg.seq > 0 and msg.ts > 0
        shares = {c.name: await drain(c) for c in (b1, b2)}
        # each message went to exactly one member of the group
        assert sorted(m.data["id"] for ms in shares.values() for m in ms) == list(range(10))
        await nothing_more(b1)
        await nothing_more(b2)


async def test_key_filter_unsubscribe_and_pause(two):
    master, _ = two
    topic = unique("keys")
    async with mc.connect_consumer(master.http, name="filter") as c, \
            mc.connect_app(master.http, client=unique("app")) as app:
        await c.subscribe(topic, key="vip")
        assert await app.publish(topic, 1, key="other") == 0
        assert await app.publish(topic, 2, key="vip") == 1
        assert (await receive(c)).data == 2
        await c.pause()
        assert await app.publish(topic, 3, key="vip") == 0
        await c.resume()
        assert await app.publish(topic, 4, key="vip") == 1
        assert (await receive(c)).data == 4
        await c.unsubscribe(topic)
        assert await app.publish(topic, 5, key="vip") == 0


async def test_notify_an_app_by_client_device_and_tags(two):
    master, _ = two
    alice = unique("alice")
    async with mc.connect_app(master.http, client=alice, device="phone", tags=["driver"]) as phone, \
            mc.connect_app(master.http, client=alice, device="web") as web, \
            mc.connect_consumer(master.http, name="notifier") as consumer:
        await online(master, alice, 2)
        assert await consumer.notify({"client": alice, "device": "phone"}, "your order shipped") == 1
        note = await receive(phone)
        assert (note.data, note.sender) == ("your order shipped", "notifier")
        assert note.id  # every notification carries an id
        assert await consumer.notify({"client": alice}, {"n": 2}) == 2
        assert (await receive(phone)).data == (await receive(web)).data == {"n": 2}
        assert await consumer.notify(mc.Target(tags=("driver",), client=alice), "tagged") == 1
        note = await first(phone.notifications())
        assert (note.data, note.sender) == ("tagged", "notifier")
        await nothing_more(web)


async def test_broadcast_reaches_apps_on_every_worker(two):
    master, workers = two
    # one app on each worker, connected to the worker directly
    async with mc.connect_app(workers[0].http, client=unique("a")) as a, \
            mc.connect_app(workers[1].http, client=unique("b")) as b, \
            mc.connect_consumer(master.http, name="ops") as consumer:
        assert {a.worker, b.worker} == {worker_id(w) for w in workers}
        assert await consumer.broadcast("maintenance at 22:00") >= 2
        assert (await receive(a)).data == (await receive(b)).data == "maintenance at 22:00"


async def test_chat_through_the_master(two):
    master, workers = two
    room = unique("room")
    async with mc.open_chat(master.http, room, client="alice") as alice:
        assert alice.members == ("alice",)
        owner = alice.worker
        async with mc.open_chat(master.http, room, client="bob") as bob:
            assert bob.worker == owner  # the master sent bob to the session's owner
            assert bob.members == ("alice", "bob")
            assert await receive(alice) == mc.Joined("bob")
            assert alice.members == ("alice", "bob")
            assert await bob.send("hi") == 1
            msg = await receive(alice)
            assert isinstance(msg, mc.ChatMessage)
            assert (msg.sender, msg.data, msg.seq) == ("bob", "hi", 1)
            await nothing_more(bob)  # the sender does not get its own message
            # opening at the worker that is NOT the owner: it redirects (307) too
            other = next(w for w in workers if worker_id(w) != owner)
            async with mc.open_chat(other.http, room, client="carol", mode="join") as carol:
                assert carol.worker == owner
                assert set(carol.members) == {"alice", "bob", "carol"}
                assert await receive(alice) == await receive(bob) == mc.Joined("carol")
                assert await carol.send({"text": "hello"}) == 2
                got = [await receive(alice), await receive(bob)]
                assert all(e.data == {"text": "hello"} and e.sender == "carol" for e in got)
            assert await receive(alice) == mc.Left("carol")
        assert await first(alice) == mc.Left("bob")
        assert alice.members == ("alice",)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_msgpack_codec_carries_bytes(two, codec):
    master, _ = two
    topic = unique("blobs")
    blob = b"\x00\x01\xff"
    client = unique("m")
    async with mc.connect_consumer(master.http, name="bin", codec=codec) as consumer, \
            mc.connect_app(master.http, client=client, codec="msgpack") as app:
        await consumer.subscribe(topic)
        await online(master, client)
        assert await app.publish(topic, {"blob": blob}) == 1
        got = (await receive(consumer)).data["blob"]
        # JSON cannot carry bytes: a JSON consumer gets them base64-encoded
        assert got == (blob if codec == "msgpack" else base64.b64encode(blob).decode())
        assert await consumer.notify({"client": client}, {"n": [1, 2]}) == 1
        assert (await receive(app)).data == {"n": [1, 2]}


async def test_msgpack_notify_with_bytes_crosses_workers():
    """Bytes in ``data`` survive the master's routing to the other worker (msgpack control link)."""
    with cluster(2) as (master, workers):
        client = unique("bin")
        async with mc.connect_app(master.http, client=client, device="d1", codec="msgpack") as a1, \
                mc.connect_app(master.http, client=client, device="d2", codec="msgpack") as a2, \
                mc.connect_consumer(master.http, name="bin", codec="msgpack") as consumer:
            assert a1.worker != a2.worker  # the balancer spreads them: one notify must cross
            await online(master, client, connections=2)
            assert await consumer.notify({"client": client}, b"\x00\xff") == 2
            assert (await receive(a1)).data == b"\x00\xff"
            assert (await receive(a2)).data == b"\x00\xff"
            # both workers and their control links are still up: a second one crosses too
            assert await consumer.notify({"client": client}, [b"\x01"]) == 2
            assert (await receive(a1)).data == (await receive(a2)).data == [b"\x01"]
            for worker in workers:
                assert worker.popen.poll() is None, f"a worker died: {worker.output()[-300:]}"


async def test_bad_requests_raise_mcerror(two):
    master, _ = two
    async with mc.connect_app(master.http, client=unique("x")) as app, \
            mc.connect_consumer(master.http, name="checker") as consumer:
        for call in (
            lambda: app.publish("orders..eu", 1),        # empty segment
            lambda: app.publish("a" * 200, 1),           # too long
            lambda: app.publish("ok", 1, key="bad key"),  # key is not a name
            lambda: consumer.subscribe("orders.>.eu"),    # '>' only last
            lambda: consumer.notify({"tags": []}, 1),     # empty tag list
        ):
            with pytest.raises(mc.McError) as info:
                await call()
            assert info.value.code == "bad_request" and not info.value.temporary
        with pytest.raises(mc.McError) as info:
            await app.publish("big", "x" * 70_000)  # over the worker's 64 KiB frame limit
        assert info.value.code == "too_large"
        assert await app.publish("still.fine", 1) == 0  # the connection survived all of it
    with pytest.raises(mc.McError) as info:
        mc.connect_app(master.http, client="no spaces allowed")
    assert info.value.code == "bad_request"
    with pytest.raises(mc.McError) as info:  # the master answers 404 to mode=join
        async with mc.open_chat(master.http, unique("nobody-here"), client="a", mode="join"):
            pass
    assert (info.value.code, info.value.status) == ("not_found", 404)


async def test_replaced_connection_stops_with_4009(two):
    _, workers = two
    client = unique("dup")
    async with mc.connect_app(workers[0].http, client=client, device="phone") as older, \
            mc.connect_app(workers[0].http, client=client, device="phone"):
        with pytest.raises(mc.McError) as info:
            await receive(older)
        assert info.value.close_code == 4009 and not info.value.temporary
        with pytest.raises(mc.McError) as info:
            await older.publish("t", 1)
        assert info.value.close_code == 4009
        await eventually(lambda: older.worker is None, what="no reconnect")


async def test_unreachable_master_raises_after_connect_timeout():
    from tests.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with trio.fail_after(5):
        for factory in (lambda: mc.connect_app(url, client="a", connect_timeout=0.5),
                        lambda: mc.connect_consumer(url, name="c", connect_timeout=0.5)):
            with pytest.raises(mc.McError) as info:
                async with factory():
                    pass
            assert info.value.code == "unavailable" and info.value.temporary
