"""A real worker against a fake master: the worker's side of the control link.

The fake master speaks the control link (mc/protocol/control.py, msgpack)
and lets the test decide when to answer, which a real master never waits
for: so the moments a real cluster passes through in a few milliseconds
(apps coming and going while a registration is in flight, a conflict
answered at registration) happen here every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from tests.procs import Proc, free_port, worker_proc

from .cluster import wait_for, worker_id
from .wsclient import connect, http_get, unique

pytestmark = pytest.mark.timeout(60)


class FakeMaster:
    """Accepts control links on ``port``; each link is handed to the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.links_send, self.links = trio.open_memory_channel[Any](10)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            link = Link(ws)
            await self.links_send.send(link)
            await link.closed.wait()  # the test ends the link (or the worker does)

        await serve_websocket(handler, "127.0.0.1", self.port, ssl_context=None, task_status=task_status)

    async def next_link(self, timeout: float = 10) -> Link:
        with trio.fail_after(timeout):
            return await self.links.receive()


class Link:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.closed = trio.Event()
        self.pending: list[dict] = []

    async def receive(self, timeout: float = 5) -> dict:
        """The next control message (frames may hold a batch)."""
        with trio.fail_after(timeout):
            while not self.pending:
                decoded = msgpack.unpackb(await self.ws.get_message(), raw=False)
                self.pending.extend(decoded if isinstance(decoded, list) else [decoded])
        return self.pending.pop(0)

    async def receive_type(self, kind: str, timeout: float = 5) -> dict:
        """The next message of type ``kind``, skipping others (heartbeats)."""
        with trio.fail_after(timeout):
            while True:
                msg = await self.receive(timeout)
                if msg.get("type") == kind:
                    return msg

    async def send(self, msg: dict) -> None:
        await self.ws.send_message(msgpack.packb(msg, use_bin_type=True))

    async def registered(self, conflicts: list[str] = ()) -> None:
        await self.send({"type": "registered", "lease": 5, "interval": 0.1, "conflicts": list(conflicts)})

    async def close(self) -> None:
        await self.ws.aclose()
        self.closed.set()


async def presence_of(link: Link) -> dict:
    """The next presence report that carries any change."""
    while True:
        msg = await link.receive_type("presence")
        if msg["added"] or msg["removed"]:
            return msg


async def answer_claims(link: Link, worker: Proc) -> None:
    """Play the master for chat claims: every session goes to ``worker``."""
    while True:
        msg = await link.receive(timeout=60)
        if msg.get("type") == "claim":
            await link.send({"type": "owner", "id": msg["id"], "worker": worker_id(worker),
                             "url": worker.url})


async def connections(worker: Proc) -> int:
    status, _, body = await http_get(worker.url, "/healthz")
    assert status == 200
    return orjson.loads(body)["connections"]


@asynccontextmanager
async def worker_with_fake_master() -> AsyncIterator[tuple[FakeMaster, Proc, Link]]:
    """A worker linked to a fake master, past its first registration."""
    master = FakeMaster()
    worker = worker_proc("--master", master.http)
    async with trio.open_nursery() as nursery:
        await nursery.start(master.serve)
        await trio.to_thread.run_sync(worker.start)
        try:
            link = await master.next_link()
            register = await link.receive()
            assert (register["type"], register["worker"], register["presence"]) == (
                "register", worker_id(worker), [])
            await link.registered()
            yield master, worker, link
        finally:
            await trio.to_thread.run_sync(worker.stop)
            nursery.cancel_scope.cancel()


async def test_apps_that_come_and_go_while_registering_are_reported():
    """The registration carries the apps as they were when it was sent; those
    that connect or leave before the master answered are reported right after."""
    async with worker_with_fake_master() as (master, worker, first):
        leaving, arriving = unique("leaving"), unique("arriving")
        async with connect(worker.url, "/v1/app", client=leaving) as app:
            assert (await presence_of(first))["added"] == [[leaving, "default"]]
            await first.close()  # the link drops: the worker registers again
            second = await master.next_link()
            register = await second.receive()
            assert (register["type"], register["presence"]) == ("register", [[leaving, "default"]])
            # before the master answers: one app arrives, the other goes
            async with connect(worker.url, "/v1/app", client=arriving):
                await app.ws.aclose()

                async def only_arriving_left():
                    return await connections(worker) == 1

                await wait_for(only_arriving_left, what="the worker seeing the app go")
                await second.registered()
                change = await presence_of(second)
                assert change["added"] == [[arriving, "default"]], change
                assert change["removed"] == [[leaving, "default"]], change


async def test_a_conflict_at_registration_closes_the_session_with_4503():
    """The master answers a registration with the sessions another worker owns
    now: the worker closes its copy (members get 4503) and keeps the rest."""
    async with worker_with_fake_master() as (master, worker, first):
        lost, kept = unique("lost"), unique("kept")
        async with trio.open_nursery() as claims:
            claims.start_soon(answer_claims, first, worker)
            async with connect(worker.url, f"/v1/chat/{lost}", client=unique("a")) as a, \
                    connect(worker.url, f"/v1/chat/{kept}", client=unique("b")) as b:
                claims.cancel_scope.cancel()
                await first.close()
                second = await master.next_link()
                register = await second.receive()
                assert (register["type"], register["sessions"]) == ("register", {lost: 1, kept: 1})
                await second.registered(conflicts=[lost])
                await a.expect_close(4503)
                # the other session is untouched, and a's is gone from the worker
                assert (await b.ack({"type": "send", "data": "still", "id": "s"}))["seq"] == 1
                report = await second.receive_type("heartbeat")
                assert report["metrics"]["sessions"] == 1
