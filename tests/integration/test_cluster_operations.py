"""PROTOCOL.md "Operations": drain with hand-off, undrain, rebalance.

Real master and workers; chat members and apps are the Python SDK (which
reconnects through the master on 4503), so what is measured is what a user
sees. Every loop is bounded in count and time.
"""

from __future__ import annotations

import statistics
import time
from contextlib import AsyncExitStack

import pytest
import trio

import mc
from tests.procs import Proc, master_proc, running

from .cluster import cluster, get_json, http_client, wait_for, wait_registered, worker_for, worker_id
from .wsclient import unique

pytestmark = pytest.mark.timeout(150)

SESSIONS = 50


async def test_drain_hands_chat_sessions_over() -> None:
    """50 two-member sessions on one owner exchanging messages; drain the owner:
    every member is back on another worker within 2 s, seq keeps increasing,
    no open_chat fails; undrain brings the worker back into /v1/assign."""
    with cluster(1) as (master, (a,)):
        aid = worker_id(a)
        url = master.http
        async with http_client() as http, AsyncExitStack() as stack:
            rooms = [unique(f"handoff{i}") for i in range(SESSIONS)]
            pairs = []
            for room in rooms:  # only a is there yet: it owns every session
                first = await stack.enter_async_context(mc.open_chat(url, room, client="x"))
                second = await stack.enter_async_context(mc.open_chat(url, room, client="y"))
                assert first.worker == aid and second.worker == aid
                pairs.append((first, second))
            b = stack.enter_context(running(worker_for(master)))[0]
            await wait_registered(http, master, [aid, worker_id(b)])
            last_seq = {room: await p[0].send("before") for room, p in zip(rooms, pairs, strict=True)}
            assert set(last_seq.values()) == {1}

            drained_at = time.monotonic()
            assert (await http.post(f"{url}/v1/workers/{aid}/drain")).status_code == 202
            back: list[float] = []

            async def rejoin(room: str, first: mc.Chat, second: mc.Chat) -> None:
                with trio.fail_after(10):
                    while first.worker in (None, aid) or second.worker in (None, aid):
                        await trio.sleep(0.01)
                    seq = await first.send("after")
                back.append(time.monotonic() - drained_at)
                assert seq > last_seq[room], (room, seq)
                with trio.fail_after(5):
                    async for event in second:
                        if isinstance(event, mc.ChatMessage) and event.data == "after":
                            assert event.seq == seq
                            break

            async with trio.open_nursery() as nursery:
                for room, (first, second) in zip(rooms, pairs, strict=True):
                    nursery.start_soon(rejoin, room, first, second)
            print(f"\n[operations] drain hand-off: {SESSIONS} sessions back in "
                  f"median {statistics.median(back):.2f} s, max {max(back):.2f} s")
            assert max(back) < 2.0
            owners = {(await get_json(http, f"{url}/v1/sessions/{room}"))["worker"] for room in rooms}
            assert owners == {worker_id(b)}

            async def drained() -> bool:
                body = await get_json(http, f"{url}/v1/workers")
                return {w["id"]: w["state"] for w in body["workers"]}[aid] == "drained"

            await wait_for(drained, what="drained")
            assert (await http.delete(f"{url}/v1/workers/{aid}/drain")).status_code == 200
            assigned = {(await get_json(http, f"{url}/v1/assign?client={unique('u')}"))["worker"]
                        for _ in range(6)}
            assert aid in assigned


async def test_exit_when_drained() -> None:
    with cluster(1) as (master, _), running(worker_for(master, "--exit-when-drained")) as (w,):
        async with http_client() as http:
            await wait_registered(http, master, [worker_id(w)])
            async with mc.connect_app(master.http, client=unique("leaver"), connect_timeout=5):
                assert (await http.post(f"{master.http}/v1/workers/{worker_id(w)}/drain")).status_code == 202
                with trio.fail_after(10):
                    while w.popen is not None and w.popen.poll() is None:
                        await trio.sleep(0.05)
        assert w.popen is not None and w.popen.returncode == 0


async def _connections(http, master: Proc) -> dict[str, int]:
    stats = await get_json(http, f"{master.http}/v1/stats")
    return {w["id"]: w["connections"] for w in stats["workers"]}


async def test_rebalance_after_a_worker_joins() -> None:
    """1,000 apps on one worker; a second joins; the imbalance lasting past
    --rebalance-after makes the first shed idle apps down to the mean; chat
    members are never shed."""
    master = master_proc("--lease", "2", "--rebalance-after", "2")
    first = worker_for(master, "--max-connections", "5000")
    with running(master, first):
        async with http_client() as http, AsyncExitStack() as stack:
            await wait_registered(http, master, [worker_id(first)])
            member = await stack.enter_async_context(mc.open_chat(master.http, unique("stay"), client="m"))
            for i in range(1000):
                await stack.enter_async_context(mc.connect_app(master.http, client=f"r{i}"))

            async def all_there() -> bool:
                return (await _connections(http, master)).get(worker_id(first), 0) >= 1001

            await wait_for(all_there, what="1,001 connections reported")
            with running(worker_for(master)) as (second,):
                started = time.monotonic()

                async def balanced() -> dict[str, int] | None:
                    conns = await _connections(http, master)
                    if len(conns) < 2 or sum(conns.values()) < 1001:  # the shed apps are all back
                        return None
                    mean = sum(conns.values()) / len(conns)
                    return conns if max(conns.values()) <= 1.25 * mean else None

                conns = await wait_for(balanced, timeout=30, interval=0.25, what="balanced workers")
                print(f"\n[operations] rebalance converged in {time.monotonic() - started:.1f} s: {conns}")
                assert conns[worker_id(first)] >= 500  # never shed below the mean (1001 / 2)
                assert member.worker == worker_id(first)  # the chat member stayed
                assert worker_id(second) in conns
