"""Notifications across workers (consumer frames and POST /v1/notify) and presence."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

import orjson
import pytest
import trio

import mc

from .cluster import get_json, http_client, wait_for, wait_presence, worker_id
from .wsclient import MSGPACK, connect, unique

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def fleet(master, wa, wb):
    """Four apps over both workers, their presence known to the master.

    A: x (device d1, tag driver), z (no tags)
    B: y (device phone, tag driver), y (device tablet, tag rider)
    """
    x, y, z = unique("x"), unique("y"), unique("z")
    driver, rider = unique("driver"), unique("rider")
    async with AsyncExitStack() as stack, http_client() as http:
        apps = {
            "x": await stack.enter_async_context(
                connect(wa.url, "/v1/app", client=x, device="d1", tags=driver)),
            "z": await stack.enter_async_context(connect(wa.url, "/v1/app", client=z)),
            "y-phone": await stack.enter_async_context(
                connect(wb.url, "/v1/app", client=y, device="phone", tags=f"{driver},other")),
            "y-tablet": await stack.enter_async_context(
                connect(wb.url, "/v1/app", client=y, device="tablet", tags=rider)),
        }
        a, b = worker_id(wa), worker_id(wb)
        await wait_presence(http, master, x, [{"worker": a, "device": "d1"}])
        await wait_presence(http, master, z, [{"worker": a, "device": "default"}])
        await wait_presence(http, master, y, [{"worker": b, "device": "phone"},
                                             {"worker": b, "device": "tablet"}])
        names = {"x": x, "y": y, "z": z, "driver": driver, "rider": rider}
        yield apps, names, http


async def notified(apps) -> dict[str, list[dict]]:
    """The notify frames each app received since the last call (exactly what is queued)."""
    out = {}
    for key, app in apps.items():
        frames = await app.fence()
        assert all(f["type"] == "notify" for f in frames), (key, frames)
        out[key] = frames
    return out


def cases(names):
    """(to, the apps it selects)."""
    return [
        ({"client": names["y"]}, {"y-phone", "y-tablet"}),
        ({"client": names["y"], "device": "tablet"}, {"y-tablet"}),
        ({"client": names["x"]}, {"x"}),
        ({"tags": [names["driver"]]}, {"x", "y-phone"}),
        ({"tags": [names["driver"], names["rider"]]}, {"x", "y-phone", "y-tablet"}),
        ({"client": names["y"], "tags": [names["rider"]]}, {"y-tablet"}),
        ({}, {"x", "z", "y-phone", "y-tablet"}),
    ]


async def test_consumer_notifies_apps_on_every_worker(two):
    master, (wa, wb) = two
    async with fleet(master, wa, wb) as (apps, names, _http), \
            connect(wa.url, "/v1/consumer", name=unique("svc")) as consumer:
        for i, (to, selected) in enumerate(cases(names)):
            rid = unique(f"n{i}")
            ack = await consumer.ack({"type": "notify", "to": to, "data": {"i": i}, "id": rid})
            assert ack["delivered"] == len(selected), (to, ack)
            got = await notified(apps)
            for key, frames in got.items():
                if key in selected:
                    assert len(frames) == 1, (to, key, frames)
                    assert frames[0]["data"] == {"i": i} and frames[0]["id"] == rid
                    assert frames[0]["from"] == consumer.welcome["name"]
                else:
                    assert frames == [], (to, key, frames)
        # a consumer on the other worker counts the same way
        async with connect(wb.url, "/v1/consumer", name=unique("svc")) as other:
            ack = await other.ack({"type": "notify", "to": {"client": names["x"]}, "data": 1, "id": "q"})
            assert ack["delivered"] == 1
            ack = await other.ack({"type": "notify", "to": {}, "data": 2, "id": "r"})
            assert ack["delivered"] == 4
        got = await notified(apps)
        assert [len(got[k]) for k in ("x", "z", "y-phone", "y-tablet")] == [2, 1, 1, 1]
        # nobody matches: 0, nothing sent
        ack = await consumer.ack({"type": "notify", "to": {"client": unique("nobody")}, "data": 0, "id": "z"})
        assert ack["delivered"] == 0
        assert all(v == [] for v in (await notified(apps)).values())


async def test_http_notify(two):
    master, (wa, wb) = two
    url = f"{master.http}/v1/notify"
    async with fleet(master, wa, wb) as (apps, names, http):
        for i, (to, selected) in enumerate(cases(names)):
            nid = unique(f"h{i}")
            r = await http.post(url, json={"to": to, "data": [i], "id": nid})
            assert r.status_code == 200, r.text
            assert r.json() == {"delivered": len(selected)}, to
            got = await notified(apps)
            for key, frames in got.items():
                if key in selected:
                    assert len(frames) == 1, (to, key, frames)
                    assert frames[0]["data"] == [i] and frames[0]["id"] == nid
                    assert frames[0]["from"] == "api"
                else:
                    assert frames == [], (to, key, frames)

        # without an id the master makes one; "to" absent = broadcast
        r = await http.post(url, json={"data": "all"})
        assert r.json() == {"delivered": 4}
        frames = await notified(apps)
        ids = {f[0]["id"] for f in frames.values()}
        assert len(ids) == 1 and ids.pop()

        # an offline client: 404 offline, nothing sent
        r = await http.post(url, json={"to": {"client": unique("gone")}, "data": 1})
        assert r.status_code == 404 and r.json()["error"] == "offline"
        r = await http.post(url, json={"to": {"client": names["y"], "device": "watch"}, "data": 1})
        assert r.status_code == 404 and r.json()["error"] == "offline"

        # a reused id: 409, nothing sent the second time
        nid = unique("dup")
        r = await http.post(url, json={"to": {"client": names["x"]}, "data": 1, "id": nid})
        assert r.status_code == 200 and r.json() == {"delivered": 1}
        r = await http.post(url, json={"to": {"client": names["z"]}, "data": 2, "id": nid})
        assert r.status_code == 409, r.text
        got = await notified(apps)
        assert [len(got[k]) for k in ("x", "z", "y-phone", "y-tablet")] == [1, 0, 0, 0]

        # bad bodies
        bad = [
            b"not json",
            b"",
            b"[1, 2]",
            b'"a string"',
            orjson.dumps({"to": {"client": names["x"]}}),  # no data
            orjson.dumps({"to": "everyone", "data": 1}),
            orjson.dumps({"to": {"client": "bad name"}, "data": 1}),
            orjson.dumps({"to": {"tags": "driver"}, "data": 1}),
            orjson.dumps({"to": {"tags": []}, "data": 1}),
            orjson.dumps({"to": {}, "data": 1, "id": 7}),
            orjson.dumps({"to": {}, "data": 1, "id": "x" * 65}),
        ]
        for body in bad:
            r = await http.post(url, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert r.json()["error"] == "bad_request", (body, r.text)
        r = await http.post(url, json={"to": {}, "data": "x" * (70 * 1024)})
        assert r.status_code == 413, r.text
        # a chunked body without Content-Length is measured too
        async def chunks():
            for _ in range(80):
                yield b"x" * 1024

        r = await http.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert all(v == [] for v in (await notified(apps)).values())


def typos(names):
    """``to`` maps PROTOCOL.md's strict ``to`` refuses: each would be a broadcast if read leniently."""
    return [
        {"clinet": names["x"]},
        {"client": names["y"], "devcie": "tablet"},
        {"tag": [names["driver"]]},
        {"Client": names["x"]},
        {"device": "phone"},
        {"device": "tablet", "tags": [names["rider"]]},
        {"clinet": None},
    ]


async def test_strict_to_reaches_nobody(two):
    """A typo in ``to`` is bad_request (consumer frame) / 400 (HTTP), and nobody gets anything."""
    master, (wa, wb) = two
    async with fleet(master, wa, wb) as (apps, names, http), \
            connect(wa.url, "/v1/consumer", name=unique("svc")) as consumer, \
            connect(wb.url, "/v1/consumer", proto=MSGPACK, name=unique("svc")) as packed:
        for i, to in enumerate(typos(names)):
            for c in (consumer, packed):
                err = await c.request({"type": "notify", "to": to, "data": "oops", "id": f"t{i}"})
                assert err["type"] == "error" and err["code"] == "bad_request", (to, err)
                assert err["id"] == f"t{i}" and "to" in err["reason"]
            r = await http.post(f"{master.http}/v1/notify", json={"to": to, "data": "oops"})
            assert r.status_code == 400, (to, r.text)
            assert r.json()["error"] == "bad_request" and "to" in r.json()["reason"]
        # the connections stay open and work; the apps got none of the typos
        ack = await consumer.ack({"type": "notify", "to": {"client": names["x"]}, "data": "ok", "id": "ok"})
        assert ack["delivered"] == 1
        got = await notified(apps)
        assert [f["data"] for f in got["x"]] == ["ok"]
        assert all(got[k] == [] for k in ("z", "y-phone", "y-tablet")), got
        # the SDK refuses the same maps before sending anything
        async with mc.connect_consumer(master.http, name=unique("sdk")) as sdk:
            for to in typos(names):
                with pytest.raises(mc.McError) as exc:
                    await sdk.notify(to, "oops")
                assert exc.value.code == "bad_request", to
        assert all(v == [] for v in (await notified(apps)).values())


async def test_presence_online_then_offline(two):
    master, (wa, wb) = two
    client = unique("p")
    url = f"{master.http}/v1/clients/{client}"
    async with http_client() as http:
        assert await get_json(http, url) == {"client": client, "online": False, "connections": []}
        async with connect(wa.url, "/v1/app", client=client, device="phone"):
            async with connect(wb.url, "/v1/app", client=client, device="laptop"):
                body = await wait_presence(http, master, client, [
                    {"worker": worker_id(wa), "device": "phone"},
                    {"worker": worker_id(wb), "device": "laptop"},
                ])
                assert body["online"] is True and body["client"] == client
            await wait_presence(http, master, client, [{"worker": worker_id(wa), "device": "phone"}])

        async def offline():
            body = await get_json(http, url)
            return body if not body["online"] else None

        assert await wait_for(offline, what="offline") == {
            "client": client, "online": False, "connections": []}
        r = await http.get(f"{master.http}/v1/clients/bad%20name")
        assert r.status_code == 400


async def test_same_device_on_another_worker_replaces(two):
    master, (wa, wb) = two
    client = unique("twin")
    async with http_client() as http, \
            connect(wa.url, "/v1/app", client=client, device="phone") as old:
        await wait_presence(http, master, client, [{"worker": worker_id(wa), "device": "phone"}])
        async with connect(wb.url, "/v1/app", client=client, device="phone") as new, \
                connect(wa.url, "/v1/app", client=client, device="other") as other:
            with trio.fail_after(5):
                await old.expect_close(4009)
            await wait_presence(http, master, client, [
                {"worker": worker_id(wb), "device": "phone"},
                {"worker": worker_id(wa), "device": "other"},
            ])
            # the new connection and the other device are untouched and reachable
            r = await http.post(f"{master.http}/v1/notify",
                                json={"to": {"client": client, "device": "phone"}, "data": "you"})
            assert r.json() == {"delivered": 1}
            assert (await new.recv_type("notify"))["data"] == "you"
            await other.expect_silence(0.2)
            await new.send({"type": "ping", "id": "alive"})
            assert (await new.recv_type("pong"))["id"] == "alive"

