"""Two masters on one real Redis (PROTOCOL.md "Several masters"), each with a worker linked to it.

Master A links worker wa, master B links worker wb; both masters serve the
whole API from the shared store: the same owner in every 307, one owner per
claim race, notifies and kicks routed to the other master's worker, dedup
across masters.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import mc
from tests.procs import Proc, master_proc, running
from tests.redisproc import RedisProc, available, redis_server

from .cluster import (
    get_json,
    http_client,
    redirect_of,
    wait_for,
    wait_presence,
    wait_registered,
    worker_for,
    worker_id,
)
from .wsclient import connect, unique

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not available(), reason="no redis-server (apt-get install redis-server)"),
]

Pair = tuple[RedisProc, Proc, Proc, Proc, Proc]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with redis_server() as redis:
        a = master_proc("--lease", "2", "--store", redis.url, "--master-id", "A")
        b = master_proc("--lease", "2", "--store", redis.url, "--master-id", "B")
        with running(a, b):
            wa, wb = worker_for(a), worker_for(b)
            with running(wa, wb):
                trio.run(_registered, a, b, [worker_id(wa), worker_id(wb)])
                yield redis, a, b, wa, wb


async def _registered(a: Proc, b: Proc, ids: list[str]) -> None:
    async with http_client() as http:
        for m in (a, b):
            await wait_registered(http, m, ids)


async def test_both_masters_list_the_same_workers_and_version(pair: Pair) -> None:
    _, a, b, wa, wb = pair
    async with http_client() as http:
        la, lb = await get_json(http, f"{a.http}/v1/workers"), await get_json(http, f"{b.http}/v1/workers")
        for m in (a, b):  # the figures pages read the shared store too
            assert (await http.get(f"{m.http}/metrics")).status_code == 200
            assert (await http.get(f"{m.http}/v1/stats")).status_code == 200
    assert la["version"] == lb["version"]
    assert {w["id"] for w in la["workers"]} == {w["id"] for w in lb["workers"]} == {
        worker_id(wa), worker_id(wb)}


async def test_redirect_names_the_same_owner_from_either_master(pair: Pair) -> None:
    _, a, b, _, wb = pair
    room = unique("room")
    async with connect(wb.url, f"/v1/chat/{room}", client="owner") as chat:
        assert chat.welcome["worker"] == worker_id(wb)
        for m in (a, b):
            location = await redirect_of(m.http.replace("http", "ws"), f"/v1/chat/{room}", client="x")
            assert location.startswith(wb.url), location
        async with http_client() as http:
            for m in (a, b):
                assert (await get_json(http, f"{m.http}/v1/sessions/{room}"))["worker"] == worker_id(wb)
                listed = await get_json(http, f"{m.http}/v1/sessions")  # the dashboard's list
                assert any(s["session"] == room and s["worker"] == worker_id(wb) for s in listed["sessions"])


async def test_claim_race_across_masters_ends_with_one_owner(pair: Pair) -> None:
    _, a, b, _, _ = pair
    for _ in range(3):
        room = unique("race")
        owners: list[str | None] = []
        checked = trio.Event()

        async def join(i: int, room: str, owners: list[str | None], checked: trio.Event) -> None:
            via = (a, b)[i % 2].http
            async with mc.open_chat(via, room, client=f"c{i}", connect_timeout=5) as chat:
                owners.append(chat.worker)
                await checked.wait()  # stay in until all eight are

        async def all_in(owners: list[str | None] = owners) -> bool:
            return len(owners) == 8

        async with trio.open_nursery() as nursery, http_client() as http:
            for i in range(8):
                nursery.start_soon(join, i, room, owners, checked)
            await wait_for(all_in, what="eight members in")
            assert len(set(owners)) == 1, owners
            for m in (a, b):
                assert (await get_json(http, f"{m.http}/v1/sessions/{room}"))["worker"] == owners[0]
            checked.set()


async def test_notify_through_one_master_reaches_an_app_linked_to_the_other(pair: Pair) -> None:
    _, a, _, wa, wb = pair
    x, z = unique("x"), unique("z")
    async with connect(wb.url, "/v1/app", client=x) as app_b, \
            connect(wa.url, "/v1/app", client=z) as app_a, http_client() as http:
        await wait_presence(http, a, x, [{"worker": worker_id(wb), "device": "default"}])
        resp = await http.post(f"{a.http}/v1/notify", json={"to": {"client": x}, "data": {"n": 1}})
        assert resp.status_code == 200 and resp.json() == {"delivered": 1}
        assert (await app_b.recv_type("notify"))["data"] == {"n": 1}
        await app_a.expect_silence()
        resp = await http.post(f"{a.http}/v1/notify", json={"to": {}, "data": "all"})
        assert resp.json()["delivered"] >= 2  # both apps (others of this module may be open too)
        assert (await app_b.recv_type("notify"))["data"] == "all"
        assert (await app_a.recv_type("notify"))["data"] == "all"
        # a consumer on wa (linked to A) notifies the app on wb (linked to B)
        async with connect(wa.url, "/v1/consumer", name=unique("svc")) as consumer:
            ack = await consumer.ack({"type": "notify", "to": {"client": x}, "data": 2, "id": unique("n")})
            assert ack["delivered"] == 1
            assert (await app_b.recv_type("notify"))["data"] == 2


async def test_presence_and_replacement_across_masters(pair: Pair) -> None:
    _, a, b, wa, wb = pair
    y = unique("y")
    async with http_client() as http:
        async with connect(wa.url, "/v1/app", client=y, device="phone") as older:
            for m in (a, b):
                await wait_presence(http, m, y, [{"worker": worker_id(wa), "device": "phone"}])
            async with connect(wb.url, "/v1/app", client=y, device="phone"):
                assert await older.expect_close(4009)  # kicked by master A on B's word
                for m in (a, b):
                    await wait_presence(http, m, y, [{"worker": worker_id(wb), "device": "phone"}])
        for m in (a, b):
            await wait_presence(http, m, y, [])


async def test_notify_id_dedup_across_masters(pair: Pair) -> None:
    _, a, b, _, _ = pair
    nid = unique("once")
    async with http_client() as http:
        first = await http.post(f"{a.http}/v1/notify", json={"to": {}, "data": 1, "id": nid})
        assert first.status_code == 200
        again = await http.post(f"{b.http}/v1/notify", json={"to": {}, "data": 1, "id": nid})
        assert again.status_code == 409, again.text


async def test_drain_through_the_other_master(pair: Pair) -> None:
    _, a, b, wa, _ = pair
    wid = worker_id(wa)
    async with http_client() as http:
        assert (await http.post(f"{b.http}/v1/workers/{wid}/drain")).status_code == 202

        async def drained_everywhere() -> bool:
            for m in (a, b):
                body = await get_json(http, f"{m.http}/v1/workers")
                if {w["id"]: w["state"] for w in body["workers"]}.get(wid) != "drained":
                    return False
            return True

        await wait_for(drained_everywhere, what="wa drained (told through master A)")
        assert (await http.delete(f"{b.http}/v1/workers/{wid}/drain")).status_code == 200

        async def up() -> bool:
            body = await get_json(http, f"{a.http}/v1/workers")
            return {w["id"]: w["state"] for w in body["workers"]}.get(wid) == "up"

        await wait_for(up, what="wa back up")
