"""A worker cut off from the master (partition), and a cluster whose master is down.

Each test runs its own cluster (master ``--lease 2``) because it stops
processes. A partition is simulated by SIGSTOP'ing a worker (only processes
these tests started, by PID) for longer than the lease, then SIGCONT: to the
master the worker was dead, to the worker nothing happened.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from tests.procs import Proc

from .cluster import (
    LEASE,
    cluster,
    follow,
    get_json,
    http_client,
    wait_for,
    wait_master_down,
    wait_registered,
    worker_id,
)
from .wsclient import connect, error_body, header, rejected, unique

pytestmark = pytest.mark.timeout(60)


@contextmanager
def stopped(proc: Proc) -> Iterator[None]:
    """``proc`` frozen (SIGSTOP) inside the block, always resumed (SIGCONT) after it."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def test_partitioned_worker_gives_up_a_session_the_master_gave_away():
    """A's session was given to B while A was cut off; when A registers again the
    master answers with the conflict and A closes its copy's members with 4503.
    They reconnect through the master and land in B's copy of the session."""
    with cluster(2) as (master, (wa, wb)):
        aid, bid = worker_id(wa), worker_id(wb)
        session, alice, bob = unique("split"), unique("alice"), unique("bob")
        path = f"/v1/chat/{session}"
        url = f"{master.http}/v1/sessions/{session}"
        async with http_client() as http, follow(wa.url, path, client=alice) as a:
            assert a.welcome["worker"] == aid
            assert (await get_json(http, url))["worker"] == aid

            with stopped(wa):
                async def a_purged():
                    body = await get_json(http, f"{master.http}/v1/workers")
                    return [w["id"] for w in body["workers"]] == [bid]

                await wait_for(a_purged, timeout=LEASE + 5, what=f"{aid} purged")
                await get_json(http, url, status=404)  # forgotten with A
                # meanwhile the session is opened again: B becomes its owner
                async with follow(wb.url, path, client=bob) as b:
                    assert b.welcome["worker"] == bid
                    assert b.welcome["members"] == [bob]
                    assert (await get_json(http, url))["worker"] == bid

                    # A comes back: re-registers, learns of the conflict, closes its copy
                    os.kill(wa.pid, signal.SIGCONT)
                    await a.expect_close(4503, timeout=LEASE + 8)
                    await wait_registered(http, master, [aid, bid])
                    assert (await get_json(http, url))["worker"] == bid  # the owner stays B
                    # alice reconnects through the master: to B, beside bob
                    async with follow(master.http.replace("http", "ws", 1), path, client=alice,
                                      mode="join") as again:
                        assert again.welcome["worker"] == bid
                        assert sorted(again.welcome["members"]) == sorted([alice, bob])
                        assert await b.recv_type("joined") == {"type": "joined", "client": alice}
                        ack = await again.ack({"type": "send", "data": "back", "id": "m"})
                        msg = await b.recv_type("chat")
                        assert (msg["from"], msg["data"], msg["seq"]) == (alice, "back", ack["seq"])
            # A's copy is gone for good: a join there is sent to the owner
            r = await rejected(wa.url, path, client=unique("late"), mode="join")
            assert r.status_code == 307 and header(r, "location").startswith(wb.url + path)


async def test_while_the_master_is_down():
    """No master: chat sessions that need it are refused with 503 and Retry-After;
    what the workers hold keeps working (open chats, joins to them, local
    publish and notify); a notify reaches this worker's apps only."""
    with cluster(2) as (master, (wa, wb)):
        aid = worker_id(wa)
        session, alice, bob, carol = unique("kept"), unique("alice"), unique("bob"), unique("carol")
        path = f"/v1/chat/{session}"
        local_app, remote_app, topic = unique("here"), unique("there"), unique("t")
        async with follow(wa.url, path, client=alice) as a, \
                follow(wa.url, path, client=bob) as b, \
                connect(wa.url, "/v1/app", client=local_app) as app, \
                connect(wb.url, "/v1/app", client=remote_app) as other, \
                connect(wa.url, "/v1/consumer", name=unique("svc")) as consumer:
            assert a.welcome["worker"] == b.welcome["worker"] == aid
            assert await a.recv_type("joined") == {"type": "joined", "client": bob}
            await consumer.ack({"type": "subscribe", "topic": topic, "id": "s"})

            await trio.to_thread.run_sync(master.kill9)
            refusal = await wait_master_down(wa)
            assert error_body(refusal)["error"] == "unavailable"
            assert int(header(refusal, "retry-after")) >= 1
            # joining an unknown session needs the master as well: 503, not 404
            r = await rejected(wa.url, f"/v1/chat/{unique('nobody')}", client=carol, mode="join")
            assert r.status_code == 503 and header(r, "retry-after") is not None

            # the open chat carries on, and it can still be joined: its owner is here
            ack = await a.ack({"type": "send", "data": "still", "id": "1"})
            assert (await b.recv_type("chat"))["seq"] == ack["seq"]
            async with connect(wa.url, path, client=carol, mode="join") as c:
                assert sorted(c.welcome["members"]) == sorted([alice, bob, carol])
                for member in (a, b):
                    assert await member.recv_type("joined") == {"type": "joined", "client": carol}
                await c.send({"type": "send", "data": "hi"})
                assert (await a.recv_type("chat"))["data"] == "hi"
                assert (await b.recv_type("chat"))["data"] == "hi"

            # topic messages stay on the worker anyway
            async with connect(wa.url, "/v1/app", client=unique("pub")) as pub:
                assert (await pub.ack({"type": "publish", "topic": topic, "data": 1, "id": "p"}))[
                    "delivered"] == 1
            assert (await consumer.recv_type("message"))["data"] == 1

            # notify: delivered on this worker, and "delivered" says it is only here
            ack = await consumer.ack({"type": "notify", "to": {"client": local_app}, "data": "n1",
                                      "id": "n1"})
            assert ack["delivered"] == 1
            assert (await app.recv_type("notify"))["data"] == "n1"
            ack = await consumer.ack({"type": "notify", "to": {"client": remote_app}, "data": "n2",
                                      "id": "n2"})
            assert ack["delivered"] == 0
            ack = await consumer.ack({"type": "notify", "to": {}, "data": "all", "id": "n3"})
            assert ack["delivered"] == 1  # the app here; the one on the other worker is out of reach
            assert (await app.recv_type("notify"))["data"] == "all"
            assert await other.fence() == []
            # an app connecting now is served, and local notifies reach it
            newcomer = unique("new")
            async with connect(wa.url, "/v1/app", client=newcomer) as late:
                ack = await consumer.ack({"type": "notify", "to": {"client": newcomer},
                                          "data": "welcome", "id": "n4"})
                assert ack["delivered"] == 1
                assert (await late.recv_type("notify"))["data"] == "welcome"
