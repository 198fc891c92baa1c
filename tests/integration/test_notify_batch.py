"""POST /v1/notify/batch end to end: a real master, two workers, apps on both."""

from __future__ import annotations

import pytest

from mc.master.notify_api import MAX_BATCH_NOTIFIES

from .test_cluster_notify import cases, fleet, notified
from .wsclient import unique

pytestmark = pytest.mark.timeout(60)


async def test_batch_delivers_every_item_in_order(two):
    master, (wa, wb) = two
    url = f"{master.http}/v1/notify/batch"
    async with fleet(master, wa, wb) as (apps, names, http):
        items = [({"to": to, "data": [i], "id": unique(f"b{i}")}, selected)
                 for i, (to, selected) in enumerate(cases(names))]
        r = await http.post(url, json={"notifies": [body for body, _ in items]})
        assert r.status_code == 200, r.text
        assert r.json() == {"results": [{"delivered": len(selected)} for _, selected in items]}
        got = await notified(apps)
        for key, frames in got.items():
            expected = [body for body, selected in items if key in selected]
            assert [f["data"] for f in frames] == [b["data"] for b in expected], key  # the batch's order
            assert [f["id"] for f in frames] == [b["id"] for b in expected]
            assert all(f["from"] == "api" for f in frames)

        # many items for one app: all arrive, in order, and each counts 1
        x = names["x"]
        r = await http.post(url, json={"notifies": [{"to": {"client": x}, "data": n} for n in range(300)]})
        assert r.json() == {"results": [{"delivered": 1}] * 300}
        got = await notified(apps)
        assert [f["data"] for f in got["x"]] == list(range(300))
        assert all(not frames for key, frames in got.items() if key != "x")


async def test_batch_answers_each_item_as_the_single_form(two):
    master, (wa, wb) = two
    async with fleet(master, wa, wb) as (apps, names, http):
        used = unique("used")
        r = await http.post(f"{master.http}/v1/notify",
                            json={"to": {"client": names["z"]}, "data": 0, "id": used})
        assert r.json() == {"delivered": 1}
        await notified(apps)
        twice = unique("twice")
        batch = [
            {"to": {"client": names["x"]}, "data": 1, "id": twice},
            {"to": {"client": unique("gone")}, "data": 2},  # offline
            {"to": {"client": names["x"]}, "data": 3, "id": twice},  # the same id again in this batch
            {"to": {"client": names["z"]}, "data": 4, "id": used},  # an id used before
            {"to": {"clinet": names["x"]}, "data": 5},  # a typo in "to"
            {"to": {"client": names["x"]}},  # no data
            "not an object",
            {"to": {"client": names["y"], "device": "tablet"}, "data": 8, "trace": "t-8"},
        ]
        r = await http.post(f"{master.http}/v1/notify/batch", json={"notifies": batch})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0] == {"delivered": 1}
        assert results[1]["status"] == 404 and results[1]["error"] == "offline"
        assert results[2]["status"] == 409 and results[2]["error"] == "duplicate"
        assert results[3]["status"] == 409 and results[3]["error"] == "duplicate"
        for i in (4, 5, 6):
            assert results[i]["status"] == 400 and results[i]["error"] == "bad_request", results[i]
            assert results[i]["reason"]
        assert results[7] == {"delivered": 1}
        got = await notified(apps)
        assert [f["data"] for f in got["x"]] == [1]
        assert [(f["data"], f["trace"]) for f in got["y-tablet"]] == [(8, "t-8")]
        assert got["z"] == [] and got["y-phone"] == []


async def test_batch_bounds_and_bad_envelopes(two):
    master, (wa, wb) = two
    url = f"{master.http}/v1/notify/batch"
    async with fleet(master, wa, wb) as (apps, names, http):
        too_many = [{"to": {"client": names["x"]}, "data": 0}] * (MAX_BATCH_NOTIFIES + 1)
        r = await http.post(url, json={"notifies": too_many})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        r = await http.post(url, json={"notifies": [{"data": "x" * 70_000}]})  # over max_body (64 KiB)
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        for body in (b'{"notifies": []}', b"[]", b'{"notify": [{"data": 1}]}', b"{oops"):
            r = await http.post(url, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"] == "bad_request", body
            assert r.json()["reason"]
        r = await http.post(url, content=b'{"notifies": [{"data": 1}]}',
                            headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = await http.get(url)
        assert r.status_code == 405
        # exactly the bound is fine, and nothing above was delivered
        r = await http.post(url, json={"notifies": too_many[:MAX_BATCH_NOTIFIES]})
        assert r.json() == {"results": [{"delivered": 1}] * MAX_BATCH_NOTIFIES}
        got = await notified(apps)
        assert len(got["x"]) == MAX_BATCH_NOTIFIES and not got["z"]
