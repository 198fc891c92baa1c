"""Chat sessions across workers: one owner per session, 307 to it, claim races, linger."""

from __future__ import annotations

import pytest
import trio

from .cluster import (
    LINGER,
    follow,
    get_json,
    http_client,
    redirect_of,
    wait_for,
    worker_id,
    ws_base,
)
from .wsclient import error_body, rejected, unique

pytestmark = pytest.mark.timeout(60)


async def test_second_worker_redirects_to_the_owner(two):
    master, (wa, wb) = two
    session, alice, bob, carol = unique("room"), unique("alice"), unique("bob"), unique("carol")
    path = f"/v1/chat/{session}"
    async with follow(wa.url, path, client=alice, mode="open") as a:
        assert a.hops == [a.hops[0]]  # accepted by A at once: A owns the session now
        assert a.welcome["worker"] == worker_id(wa)
        assert a.welcome["members"] == [alice]

        # opening it on B answers 307 to A, keeping the query
        location = await redirect_of(wb.url, path, client=bob, device="phone", mode="open")
        assert location == f"{wa.url}{path}?client={bob}&device=phone&mode=open"

        async with follow(wb.url, path, client=bob, device="phone") as b:
            assert len(b.hops) == 2 and b.hops[1].startswith(wa.url + path)
            assert b.welcome["worker"] == worker_id(wa)
            assert sorted(b.welcome["members"]) == sorted([alice, bob])
            assert await a.recv_type("joined") == {"type": "joined", "client": bob}

            # through the master too, with mode=join
            async with follow(ws_base(master), path, client=carol, mode="join") as c:
                assert c.hops[1].startswith(wa.url + path)
                assert sorted(c.welcome["members"]) == sorted([alice, bob, carol])
                assert (await a.recv_type("joined"))["client"] == carol
                assert (await b.recv_type("joined"))["client"] == carol

                ack = await b.ack({"type": "send", "data": {"text": "hello"}, "id": "m1"})
                for other in (a, c):
                    msg = await other.recv_type("chat")
                    assert msg["from"] == bob and msg["data"] == {"text": "hello"}
                    assert msg["seq"] == ack["seq"]
                await a.send({"type": "send", "data": "back"})
                assert (await b.recv_type("chat"))["data"] == "back"
                assert (await c.recv_type("chat"))["data"] == "back"
                assert await a.fence() == []  # no echo to the sender
            assert await a.recv_type("left") == {"type": "left", "client": carol}


async def test_join_unknown_session_is_404(two):
    master, (wa, wb) = two
    session = unique("nothing")
    for base in (wa.url, wb.url, ws_base(master)):
        refusal = await rejected(base, f"/v1/chat/{session}", client=unique("j"), mode="join")
        assert refusal.status_code == 404, (base, refusal)
        assert error_body(refusal)["error"] == "not_found"
    async with http_client() as http:
        r = await http.get(f"{master.http}/v1/sessions/{session}")
        assert r.status_code == 404
        # the failed joins did not create it
        assert (await http.get(f"{master.http}/v1/sessions/{unique('never')}")).status_code == 404


async def test_claim_race_has_one_owner(two):
    """8 clients open the same new session at once, 4 on each worker: one owner, one room."""
    master, (wa, wb) = two
    session = unique("race")
    path = f"/v1/chat/{session}"
    names = [unique(f"r{i}") for i in range(8)]
    bases = [wa.url] * 4 + [wb.url] * 4
    clients: dict[str, object] = {}
    ready, done = trio.Event(), trio.Event()

    async def one(base: str, name: str) -> None:
        async with follow(base, path, client=name) as c:
            clients[name] = c
            if len(clients) == len(names):
                ready.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for base, name in zip(bases, names, strict=True):
            nursery.start_soon(one, base, name)
        with trio.fail_after(10):
            await ready.wait()

        owners = {c.welcome["worker"] for c in clients.values()}
        assert len(owners) == 1, owners
        owner = owners.pop()
        owner_url = {worker_id(wa): wa.url, worker_id(wb): wb.url}[owner]
        for c in clients.values():
            assert c.hops[-1].startswith(owner_url + path), c.hops
        # everyone is in the same room: the welcome's members plus the joins seen since
        for name, c in clients.items():
            frames = await c.fence()
            assert all(f["type"] == "joined" for f in frames), frames
            seen = set(c.welcome["members"]) | {f["client"] for f in frames}
            assert seen == set(names), (name, seen)
        last = max(clients.values(), key=lambda c: len(c.welcome["members"]))
        assert sorted(last.welcome["members"]) == sorted(names)

        sender = clients[names[0]]
        ack = await sender.ack({"type": "send", "data": "to all", "id": "all"})
        for name in names[1:]:
            msg = await clients[name].recv_type("chat")
            assert msg["from"] == names[0] and msg["seq"] == ack["seq"]

        async with http_client() as http:
            async def reported():
                info = await get_json(http, f"{master.http}/v1/sessions/{session}")
                return info if info["members"] == 8 else None

            info = await wait_for(reported, what="member count 8")
        assert info["worker"] == owner and info["url"] == owner_url
        done.set()


async def test_session_registry_and_linger(two):
    master, (wa, wb) = two
    session, alice, bob = unique("reg"), unique("alice"), unique("bob")
    path = f"/v1/chat/{session}"
    async with http_client() as http:
        url = f"{master.http}/v1/sessions/{session}"
        assert (await http.get(url)).status_code == 404
        async with follow(wb.url, path, client=alice) as a:
            info = await get_json(http, url)  # the claim happened before the welcome
            assert info["session"] == session
            assert info["worker"] == worker_id(wb) and info["url"] == wb.url
            async with follow(ws_base(master), path, client=bob, mode="join") as b:
                assert b.welcome["worker"] == worker_id(wb)
                assert (await a.recv_type("joined"))["client"] == bob

                async def two_members():
                    body = await get_json(http, url)
                    return body if body["members"] == 2 else None

                await wait_for(two_members, what="member count 2")
            await a.recv_type("left")

            async def one_member():
                body = await get_json(http, url)
                return body if body["members"] == 1 else None

            await wait_for(one_member, what="member count 1")

        # empty now: it lingers, then the owner releases it and the master forgets it
        assert (await http.get(url)).status_code == 200

        async def forgotten():
            return (await http.get(url)).status_code == 404

        with trio.fail_after(LINGER + 5):
            await wait_for(forgotten, timeout=LINGER + 5, what="session forgotten")

        # a forgotten session can be opened afresh, on whichever worker is asked
        async with follow(wa.url, path, client=alice) as again:
            assert again.welcome["worker"] == worker_id(wa)
            assert again.welcome["members"] == [alice]


async def test_rejoin_within_linger_keeps_the_owner(two):
    _master, (wa, wb) = two
    session, alice = unique("keep"), unique("alice")
    path = f"/v1/chat/{session}"
    async with follow(wa.url, path, client=alice):
        pass
    # right after the last member left, the session still lives on A: B redirects there
    async with follow(wb.url, path, client=alice, mode="join") as a:
        assert a.welcome["worker"] == worker_id(wa)
        assert len(a.hops) == 2
