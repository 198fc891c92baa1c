"""PROTOCOL.md "Consistency": presence before welcome, replacement in the order of welcomes.

Real master and workers on loopback, real WebSocket clients; every loop is
bounded in count and time.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.procs import Proc

from .cluster import get_json, http_client, worker_id
from .wsclient import connect, unique

pytestmark = pytest.mark.timeout(120)

ITERATIONS = 200
REPLACEMENTS = 25  # per order: 50 in all


async def test_login_then_push_never_misses(two: tuple[Proc, list[Proc]]) -> None:
    """An app's welcome means the master has it: a notify by client from a
    consumer on the other worker, and one via POST /v1/notify, both reach it."""
    master, workers = two
    rng = random.Random(9)
    latencies: list[float] = []
    async with http_client() as http, \
            connect(workers[0].url, "/v1/consumer", name=unique("push0")) as c0, \
            connect(workers[1].url, "/v1/consumer", name=unique("push1")) as c1:
        consumers = [c0, c1]
        for i in range(ITERATIONS):
            home = rng.randrange(2)
            client = unique(f"login{i}")
            started = time.perf_counter()
            async with connect(workers[home].url, "/v1/app", client=client) as app:
                latencies.append(time.perf_counter() - started)
                assert "presence" not in app.welcome, app.welcome  # recorded, not local
                other = consumers[1 - home]
                ack = await other.request({"type": "notify", "to": {"client": client}, "data": i,
                                           "id": f"n{i}"})
                assert ack == {"type": "ack", "id": f"n{i}", "delivered": 1}, (i, ack)
                r = await http.post(f"{master.http}/v1/notify", json={"to": {"client": client}, "data": -i})
                assert r.status_code == 200 and r.json() == {"delivered": 1}, (i, r.text)
                got = [(await app.recv_type("notify"))["data"] for _ in range(2)]
                assert sorted(got) == sorted([i, -i])
                listed = await get_json(http, f"{master.http}/v1/clients/{client}")
                assert listed["online"] and listed["connections"] == [
                    {"worker": worker_id(workers[home]), "device": "default"}]
    ms = sorted(x * 1000 for x in latencies)
    print(f"\n[consistency] {ITERATIONS}/{ITERATIONS} pushes right after welcome delivered; "
          f"connect-to-welcome p50 {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms")


async def _replace(first: Proc, second: Proc) -> None:
    client = unique("twin")
    async with connect(first.url, "/v1/app", client=client, device="d") as older, \
            connect(second.url, "/v1/app", client=client, device="d") as newer:
        assert await older.expect_close(4009)
        with trio.move_on_after(0.3):  # the newer one is never kicked
            try:
                while True:
                    frame = await newer.recv(timeout=1)
                    assert frame["type"] != "error", frame
            except ConnectionClosed as exc:
                raise AssertionError(f"the newer connection was closed: {exc.reason}") from None


async def test_replacement_follows_the_order_of_welcomes(two: tuple[Proc, list[Proc]]) -> None:
    """The same (client, device) on two workers, back to back: always the older gets 4009."""
    _, (a, b) = two
    for _ in range(REPLACEMENTS):
        await _replace(a, b)
        await _replace(b, a)


async def test_simultaneous_twins_leave_exactly_one(two: tuple[Proc, list[Proc]]) -> None:
    """Both handshakes at once, on different workers: one survives, one is replaced."""
    _, (a, b) = two
    for _ in range(10):
        await _race(a, b, unique("race"))


async def _race(a: Proc, b: Proc, client: str) -> None:
    outcomes: dict[str, str] = {}

    async def hold(worker: Proc, key: str) -> None:
        async with connect(worker.url, "/v1/app", client=client, device="d") as app:
            try:
                with trio.fail_after(3):
                    while True:
                        await app.recv(timeout=3)
            except ConnectionClosed as exc:
                outcomes[key] = str(exc.reason.code)
            except trio.TooSlowError:
                outcomes[key] = "open"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, a, "a")
        nursery.start_soon(hold, b, "b")
    assert sorted(outcomes.values()) == ["4009", "open"], outcomes
