"""The SDK when workers die and appear: reconnects, re-subscribes, re-opens.

Each test has its own cluster (its master has a 2 s lease, so a killed
worker leaves the worker list quickly) because it kills part of it.
Workers die by SIGKILL (``Proc.kill9``), as a crashed host would: no close
frame, no goodbye to the master.
"""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack

import pytest
import trio
from trio_websocket import ConnectionClosed

import mc
from mc.client.options import Options
from mc.client.transport import open_following
from mc.protocol import JSON

from .cluster import worker_for
from .test_sdk_support import (
    cluster,
    eventually,
    online,
    receive,
    unique,
    wait_registered_sync,
    worker_id,
)

pytestmark = pytest.mark.timeout(60)

#: the lease, the reconnect backoff and the registration of a new worker fit easily
FAILOVER = 15.0


async def test_consumer_survives_a_dead_worker_and_attaches_to_a_new_one():
    with cluster(2) as (master, (w1, w2)):
        topic = unique("orders")
        async with mc.connect_consumer(master.http, name="billing-1") as consumer:
            assert consumer.workers == tuple(sorted((worker_id(w1), worker_id(w2))))
            await consumer.subscribe(f"{topic}.>", group="billing")
            w2.kill9()
            await eventually(lambda: consumer.workers == (worker_id(w1),), FAILOVER, "w2 down")
            # once the master's lease drops w2 from the list, the consumer stops retrying it
            await eventually(lambda: [wid for wid, _ in consumer._links] == [worker_id(w1)],
                             FAILOVER, "w2 forgotten")
            # the surviving connection is untouched
            async with mc.connect_app(w1.http, client=unique("a")) as app:
                assert await app.publish(f"{topic}.eu", 1) == 1
                assert (await receive(consumer)).data == 1
            w3 = worker_for(master).start()
            try:
                wait_registered_sync(master, [worker_id(w3)])
                # the consumer's long poll on /v1/workers sees the new worker and attaches
                await eventually(lambda: worker_id(w3) in consumer.workers, FAILOVER, "w3 attached")
                # ...and subscribed there: a message published on w3 arrives
                async with mc.connect_app(w3.http, client=unique("b")) as app:
                    assert app.worker == worker_id(w3)
                    assert await app.publish(f"{topic}.us", {"on": "w3"}) == 1
                    msg = await receive(consumer)
                    assert (msg.data, msg.worker) == ({"on": "w3"}, worker_id(w3))
            finally:
                w3.stop()


async def test_app_reconnects_through_the_master_after_its_worker_dies():
    with cluster(2) as (master, workers):
        alice = unique("alice")
        async with mc.connect_app(master.http, client=alice, device="phone") as app, \
                mc.connect_consumer(master.http, name="notifier") as consumer:
            first = app.worker
            victim = next(w for w in workers if worker_id(w) == first)
            survivor = next(w for w in workers if w is not victim)
            victim.kill9()
            await eventually(lambda: app.worker == worker_id(survivor), FAILOVER, "app moved")
            await online(master, alice)
            assert await consumer.notify({"client": alice}, "found you") == 1
            note = await receive(app)
            assert (note.data, note.sender) == ("found you", "notifier")
            assert await app.publish("after.failover", 1) == 0  # requests work again


async def test_chat_reopens_its_session_on_a_surviving_worker():
    with cluster(2) as (master, workers):
        room = unique("room")
        async with mc.open_chat(master.http, room, client="alice") as alice, \
                mc.open_chat(master.http, room, client="bob") as bob:
            assert await receive(alice) == mc.Joined("bob")
            owner = alice.worker
            next(w for w in workers if worker_id(w) == owner).kill9()
            # both re-open through the master, which now places the session elsewhere
            await eventually(lambda: alice.worker not in (None, owner) and bob.worker == alice.worker,
                             FAILOVER, "session re-opened on the survivor")
            await eventually(lambda: set(alice.members) == {"alice", "bob"}, 5.0, "members restored")
            seq = await bob.send("still here")
            event = await receive(alice)
            while not isinstance(event, mc.ChatMessage):  # Left/Joined from the re-open
                event = await receive(alice)
            assert (event.sender, event.data, event.seq) == ("bob", "still here", seq)


async def test_a_server_dying_during_the_handshake_costs_a_retry_not_the_connect_timeout():
    """A worker killed while answering our handshake closes the socket before the 101:
    the attempt ends at once (1006), it does not wait out connect_timeout (10 s)."""
    async def die_after_reading(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, die_after_reading, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        options = Options(connect_timeout=10.0)
        with trio.fail_after(2):
            async with AsyncExitStack() as stack:
                ws = await open_following(stack, f"ws://127.0.0.1:{port}/v1/app?client=a", JSON,
                                          options)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1006
        nursery.cancel_scope.cancel()
