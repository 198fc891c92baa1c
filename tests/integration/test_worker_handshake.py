"""Handshakes against a real worker: welcome frames, refusals, plain HTTP."""

from __future__ import annotations

import orjson
import pytest
import trio

from tests.procs import running, worker_proc

from .cluster import wait_for
from .wsclient import (
    JSON,
    MSGPACK,
    PROTOCOLS,
    connect,
    error_body,
    header,
    http_get,
    rejected,
    unique,
)

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ welcome


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_app_welcome(worker, proto):
    client = unique("app")
    async with connect(worker.url, "/v1/app", proto=proto, client=client) as c:
        assert c.proto == proto
        w = c.welcome
        assert w["type"] == "welcome"
        assert w["worker"] == f"w{worker.port}"
        assert w["heartbeat"] == 1
        assert w["client"] == client
        assert w["device"] == "default"
    async with connect(worker.url, "/v1/app", proto=proto, client=client, device="phone",
                       tags="driver,eu") as c:
        assert c.welcome["client"] == client
        assert c.welcome["device"] == "phone"


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_consumer_welcome(worker, proto):
    name = unique("svc")
    async with connect(worker.url, "/v1/consumer", proto=proto, name=name) as c:
        w = c.welcome
        assert w["type"] == "welcome"
        assert w["worker"] == f"w{worker.port}"
        assert w["heartbeat"] == 1
        assert w["name"] == name


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_chat_welcome(worker, proto):
    session, alice, bob = unique("room"), unique("alice"), unique("bob")
    async with connect(worker.url, f"/v1/chat/{session}", proto=proto, client=alice) as a:
        w = a.welcome
        assert w["type"] == "welcome"
        assert w["worker"] == f"w{worker.port}"
        assert w["heartbeat"] == 1
        assert w["session"] == session
        assert w["client"] == alice
        assert w["members"] == [alice]
        async with connect(worker.url, f"/v1/chat/{session}", proto=proto, client=bob,
                           mode="join") as b:
            assert b.welcome["client"] == bob
            assert sorted(b.welcome["members"]) == sorted([alice, bob])


async def test_no_subprotocol_means_json(worker):
    async with connect(worker.url, "/v1/app", proto=None, client=unique("app")) as c:
        assert c.ws.subprotocol is None  # nothing offered, nothing echoed
        assert c.welcome["type"] == "welcome"  # decoded from a text frame
        await c.send({"type": "ping", "id": "p1"})
        assert await c.recv() == {"type": "pong", "id": "p1"}


async def test_subprotocol_follows_client_order(worker):
    async with connect(worker.url, "/v1/app", subprotocols=["mc.v9", MSGPACK, JSON],
                       client=unique("app")) as c:
        assert c.proto == MSGPACK
        assert c.welcome["type"] == "welcome"
    async with connect(worker.url, "/v1/app", subprotocols=[JSON, MSGPACK],
                       client=unique("app")) as c:
        assert c.proto == JSON


# ------------------------------------------------------------------ refusals

BAD_HANDSHAKES = [
    ("/v1/app", {}),  # no client
    ("/v1/app", {"client": ""}),
    ("/v1/app", {"client": "has space"}),
    ("/v1/app", {"client": "x" * 129}),
    ("/v1/app", {"client": "ok", "device": "bad/device"}),
    ("/v1/app", {"client": "ok", "device": ""}),
    ("/v1/app", {"client": "ok", "tags": "good,bad tag"}),
    ("/v1/app", {"client": "ok", "tags": ",".join(f"t{i}" for i in range(33))}),
    ("/v1/consumer", {}),  # no name
    ("/v1/consumer", {"name": "bad name"}),
    ("/v1/consumer", {"name": "y" * 129}),
    ("/v1/chat/bad!session", {"client": "ok"}),
    ("/v1/chat/" + "s" * 129, {"client": "ok"}),
    ("/v1/chat/", {"client": "ok"}),  # empty session
    ("/v1/chat/fine-session", {}),  # no client
    ("/v1/chat/fine-session", {"client": "ok", "mode": "create"}),
    ("/v1/chat/fine-session", {"client": "ok", "device": "a b"}),
]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(("path", "query"), BAD_HANDSHAKES)
async def test_bad_identity_is_400(worker, proto, path, query):
    r = await rejected(worker.url, path, proto=proto, **query)
    assert r.status_code == 400
    assert header(r, "content-type") == "application/json"
    assert error_body(r)["error"] == "bad_request"


@pytest.mark.parametrize("path", ["/v1/app?client=a", "/v1/consumer?name=a", "/v1/chat/s1?client=a"])
async def test_unsupported_subprotocol_is_400(worker, path):
    p, _, q = path.partition("?")
    key, _, value = q.partition("=")
    r = await rejected(worker.url, p, subprotocols=["mc.v2.json", "chat"], **{key: value})
    assert r.status_code == 400
    assert error_body(r)["error"] == "bad_request"
    assert "subprotocol" in error_body(r)["reason"]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_chat_join_unknown_session_is_404(worker, proto):
    r = await rejected(worker.url, f"/v1/chat/{unique('nobody')}", proto=proto,
                       client=unique("app"), mode="join")
    assert r.status_code == 404
    assert error_body(r)["error"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/nope", "/v2/app", "/", "/v1/app/extra"])
async def test_unknown_path_is_404(worker, path):
    r = await rejected(worker.url, path, client="a")
    assert r.status_code == 404
    error_body(r)


async def test_chat_session_full_is_409():
    with running(worker_proc("--chat-max-members", "2")) as (w,):
        session = unique("full")
        async with connect(w.url, f"/v1/chat/{session}", client="a"), \
                connect(w.url, f"/v1/chat/{session}", client="b"):
            r = await rejected(w.url, f"/v1/chat/{session}", client="c")
            assert r.status_code == 409
            error_body(r)
            # the same (client, device) replacing itself is not an extra member
            async with connect(w.url, f"/v1/chat/{session}", client="b") as again:
                assert sorted(again.welcome["members"]) == ["a", "b"]


async def test_connection_limit_is_503_with_retry_after():
    with running(worker_proc("--max-connections", "2")) as (w,):
        async with connect(w.url, "/v1/app", client=unique("a")), \
                connect(w.url, "/v1/consumer", name=unique("c")):
            for path, query in (("/v1/app", {"client": unique("a")}),
                                ("/v1/consumer", {"name": unique("c")}),
                                ("/v1/chat/" + unique("s"), {"client": unique("a")})):
                r = await rejected(w.url, path, **query)
                assert r.status_code == 503
                retry = header(r, "retry-after")
                assert retry is not None and int(retry) >= 1
                assert error_body(r)["error"] == "unavailable"
            # /healthz still answers at the limit
            status, _, _ = await http_get(w.url, "/healthz")
            assert status == 200

        # both closed: there is room again once the worker forgot them
        async def room_again():
            status, _, body = await http_get(w.url, "/healthz")
            return status == 200 and orjson.loads(body)["connections"] == 0

        await wait_for(room_again, what="the worker forgetting the closed connections")
        async with connect(w.url, "/v1/app", client=unique("a")) as c:
            assert c.welcome["type"] == "welcome"


# ---------------------------------------------------------------- plain HTTP


@pytest.mark.parametrize("path", ["/v1/app?client=a", "/v1/consumer?name=a", "/v1/chat/s?client=a"])
async def test_plain_get_on_endpoint_is_426(worker, path):
    status, headers, body = await http_get(worker.url, path)
    assert status == 426
    assert headers.get("upgrade", "").lower() == "websocket"
    assert orjson.loads(body)["error"] == "bad_request"


async def test_healthz(worker):
    status, headers, body = await http_get(worker.url, "/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["worker"] == f"w{worker.port}"


async def test_garbage_request_is_400_and_worker_survives(worker):
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", worker.port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    status, _, _ = await http_get(worker.url, "/healthz")
    assert status == 200
