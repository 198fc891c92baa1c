"""Idle SDK connections survive the server's keepalive (PROTOCOL.md "Keepalive").

The worker pings every ``heartbeat`` and closes with 4008 a connection that
sent nothing for 3 heartbeats; trio-websocket answers the pings, so an idle
app, chat or consumer keeps its connection (no reconnect).
"""

from __future__ import annotations

import pytest
import trio

import mc

from .test_sdk_support import cluster, receive, unique

pytestmark = pytest.mark.timeout(30)

HEARTBEAT = 0.4


async def test_idle_connections_are_kept_alive():
    with cluster(1, worker_extra=("--heartbeat", str(HEARTBEAT))) as (master, _):
        topic = unique("idle")
        async with mc.connect_app(master.http, client=unique("idle")) as app, \
                mc.open_chat(master.http, unique("room"), client="idle") as chat, \
                mc.connect_consumer(master.http, name="idle") as consumer:
            await consumer.subscribe(topic)
            links = [app._link, chat._link, *consumer._links.values()]
            welcomes = [link.welcome for link in links]
            await trio.sleep(5 * HEARTBEAT)  # well past the 3-heartbeat idle limit
            # the same connections (a reconnect would bring a new welcome)
            assert all(a is b for a, b in zip((link.welcome for link in links), welcomes, strict=True))
            assert await app.publish(topic, "still here") == 1
            assert (await receive(consumer)).data == "still here"
            assert await chat.send("me too") == 1
