"""Losing a master, losing Redis: two masters on one redis-server, four workers, 100 chat sessions.

Workers w1, w2 take ``--master A,B`` and w3, w4 ``--master B,A``; every SDK
client takes ``A,B``. The figures (how long the workers took to move, errors
while Redis was down) are printed for the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpx
import pytest
import trio

import mc
from tests.procs import Proc, master_proc, running, worker_proc
from tests.redisproc import RedisProc, available, redis_server

from .cluster import LINGER, get_json, http_client, wait_for, wait_registered, worker_id
from .wsclient import unique

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not available(), reason="no redis-server (apt-get install redis-server)"),
]

LEASE = 2.0
SESSIONS = 100
MOVE_WITHIN = 2.0


def _master(redis: RedisProc, name: str, port: int | None = None) -> Proc:
    return master_proc("--lease", str(LEASE), "--store", redis.url, "--master-id", name, port=port)


def _worker(*masters: Proc) -> Proc:
    return worker_proc("--master", ",".join(m.http for m in masters), "--chat-linger", str(LINGER))


Setup = tuple[RedisProc, Proc, Proc, list[Proc]]


@pytest.fixture
def setup() -> Iterator[Setup]:
    with redis_server() as redis:
        a, b = _master(redis, "A"), _master(redis, "B")
        with running(a, b):
            workers = [_worker(a, b), _worker(a, b), _worker(b, a), _worker(b, a)]
            with running(*workers):
                yield redis, a, b, workers


def linked_to(redis: RedisProc, wid: str) -> str | None:
    """The master the store says ``wid`` is linked to."""
    reply = redis.command("HGET", "{mc}:w:" + wid, "master")
    if reply.startswith(b"$-1"):
        return None
    return reply.split(b"\r\n")[1].decode()


class Load:
    """SESSIONS chats sending all the time, plus a new chat opened every 20 ms; failures timed."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.sent = 0
        self.opened = 0
        self.failures: list[tuple[float, str]] = []

    async def run(self, chats: list[mc.Chat], nursery: trio.Nursery) -> None:
        for chat in chats:
            nursery.start_soon(self._sender, chat)
        nursery.start_soon(self._opener)

    async def _sender(self, chat: mc.Chat) -> None:
        while True:
            began = time.monotonic()
            try:
                await chat.send("x")
                self.sent += 1
            except mc.McError as exc:
                self.failures.append((began, f"send: {exc}"))
            await trio.sleep(0.2)

    async def _opener(self) -> None:
        while True:
            began = time.monotonic()  # a failure counts when the attempt began
            try:
                async with mc.open_chat(self.entry, unique("new"), client="n", connect_timeout=5):
                    self.opened += 1
            except mc.McError as exc:
                self.failures.append((began, f"open: {exc}"))
            await trio.sleep(0.02)


async def test_kill_9_of_a_master_under_chat_load(setup: Setup) -> None:
    redis, a, b, workers = setup
    ids = [worker_id(w) for w in workers]
    entry = f"{a.http},{b.http}"
    async with http_client() as http, AsyncExitStack() as stack:
        for m in (a, b):
            await wait_registered(http, m, ids)
        rooms = [unique("room") for _ in range(SESSIONS)]
        chats = []
        for room in rooms:
            chats.append(await stack.enter_async_context(mc.open_chat(entry, room, client="m")))
        owners = {room: chat.worker for room, chat in zip(rooms, chats, strict=True)}
        on_a = [w for w in ids if linked_to(redis, w) == "A"]
        assert len(on_a) == 2, {w: linked_to(redis, w) for w in ids}
        load = Load(entry)
        async with trio.open_nursery() as nursery:
            await load.run(chats, nursery)
            await trio.sleep(0.5)  # load running before the kill
            a.kill9()
            killed = time.monotonic()
            moved: dict[str, float] = {}
            with trio.fail_after(10):
                while len(moved) < len(on_a):
                    for w in on_a:
                        if w not in moved and linked_to(redis, w) == "B":
                            moved[w] = time.monotonic() - killed
                    await trio.sleep(0.01)
            window_end = killed + MOVE_WITHIN
            await trio.sleep(max(0.0, window_end - time.monotonic()) + 1.5)  # load after the window
            # no session lost its owner
            for room in rooms:
                got = await get_json(http, f"{b.http}/v1/sessions/{room}")
                assert got["worker"] == owners[room], room
            # the killed master restarted rejoins
            restarted = _master(redis, "A", port=a.port)
            await trio.to_thread.run_sync(restarted.start)
            try:
                await wait_registered(http, restarted, ids)
                room = unique("back")
                async with mc.open_chat(restarted.http, room, client="r", connect_timeout=5) as chat:
                    assert (await get_json(http, f"{b.http}/v1/sessions/{room}"))["worker"] == chat.worker
                nursery.cancel_scope.cancel()
            finally:
                restarted.stop()
        late = [f for f in load.failures if f[0] > window_end]
        print(f"\n[failover] workers of the killed master moved in "
              f"{', '.join(f'{t:.2f} s' for t in sorted(moved.values()))}; "
              f"{load.sent} sends, {load.opened} new chats, "
              f"{len(load.failures)} failures ({len(late)} after the {MOVE_WITHIN} s window)"
              + "".join(f"\n  {t - killed:+.2f} s: {why}" for t, why in load.failures[:5]))
        assert max(moved.values()) < MOVE_WITHIN, moved
        assert late == [], late[:5]
        assert load.opened > 10 and load.sent > SESSIONS


async def test_redis_restart_heals_within_a_lease(setup: Setup) -> None:
    redis, a, b, workers = setup
    ids = [worker_id(w) for w in workers]
    entry = f"{a.http},{b.http}"
    async with http_client() as http, AsyncExitStack() as stack:
        for m in (a, b):
            await wait_registered(http, m, ids)
        rooms = [unique("room") for _ in range(20)]
        owners = {}
        for room in rooms:
            chat = await stack.enter_async_context(mc.open_chat(entry, room, client="m"))
            owners[room] = chat.worker
        x = unique("x")
        await stack.enter_async_context(mc.connect_app(entry, client=x))
        redis.kill()  # everything in it is gone
        statuses: dict[int, int] = {}
        down_until = time.monotonic() + 1.0
        while time.monotonic() < down_until:  # what clients see while Redis is down
            for m in (a, b):
                try:
                    r = await http.get(f"{m.http}/v1/sessions/{rooms[0]}", timeout=3)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                except httpx.HTTPError:
                    statuses[0] = statuses.get(0, 0) + 1
            await trio.sleep(0.05)
        for m in (a, b):
            assert (await http.get(f"{m.http}/healthz")).status_code == 200  # no crash
        redis.start()
        started = time.monotonic()

        async def healed() -> bool:
            for m in (a, b):
                body = await get_json(http, f"{m.http}/v1/workers")
                if {w["id"] for w in body["workers"]} != set(ids):
                    return False
            for room in rooms:
                r = await http.get(f"{b.http}/v1/sessions/{room}")
                if r.status_code != 200 or r.json()["worker"] != owners[room]:
                    return False
            r = await http.get(f"{a.http}/v1/clients/{x}")
            return r.status_code == 200 and r.json()["online"]

        await wait_for(healed, timeout=LEASE + 3, interval=0.05, what="the store rebuilt by the workers")
        took = time.monotonic() - started
        print(f"\n[redis restart] answers while down: {statuses}; rebuilt {took:.2f} s after restart")
        assert set(statuses) <= {503}, statuses
        assert took <= LEASE + 1
