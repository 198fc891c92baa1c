"""Liveness: a worker killed with SIGKILL is purged within the lease; a master restart loses nothing.

Each test runs its own cluster (master ``--lease 2``) because it kills processes.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.procs import master_proc

from .cluster import (
    LEASE,
    cluster,
    follow,
    get_json,
    http_client,
    master_args,
    wait_for,
    wait_master_down,
    wait_presence,
    wait_registered,
    worker_id,
    ws_base,
)
from .wsclient import connect, unique

pytestmark = pytest.mark.timeout(60)


async def test_killed_worker_is_purged_within_the_lease():
    with cluster(2) as (master, (victim, survivor)):
        vid, sid = worker_id(victim), worker_id(survivor)
        session, owner_client, app_client = unique("doomed"), unique("alice"), unique("app")
        path = f"/v1/chat/{session}"
        async with http_client() as http:
            async with follow(victim.url, path, client=owner_client) as chat, \
                    connect(victim.url, "/v1/app", client=app_client, device="d1"):
                assert chat.welcome["worker"] == vid
                assert (await get_json(http, f"{master.http}/v1/sessions/{session}"))["worker"] == vid
                await wait_presence(http, master, app_client, [{"worker": vid, "device": "d1"}])

                killed = time.monotonic()
                await trio.to_thread.run_sync(victim.kill9)

                async def purged():
                    body = await get_json(http, f"{master.http}/v1/workers")
                    return [w["id"] for w in body["workers"]] == [sid]

                # purged once its lease ran out (bounded generously: the master ticks at
                # a tenth of the lease, but this machine may be busy)
                await wait_for(purged, timeout=LEASE + 5, interval=0.02, what="purge")
                elapsed = time.monotonic() - killed
                print(f"\n[liveness] worker {vid} killed -> purged from /v1/workers in {elapsed:.2f}s "
                      f"(lease {LEASE}s)")
                # the clients of the dead worker see their connections drop
                with trio.fail_after(5), pytest.raises(ConnectionClosed):
                    while True:
                        await chat.ws.get_message()

            # its sessions and presence are forgotten with it
            r = await http.get(f"{master.http}/v1/sessions/{session}")
            assert r.status_code == 404, r.text
            gone = await get_json(http, f"{master.http}/v1/clients/{app_client}")
            assert gone == {"client": app_client, "online": False, "connections": []}
            for _ in range(4):
                assert (await get_json(http, f"{master.http}/v1/assign?client=x"))["worker"] == sid

            # reopening the session makes the survivor its owner: directly, and through the master
            async with follow(ws_base(master), path, client=owner_client, mode="open") as again:
                assert again.welcome["worker"] == sid
                assert again.welcome["members"] == [owner_client]
                info = await get_json(http, f"{master.http}/v1/sessions/{session}")
                assert info["worker"] == sid and info["url"] == survivor.url
                async with follow(survivor.url, path, client=unique("bob"), mode="join") as bob:
                    assert bob.welcome["worker"] == sid
                    assert (await again.recv_type("joined"))["client"] == bob.welcome["client"]
                    await bob.send({"type": "send", "data": "still here"})
                    assert (await again.recv_type("chat"))["data"] == "still here"


async def test_master_restart_rebuilds_state():
    with cluster(3) as (master, (wa, wb, wc)):
        aid, bid, cid = worker_id(wa), worker_id(wb), worker_id(wc)
        session, alice, bob, carol = unique("kept"), unique("alice"), unique("bob"), unique("carol")
        path = f"/v1/chat/{session}"
        replacement = master_proc(*master_args(), port=master.port)
        async with http_client() as http:
            # a drained worker stays drained across the restart
            assert (await http.post(f"{master.http}/v1/workers/{cid}/drain")).status_code == 202
        async with http_client() as http, \
                follow(wa.url, path, client=alice) as a, \
                follow(wb.url, path, client=bob) as b, \
                connect(wb.url, "/v1/app", client=carol, device="tablet") as app:
            assert a.welcome["worker"] == aid and b.welcome["worker"] == aid  # b was sent to A
            assert (await a.recv_type("joined"))["client"] == bob
            await wait_presence(http, master, carol, [{"worker": bid, "device": "tablet"}])

            async def chat_works(tag: str) -> None:
                ack = await a.ack({"type": "send", "data": f"a-{tag}", "id": f"a-{tag}"})
                got = await b.recv_type("chat")
                assert got["data"] == f"a-{tag}" and got["seq"] == ack["seq"]
                await b.send({"type": "send", "data": f"b-{tag}"})
                assert (await a.recv_type("chat"))["data"] == f"b-{tag}"

            await chat_works("before")
            await trio.to_thread.run_sync(master.kill9)
            with pytest.raises(httpx.ConnectError):  # the master is really gone
                await http.get(f"{master.http}/healthz", timeout=0.5)
            await chat_works("master-down")
            # both workers know the master is gone: a session only the master could
            # place is refused (503), while the open chat carries on
            for w in (wa, wb):
                await wait_master_down(w)
            await chat_works("master-down-2")

            spawned = time.monotonic()
            await trio.to_thread.run_sync(replacement.start)
            serving = time.monotonic()
            try:
                url = replacement.http

                async def rebuilt():
                    workers = await get_json(http, f"{url}/v1/workers")
                    if sorted(w["id"] for w in workers["workers"]) != sorted([aid, bid, cid]):
                        return None
                    info = await http.get(f"{url}/v1/sessions/{session}")
                    if info.status_code != 200 or info.json()["members"] != 2:
                        return None
                    presence = await get_json(http, f"{url}/v1/clients/{carol}")
                    if presence["connections"] != [{"worker": bid, "device": "tablet"}]:
                        return None
                    return workers, info.json(), presence

                # whole again within about one lease (bounded generously for a busy machine)
                workers, info, presence = await wait_for(rebuilt, timeout=LEASE + 5, interval=0.02,
                                                          what="rebuilt master state")
                done = time.monotonic()
                print(f"\n[liveness] new master serving {serving - spawned:.2f}s after spawn; "
                      f"state rebuilt {done - serving:.2f}s after it served "
                      f"({done - spawned:.2f}s after spawn; lease {LEASE}s)")

                assert {w["id"]: w["url"] for w in workers["workers"]} == {
                    aid: wa.url, bid: wb.url, cid: wc.url}
                states = {w["id"]: w["state"] for w in workers["workers"]}
                assert states == {aid: "up", bid: "up", cid: "draining"}
                for _ in range(6):
                    assigned = await get_json(http, f"{url}/v1/assign?client={unique('n')}")
                    assert assigned["worker"] != cid
                assert info == {"session": session, "worker": aid, "url": wa.url, "members": 2}
                assert presence["online"] is True

                # the chat never noticed
                await chat_works("after")
                assert await a.fence() == [] and await b.fence() == []
                # and the rebuilt master routes as before: to the owner, to the app's worker
                async with follow(ws_base(replacement), path, client=unique("dave"), mode="join") as d:
                    assert d.welcome["worker"] == aid
                    assert sorted(d.welcome["members"]) == sorted([alice, bob, d.welcome["client"]])
                r = await http.post(f"{url}/v1/notify", json={"to": {"client": carol}, "data": "hi"})
                assert r.status_code == 200 and r.json() == {"delivered": 1}
                assert (await app.recv_type("notify"))["data"] == "hi"
            finally:
                replacement.stop()


async def test_master_restart_under_connection_churn():
    """Apps come and go while the master restarts: afterwards presence is exact.

    The workers re-announce their apps when they register again; an app that
    connects or leaves while that registration is in flight must not be lost.
    """
    with cluster(2) as (master, workers):
        ids = {w.url: worker_id(w) for w in workers}
        replacement = master_proc(*master_args(), port=master.port)
        kept: dict[str, str] = {}  # client -> worker id, still connected at the end
        closed: list[str] = []
        stop, finish = trio.Event(), trio.Event()
        prefix = unique("churn")
        counter = iter(range(1_000_000))

        async def hold(base: str, client: str, opened: trio.Event) -> None:
            async with connect(base, "/v1/app", client=client):
                kept[client] = ids[base]
                opened.set()
                await finish.wait()

        churning = [0]  # churn tasks still running

        async def churn(base: str, nursery: trio.Nursery) -> None:
            churning[0] += 1
            try:
                while not stop.is_set():
                    client = f"{prefix}-{next(counter)}"
                    if next(counter) % 5 == 0:
                        opened = trio.Event()
                        nursery.start_soon(hold, base, client, opened)
                        await opened.wait()
                    else:
                        async with connect(base, "/v1/app", client=client):
                            await trio.sleep(0.002)  # connected a moment: the churn itself
                        closed.append(client)
            finally:
                churning[0] -= 1

        async def churned(closes: int, holds: int = 0):
            return len(closed) >= closes and len(kept) >= holds

        async with http_client() as http, trio.open_nursery() as nursery:
            for w in workers:
                for _ in range(2):
                    nursery.start_soon(churn, w.url, nursery)
            await wait_for(lambda: churned(20, 4), what="churn before the restart")
            await trio.to_thread.run_sync(master.kill9)
            await trio.to_thread.run_sync(replacement.start)
            try:
                await wait_registered(http, replacement, list(ids.values()))
                # keep churning past the re-registrations
                target = len(closed) + 20
                await wait_for(lambda: churned(target), what="churn after the restart")
                stop.set()

                async def churners_done():
                    return churning[0] == 0

                await wait_for(churners_done, what="the churners finishing their connection")

                async def settled(client: str, want: list[dict]) -> bool:
                    body = await get_json(http, f"{replacement.http}/v1/clients/{client}")
                    return body["connections"] == want

                expected = [(c, [{"worker": w, "device": "default"}]) for c, w in kept.items()]
                expected += [(c, []) for c in closed]
                limit = trio.CapacityLimiter(16)

                async def check(client: str, want: list[dict]) -> None:
                    async with limit:
                        await wait_for(lambda: settled(client, want), timeout=5,
                                       what=f"presence of {client} = {want}")

                with trio.fail_after(20):
                    async with trio.open_nursery() as checks:
                        for client, want in expected:
                            checks.start_soon(check, client, want)
                print(f"\n[liveness] churn across the master restart: {len(kept)} apps kept, "
                      f"{len(closed)} came and went; presence exact")
                assert len(kept) >= 10 and len(closed) >= 40
            finally:
                finish.set()
                replacement.stop()


async def test_stopped_worker_leaves_at_once_and_its_clients_reconnect_elsewhere():
    """SIGTERM: the worker drains (its sessions handed over) and leaves the registry
    before closing its clients with 4503, so the master never sends them back to
    it (no waiting for the lease)."""
    with cluster(2, lease=30) as (master, (leaving, staying)):
        lid, sid = worker_id(leaving), worker_id(staying)
        session = unique("moving")
        async with http_client() as http:
            async with follow(leaving.url, f"/v1/chat/{session}", client=unique("a")) as chat:
                assert chat.welcome["worker"] == lid
                stopped = time.monotonic()
                await trio.to_thread.run_sync(leaving.stop)
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await chat.recv()
                assert closed.value.reason.code == 4503
                body = await get_json(http, f"{master.http}/v1/workers")
                assert [w["id"] for w in body["workers"]] == [sid]
                assert time.monotonic() - stopped < 5  # far below the 30 s lease
                # handed over to the survivor by the drain, not forgotten
                moved = await get_json(http, f"{master.http}/v1/sessions/{session}")
                assert moved["worker"] == sid
            # reopening through the master lands on the survivor
            async with follow(ws_base(master), f"/v1/chat/{session}", client=unique("b")) as again:
                assert again.welcome["worker"] == sid


async def test_crashed_worker_leaves_after_the_grace_a_silent_one_after_the_lease():
    """kill -9 closes the worker's control link at once: gone from /v1/workers after the
    dead-link grace (1 s). SIGSTOP keeps the link open but silent: listed until the lease."""
    lease = 3.0
    with cluster(3, lease=lease) as (master, (crashed, frozen, healthy)):
        cid, fid, hid = worker_id(crashed), worker_id(frozen), worker_id(healthy)
        session = unique("crash")
        async with http_client() as http, \
                follow(crashed.url, f"/v1/chat/{session}", client=unique("m")):
            await get_json(http, f"{master.http}/v1/sessions/{session}")

            async def listed() -> list[str]:
                body = await get_json(http, f"{master.http}/v1/workers")
                return sorted(w["id"] for w in body["workers"])

            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                stopped = killed = time.monotonic()
                await trio.to_thread.run_sync(crashed.kill9)
                await wait_for(lambda: _without(listed, cid), timeout=5, interval=0.01,
                               what=f"{cid} dropped")
                dropped = time.monotonic() - killed
                print(f"\n[liveness] kill -9'd worker left /v1/workers {dropped:.2f}s after the kill "
                      f"(grace 1.0s, lease {lease}s)")
                assert dropped <= 1.5, dropped
                # its session went with it, and nobody is sent there
                await get_json(http, f"{master.http}/v1/sessions/{session}", status=404)
                for _ in range(4):
                    assert (await get_json(http, f"{master.http}/v1/assign?client=x"))["worker"] != cid
                # the silent one is still listed past the grace, and leaves at its lease
                assert await listed() == sorted([fid, hid])
                await wait_for(lambda: _without(listed, fid), timeout=lease + 3, interval=0.02,
                               what=f"{fid} dropped")
                silent = time.monotonic() - stopped
                print(f"[liveness] SIGSTOP'd worker (link open) left after {silent:.2f}s")
                assert silent >= lease - 0.6, silent  # its last heartbeat was <= 0.5 s before the stop
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            # woken up, it finds the master forgot it and registers again
            await wait_registered(http, master, [fid, hid])


async def _without(listed, wid: str) -> bool:
    return wid not in await listed()
