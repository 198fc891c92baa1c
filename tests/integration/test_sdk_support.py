"""Shared by the SDK and CLI integration tests: bounded waits on SDK objects.

(Named ``test_sdk_*`` only to live beside the tests it serves; it holds no
tests.) Clusters come from tests/integration/cluster.py: real processes on
loopback, a master with a 2 s lease, workers registered before the test
starts, everything stopped by PID afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio

from .cluster import cluster, wait_for, wait_registered_sync, worker_id  # noqa: F401  (re-exported)
from .wsclient import unique  # noqa: F401  (re-exported: names no other run uses)


async def eventually(check: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll the plain predicate ``check`` until it holds; fail after ``timeout`` seconds."""
    async def probe() -> object:
        return check()

    await wait_for(probe, timeout=timeout, interval=0.02, what=what)


async def online(master: Any, client: str, connections: int = 1, timeout: float = 5.0) -> None:
    """Until the master's presence shows ``connections`` of ``client`` (bounded).

    Workers report presence to the master in batches (every 0.5 s), and a
    notify naming a client reaches other workers through that presence, so a
    test notifying a client that just connected waits for it first.
    """
    async with httpx.AsyncClient(timeout=2) as http:
        async def probe() -> bool:
            body = (await http.get(f"{master.http}/v1/clients/{client}")).json()
            return len(body["connections"]) >= connections

        await wait_for(probe, timeout=timeout, what=f"{client} online x{connections}")


async def receive(source: Any, timeout: float = 5.0) -> Any:
    """The next event of an SDK object, bounded."""
    with trio.fail_after(timeout):
        return await source.receive()


async def first(stream: Any, timeout: float = 5.0) -> Any:
    """The first item of an async iterator, bounded; fails if the stream ends first.

    For checks that would otherwise sit inside ``async for ...: assert ...; break``,
    whose assertion silently never runs when the stream ends without an item.
    """
    with trio.fail_after(timeout):
        async for item in stream:
            return item
    raise AssertionError(f"{stream!r} ended without an item")


async def nothing_more(source: Any, duration: float = 0.3) -> None:
    """No further event arrives within ``duration``."""
    with trio.move_on_after(duration):
        event = await source.receive()
        raise AssertionError(f"expected nothing, got {event!r}")


async def drain(source: Any, quiet: float = 0.3) -> list[Any]:
    """Every event that arrives until ``quiet`` seconds pass without one."""
    got = []
    while True:
        with trio.move_on_after(quiet):
            got.append(await source.receive())
            continue
        return got
