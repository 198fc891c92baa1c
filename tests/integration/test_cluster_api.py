"""The master's HTTP API and WebSocket entry point, against a real master and real workers."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack
from urllib.parse import parse_qsl, urlsplit

import pytest
import trio

from tests.procs import master_proc

from .cluster import (
    cluster,
    follow,
    get_json,
    http_client,
    master_args,
    redirect_of,
    wait_for,
    worker_for,
    worker_id,
    ws_base,
)
from .wsclient import connect, error_body, rejected, unique

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------
# HTTP API


async def test_healthz_and_dashboard(two):
    master, _ = two
    async with http_client() as http:
        r = await http.get(f"{master.http}/healthz")
        assert r.status_code == 200
        page = await http.get(f"{master.http}/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        # the worker table, filled by the page's script from /v1/events (tests/browser drive it)
        assert "<table" in html and "/static/dashboard.js" in html


async def test_workers_lists_live_workers(two):
    master, workers = two
    async with http_client() as http:
        body = await get_json(http, f"{master.http}/v1/workers")
    assert isinstance(body["version"], int) and body["version"] >= 2
    listed = {w["id"]: w for w in body["workers"]}
    assert set(listed) == {worker_id(w) for w in workers}
    for w in workers:
        entry = listed[worker_id(w)]
        assert set(entry) >= {"id", "url", "state", "connections", "capacity"}
        assert entry["url"] == w.url
        assert entry["state"] == "up"
        assert isinstance(entry["connections"], int) and entry["connections"] >= 0
        assert isinstance(entry["capacity"], int) and entry["capacity"] >= 1


async def test_workers_long_poll():
    """``?after=V`` waits while nothing changes and returns promptly when a worker registers."""
    master = master_proc(*master_args())
    joiner = worker_for(master)
    await trio.to_thread.run_sync(master.start)
    try:
        async with http_client() as http:
            first = await get_json(http, f"{master.http}/v1/workers")
            assert first["workers"] == []
            version = first["version"]

            # the poll waits while nothing changes, and answers when a worker registers
            answer = {}

            async def poll():
                r = await http.get(f"{master.http}/v1/workers", params={"after": version}, timeout=30)
                answer["status"], answer["body"] = r.status_code, r.json()

            async def answered():
                return bool(answer)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                # nothing new: still waiting a second later (the only way to see a wait)
                with trio.move_on_after(1.0):
                    await wait_for(answered, timeout=2.0)
                    raise AssertionError(f"long poll returned with nothing new: {answer}")
                await trio.to_thread.run_sync(joiner.start)
                # "promptly": long before the poll's own 30 s run out
                await wait_for(answered, timeout=10, what="the long poll's answer")
            assert answer["status"] == 200
            assert answer["body"]["version"] > version
            assert [w["id"] for w in answer["body"]["workers"]] == [worker_id(joiner)]
    finally:
        joiner.stop()
        master.stop()


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", ""])
async def test_workers_after_invalid(two, after):
    master, _ = two
    async with http_client() as http:
        with trio.fail_after(5):
            r = await http.get(f"{master.http}/v1/workers", params={"after": after})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"


async def test_assign(two):
    master, workers = two
    urls = {worker_id(w): w.url for w in workers}
    async with http_client() as http:
        body = await get_json(http, f"{master.http}/v1/assign?client={unique('app')}")
        assert body["worker"] in urls and body["url"] == urls[body["worker"]]
        for query in ("", "?client=", "?client=bad%20name", "?client=" + "x" * 129, "?device=d"):
            r = await http.get(f"{master.http}/v1/assign{query}")
            assert r.status_code == 400, (query, r.text)
            assert r.json()["error"] == "bad_request"


async def test_assign_spreads_over_least_loaded(two):
    master, workers = two
    async with http_client() as http:
        # start from equal reports (no connections left over by earlier tests)
        async def idle():
            body = await get_json(http, f"{master.http}/v1/workers")
            return all(w["connections"] == 0 for w in body["workers"])

        await wait_for(idle, what="idle workers")
        names = []
        for _ in range(10):
            names.append((await get_json(http, f"{master.http}/v1/assign?client={unique('a')}"))["worker"])
    counts = Counter(names)
    assert set(counts) == {worker_id(w) for w in workers}, counts
    assert min(counts.values()) >= 3, counts


async def test_stats_and_metrics(two):
    master, workers = two
    wa, wb = workers
    sessions = [unique("st") for _ in range(3)]
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(http_client())
        for _ in range(2):
            await stack.enter_async_context(connect(wa.url, "/v1/app", client=unique("s")))
        for session in sessions:  # three sessions owned by wa, one member each
            chat = await stack.enter_async_context(follow(wa.url, f"/v1/chat/{session}", client=unique("m")))
            assert chat.welcome["worker"] == worker_id(wa)
        await stack.enter_async_context(connect(wb.url, "/v1/app", client=unique("s")))
        consumer = await stack.enter_async_context(connect(wb.url, "/v1/consumer", name=unique("c")))
        await consumer.ack({"type": "subscribe", "topic": "stats.>", "id": "s1"})
        await consumer.ack({"type": "subscribe", "topic": "stats.b", "group": "g", "id": "s2"})

        # exactly what is open now (connections other tests left close within a report or two)
        async def reported():
            body = await get_json(http, f"{master.http}/v1/stats")
            per = {w["id"]: w for w in body["workers"]}
            a, b = per[worker_id(wa)], per[worker_id(wb)]
            ok = ((a["connections"], a["sessions"], a["subscriptions"]) == (5, 3, 0)
                  and (b["connections"], b["sessions"], b["subscriptions"]) == (2, 0, 2))
            return body if ok else None

        stats = await wait_for(reported, what="stats with exactly the new connections")
        totals = stats["totals"]
        assert (totals["workers"], totals["draining"]) == (2, 0)
        assert (totals["connections"], totals["sessions"], totals["subscriptions"]) == (7, 3, 2)
        assert totals["rss_bytes"] == sum(w["rss_bytes"] for w in stats["workers"]) > 0
        for key in ("msgs_in_per_s", "msgs_out_per_s", "cpu_percent"):
            assert isinstance(totals[key], (int, float)), (key, totals[key])
            assert totals[key] == pytest.approx(sum(w[key] for w in stats["workers"]))
        for w in stats["workers"]:
            assert set(w) >= {"id", "url", "state", "connections", "capacity", "sessions",
                              "subscriptions", "msgs_in_per_s", "msgs_out_per_s",
                              "cpu_percent", "rss_bytes"}
            assert w["rss_bytes"] > 0

        r = await http.get(f"{master.http}/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        samples = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        assert samples["mc_workers"] == 2
        for w in workers:
            label = f'{{worker="{worker_id(w)}"}}'
            assert samples[f"mc_worker_capacity{label}"] >= 1
            assert samples[f"mc_worker_rss_bytes{label}"] > 0
        assert samples[f'mc_worker_connections{{worker="{worker_id(wa)}"}}'] == 5
        assert samples[f'mc_worker_subscriptions{{worker="{worker_id(wb)}"}}'] == 2


#: publishes per second in the rate test, and how far the reported rate may be off
RATE = 40
SLACK = 2.5


async def test_stats_report_message_rates(two):
    """While an app publishes at a known rate to one subscriber, ``/v1/stats``
    shows that rate in (frames from clients) and out (frames to clients) for
    the worker carrying it, and in the totals."""
    master, (_, wb) = two
    topic = unique("rate")
    async with http_client() as http, \
            connect(wb.url, "/v1/consumer", name=unique("c")) as consumer, \
            connect(wb.url, "/v1/app", client=unique("p")) as app:
        await consumer.ack({"type": "subscribe", "topic": topic, "id": "s"})
        sent = []

        async def publish_steadily():
            while True:
                await app.send({"type": "publish", "topic": topic, "data": len(sent)})
                sent.append(trio.current_time())
                await trio.sleep(1 / RATE)

        async def drain_consumer():
            while True:
                await consumer.recv(10)

        def measured() -> float:
            """The rate the test really achieved over the last second (the machine may be slow)."""
            now = trio.current_time()
            return sum(1 for t in sent if now - t <= 1.0)

        async def rates_reported():
            body = await get_json(http, f"{master.http}/v1/stats")
            b = {w["id"]: w for w in body["workers"]}[worker_id(wb)]
            rate = measured()
            ok = (rate > 0
                  and rate / SLACK <= b["msgs_in_per_s"] <= rate * SLACK
                  and rate / SLACK <= b["msgs_out_per_s"] <= rate * SLACK
                  and body["totals"]["msgs_in_per_s"] >= b["msgs_in_per_s"] > 0
                  and body["totals"]["msgs_out_per_s"] >= b["msgs_out_per_s"] > 0)
            return (b, rate) if ok else None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_steadily)
            nursery.start_soon(drain_consumer)
            b, rate = await wait_for(rates_reported, timeout=15, interval=0.2,
                                           what=f"message rates near {RATE}/s")
            nursery.cancel_scope.cancel()
        print(f"\n[stats] publishing at {rate:.0f}/s: worker reports {b['msgs_in_per_s']:.1f} in, "
              f"{b['msgs_out_per_s']:.1f} out per second")
        # and once the traffic stops, the rates go back to zero
        async def quiet():
            body = await get_json(http, f"{master.http}/v1/stats")
            b = {w["id"]: w for w in body["workers"]}[worker_id(wb)]
            return b["msgs_in_per_s"] == 0 and b["msgs_out_per_s"] == 0

        await wait_for(quiet, what="rates back to zero")


async def test_drain():
    with cluster(2) as (master, (victim, other)):
        vid, oid = worker_id(victim), worker_id(other)
        async with http_client() as http, \
                connect(victim.url, "/v1/app", client=unique("d")) as app1, \
                connect(victim.url, "/v1/consumer", name=unique("dc")) as cons:
            r = await http.post(f"{master.http}/v1/workers/{vid}/drain")
            assert r.status_code == 202, r.text

            with trio.fail_after(5):
                await app1.expect_close(4503)
                await cons.expect_close(4503)

            async def drained() -> dict | None:
                body = await get_json(http, f"{master.http}/v1/workers")
                states = {w["id"]: w["state"] for w in body["workers"]}
                return states if states[vid] == "drained" else None

            # its last connection gone, the worker reports "drained" (PROTOCOL.md "Operations")
            assert await wait_for(drained, what="drained") == {vid: "drained", oid: "up"}
            for _ in range(10):
                assigned = await get_json(http, f"{master.http}/v1/assign?client={unique('a')}")
                assert assigned["worker"] == oid
            # the master's entry point does not send apps there either
            location = await redirect_of(ws_base(master), "/v1/app", client=unique("e"))
            assert location.startswith(other.url + "/")
            # and the drained worker refuses new connections
            refusal = await rejected(victim.url, "/v1/app", client=unique("late"))
            assert refusal.status_code == 503
            stats = await get_json(http, f"{master.http}/v1/stats")
            assert stats["totals"]["draining"] == 1

            r = await http.post(f"{master.http}/v1/workers/no-such-worker/drain")
            assert r.status_code == 404
            assert r.json()["error"] == "not_found"
            assert (await http.delete(f"{master.http}/v1/workers/no-such-worker/drain")).status_code == 404

            # undrain: back into service, back in /v1/assign
            r = await http.delete(f"{master.http}/v1/workers/{vid}/drain")
            assert r.status_code == 200 and r.json() == {"worker": vid, "state": "up"}
            body = await get_json(http, f"{master.http}/v1/workers")
            assert {w["id"]: w["state"] for w in body["workers"]}[vid] == "up"

            async def accepts() -> bool:
                try:
                    async with connect(victim.url, "/v1/app", client=unique("back")):
                        return True
                except Exception:
                    return False

            await wait_for(accepts, what="the undrained worker accepting connections")
            assigned = {(await get_json(http, f"{master.http}/v1/assign?client={unique('b')}"))["worker"]
                        for _ in range(10)}
            assert vid in assigned


# --------------------------------------------------------------------------
# WebSocket entry on the master


@pytest.mark.parametrize("path,query", [
    ("/v1/app", {"client": "ALICE", "device": "phone", "tags": "a,b"}),
    ("/v1/consumer", {"name": "svc"}),
    ("/v1/chat/SESSION", {"client": "ALICE", "mode": "open"}),
])
async def test_entry_redirects_to_a_worker(two, path, query):
    master, workers = two
    session = unique("room")
    path = path.replace("SESSION", session)
    query = {k: (unique(v) if v in ("ALICE", "svc") else v) for k, v in query.items()}
    location = await redirect_of(ws_base(master), path, **query)
    loc = urlsplit(location)
    assert f"{loc.scheme}://{loc.netloc}" in {w.url for w in workers}
    assert loc.path == path
    assert dict(parse_qsl(loc.query)) == query

    # plain HTTP GETs of the entry paths are answered the same way
    async with http_client() as http:
        r = await http.get(f"{master.http}{path}", params=query)
    assert r.status_code == 307
    assert urlsplit(r.headers["location"]).path == path


@pytest.mark.parametrize("path,query", [
    ("/v1/app", {}),
    ("/v1/app", {"client": "bad name"}),
    ("/v1/app", {"client": "ok", "device": "x" * 129}),
    ("/v1/app", {"client": "ok", "tags": "good,bad tag"}),
    ("/v1/consumer", {}),
    ("/v1/consumer", {"name": "bad/name"}),
    ("/v1/chat/room", {}),
    ("/v1/chat/room", {"client": "ok", "mode": "maybe"}),
    ("/v1/chat/bad!session", {"client": "ok"}),
])
async def test_entry_bad_identity_is_400(two, path, query):
    master, workers = two
    on_master = await rejected(ws_base(master), path, **query)
    assert on_master.status_code == 400, on_master
    body = error_body(on_master)
    assert body["error"] == "bad_request"
    # the same answer a worker gives
    on_worker = await rejected(workers[0].url, path, **query)
    assert on_worker.status_code == 400
    assert error_body(on_worker)["error"] == "bad_request"


async def test_clients_follow_the_master_to_a_worker(two):
    master, workers = two
    urls = {w.url: worker_id(w) for w in workers}
    client, name, session = unique("fa"), unique("fc"), unique("froom")
    async with follow(ws_base(master), "/v1/app", client=client, device="tab") as app:
        assert len(app.hops) == 2
        worker_url = app.hops[-1].split("/v1/")[0]
        assert app.welcome["worker"] == urls[worker_url]
        assert app.welcome["client"] == client and app.welcome["device"] == "tab"
        await app.send({"type": "ping", "id": "p"})
        assert await app.recv_type("pong") == {"type": "pong", "id": "p"}
    async with follow(ws_base(master), "/v1/consumer", name=name) as consumer:
        assert consumer.welcome["name"] == name
        assert consumer.welcome["worker"] in urls.values()
    async with follow(ws_base(master), f"/v1/chat/{session}", client=client) as chat:
        assert chat.welcome["session"] == session
        assert chat.welcome["members"] == [client]
        owner = chat.welcome["worker"]
        async with http_client() as http:
            info = await get_json(http, f"{master.http}/v1/sessions/{session}")
        assert info["worker"] == owner
        # a second member through the master lands on the owner
        async with follow(ws_base(master), f"/v1/chat/{session}", client=unique("fb"), mode="join") as b:
            assert b.welcome["worker"] == owner
            assert (await chat.recv_type("joined"))["client"] == b.welcome["client"]


async def test_follow_helper_limits_hops(two):
    """The helper itself: a redirect loop is not followed forever."""
    master, _ = two
    # a chat 307 from the master names the worker, which accepts: exactly one hop
    async with follow(ws_base(master), f"/v1/chat/{unique('hop')}", client=unique("h"), max_hops=1) as c:
        assert len(c.hops) == 2
    with pytest.raises(AssertionError, match="more than 0 redirects"):
        async with follow(ws_base(master), "/v1/app", client=unique("h"), max_hops=0):
            pass
