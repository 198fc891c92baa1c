"""Chat sessions on one real worker (chat linger 1 s): join, send, leave, linger."""

from __future__ import annotations

import base64
import re
import time

import pytest
import trio

from .cluster import LINGER, http_client, wait_for
from .wsclient import JSON, MSGPACK, PROTOCOLS, connect, rejected, unique

pytestmark = pytest.mark.timeout(60)

assert LINGER == 1.0  # the chat linger of the shared worker and of the cluster's workers


def data_for(proto):
    return {"text": "hi", "raw": b"\x00\x01"} if proto == MSGPACK else {"text": "hi", "n": 1}


def seen_as(data, proto):
    if proto == JSON:
        return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                for k, v in data.items()}
    return data


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("other_proto", PROTOCOLS)
async def test_join_send_leave(worker, proto, other_proto):
    session, alice, bob = unique("room"), unique("alice"), unique("bob")
    path = f"/v1/chat/{session}"
    async with connect(worker.url, path, proto=proto, client=alice) as a:
        async with connect(worker.url, path, proto=other_proto, client=bob, mode="join") as b:
            assert await a.recv_type("joined") == {"type": "joined", "client": bob}
            assert sorted(b.welcome["members"]) == sorted([alice, bob])

            data = data_for(proto)
            before = time.time_ns() // 1_000_000
            ack = await a.ack({"type": "send", "data": data, "id": "m1", "trace": "tr-1"})
            assert ack["type"] == "ack" and ack["id"] == "m1"
            assert isinstance(ack["seq"], int)
            msg = await b.recv_type("chat")
            after = time.time_ns() // 1_000_000
            assert msg["from"] == alice
            assert msg["data"] == seen_as(data, other_proto)
            assert msg["seq"] == ack["seq"]
            assert before - 1000 <= msg["ts"] <= after + 1000
            assert msg["trace"] == "tr-1"

            # no echo for the sender; seq increases across senders
            ack2 = await b.ack({"type": "send", "data": "back", "id": "m2"})
            assert ack2["seq"] > ack["seq"]
            back = await a.recv_type("chat")
            assert back["from"] == bob and back["data"] == "back" and back["seq"] == ack2["seq"]
            assert re.fullmatch(r"[0-9a-z]{1,6}-[0-9a-z]+", back["trace"])  # made by the worker
            await a.send({"type": "send", "data": "no id"})  # no ack without an id
            no_id = await b.recv_type("chat")
            assert no_id["seq"] > ack2["seq"]
            assert await a.fence() == []
            assert await b.fence() == []
        assert await a.recv_type("left") == {"type": "left", "client": bob}


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_seq_increases_over_many_messages(worker, proto):
    session = unique("room")
    path = f"/v1/chat/{session}"
    async with connect(worker.url, path, proto=proto, client=unique("a")) as a, \
            connect(worker.url, path, proto=proto, client=unique("b")) as b, \
            connect(worker.url, path, proto=JSON, client=unique("c")) as c:
        await a.recv_type("joined")
        await a.recv_type("joined")
        await b.recv_type("joined")
        for i in range(50):
            await (a if i % 2 else b).send({"type": "send", "data": i})
        # after these round trips the worker has handled every send
        got_a = await a.fence()
        got_b = await b.fence()
        got_a += await a.fence()
        got_b += await b.fence()
        got_c = [f for f in await c.fence() if f["type"] == "chat"]
        # the two senders race each other; each one's messages keep their order
        datas = [f["data"] for f in got_c]
        assert sorted(datas) == list(range(50))
        assert [d for d in datas if d % 2] == list(range(1, 50, 2))
        assert [d for d in datas if not d % 2] == list(range(0, 50, 2))
        seqs = [f["seq"] for f in got_c]
        assert seqs == list(range(seqs[0], seqs[0] + 50))
        # each sender sees only the other's messages, in order, with the same seq
        assert [f["data"] for f in got_a] == list(range(0, 50, 2))
        assert [f["data"] for f in got_b] == list(range(1, 50, 2))
        by_data = {f["data"]: f["seq"] for f in got_c}
        assert all(by_data[f["data"]] == f["seq"] for f in got_a + got_b)


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_same_client_on_two_devices(worker, proto):
    session, alice, bob = unique("room"), unique("alice"), unique("bob")
    path = f"/v1/chat/{session}"
    async with connect(worker.url, path, proto=proto, client=bob) as b:
        async with connect(worker.url, path, proto=proto, client=alice, device="phone") as phone:
            assert await b.recv_type("joined") == {"type": "joined", "client": alice}
            async with connect(worker.url, path, proto=proto, client=alice, device="web") as web:
                assert sorted(web.welcome["members"]) == sorted([alice, bob])
                await phone.send({"type": "send", "data": "from phone"})
                # the client's other device gets it too, the sending connection does not
                assert (await web.recv_type("chat"))["data"] == "from phone"
                assert (await b.recv_type("chat"))["data"] == "from phone"
                assert await phone.fence() == []
            # alice is still a member through her phone: no joined/left for devices
            assert await b.fence() == []
        assert await b.recv_type("left") == {"type": "left", "client": alice}


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_same_client_and_device_replaces_chat_connection(worker, proto):
    session, alice, bob = unique("room"), unique("alice"), unique("bob")
    path = f"/v1/chat/{session}"
    async with connect(worker.url, path, proto=proto, client=bob) as b, \
            connect(worker.url, path, proto=proto, client=alice) as first:
        assert await b.recv_type("joined") == {"type": "joined", "client": alice}
        async with connect(worker.url, path, proto=proto, client=alice) as second:
            await first.expect_close(4009)
            await b.send({"type": "send", "data": "still there?"})
            assert (await second.recv_type("chat"))["data"] == "still there?"
            # a replacement is neither a leave nor a join
            assert await b.fence() == []


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_linger_then_session_ends(two, proto):
    """An empty session lives on for the linger, its seq with it, then ends.

    The end is watched through the master (the owner tells it when a session
    ends): any probe of the worker itself would re-join the session and start
    its linger again."""
    master, (wa, _) = two
    session, alice = unique("room"), unique("alice")
    path = f"/v1/chat/{session}"
    async with connect(wa.url, path, proto=proto, client=alice) as a:
        await a.ack({"type": "send", "data": "x", "id": "1"})
    # within the linger the session still exists: join succeeds
    async with connect(wa.url, path, proto=proto, client=alice, mode="join") as a:
        assert a.welcome["members"] == [alice]
        seq = (await a.ack({"type": "send", "data": "y", "id": "2"}))["seq"]
        assert seq == 2  # the session (and its seq) lived on
    left = trio.current_time()
    async with http_client() as http:
        async def ended():
            return (await http.get(f"{master.http}/v1/sessions/{session}")).status_code == 404

        await wait_for(ended, timeout=LINGER + 5, what="the session's end")
    # not before its linger ran out (a lower bound: a busy machine only makes it later)
    assert trio.current_time() - left >= 0.9 * LINGER
    r = await rejected(wa.url, path, proto=proto, client=alice, mode="join")
    assert r.status_code == 404
    # open creates it afresh, with a new seq
    async with connect(wa.url, path, proto=proto, client=alice) as a:
        assert (await a.ack({"type": "send", "data": "z", "id": "4"}))["seq"] == 1


async def test_sessions_are_independent(worker):
    s1, s2 = unique("room"), unique("room")
    async with connect(worker.url, f"/v1/chat/{s1}", client=unique("a")) as a1, \
            connect(worker.url, f"/v1/chat/{s1}", client=unique("b")) as b1, \
            connect(worker.url, f"/v1/chat/{s2}", client=unique("c")) as c2:
        await a1.recv_type("joined")
        await a1.send({"type": "send", "data": "only s1"})
        assert (await b1.recv_type("chat"))["data"] == "only s1"
        assert await c2.fence() == []
        assert c2.welcome["members"] == [c2.welcome["client"]]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_send_without_data_is_bad_request(worker, proto):
    async with connect(worker.url, f"/v1/chat/{unique('room')}", proto=proto, client=unique("a")) as a:
        err = await a.request({"type": "send", "id": "x"})
        assert err["type"] == "error" and err["code"] == "bad_request" and err["id"] == "x"
        err = await a.request({"type": "send", "data": 1, "trace": "t" * 129, "id": "y"})
        assert err["type"] == "error" and err["code"] == "bad_request" and err["id"] == "y"
        assert (await a.ack({"type": "send", "data": 1, "id": "z"}))["seq"] == 1
