"""The master's and workers' support for browsers, without a browser (PROTOCOL.md "Browsers").

``browser=1`` handshakes answered in frames (redirect + 4307, error + 4000 +
status) on the master and on workers; origins and CORS on the HTTP API and
handshakes; ``/mc.js`` with its ETag; ``/v1/stats/history``, ``/v1/sessions``
and the ``/v1/events`` stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.procs import Proc, master_proc, running

from .cluster import follow, get_json, http_client, wait_for, worker_id, ws_base
from .wsclient import JSON, TIMEOUT, rejected, target, unique

ROOT = Path(__file__).resolve().parents[2]
GOOD, EVIL = "http://good.example", "http://evil.example"


async def framed(
    url: str, *, origin: str | None = None, proto: str | None = JSON
) -> tuple[dict[str, Any], int]:
    """Open a browser=1 handshake that must be accepted, then answered by one frame and a close."""
    headers = [(b"Origin", origin.encode())] if origin else []
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, subprotocols=[proto] if proto else [], extra_headers=headers,
                                      connect_timeout=TIMEOUT, disconnect_timeout=2) as ws:
            frame = orjson.loads(await ws.get_message())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            return frame, closed.value.reason.code


async def test_master_answers_browser_handshakes_in_frames(two: tuple[Proc, list[Proc]]) -> None:
    master, (wa, wb) = two
    base = ws_base(master)
    room = unique("room")
    async with follow(wa.url, f"/v1/chat/{room}", client="py"):
        # owned by wa: the master's redirect is a frame; the query is kept, browser=1 included
        frame, code = await framed(target(base, f"/v1/chat/{room}", {"client": "web", "browser": 1}))
        assert code == 4307
        assert frame == {"type": "redirect",
                         "url": f"{wa.url}/v1/chat/{room}?client=web&browser=1"}
        # a worker that is not the owner says the same in frames
        frame, code = await framed(target(wb.url, f"/v1/chat/{room}", {"client": "web", "browser": 1}))
        want = f"{wa.url}/v1/chat/{room}?client=web&browser=1"
        assert (frame["type"], frame["url"], code) == ("redirect", want, 4307)
    # an app goes to some worker
    frame, code = await framed(target(base, "/v1/app", {"client": "web", "browser": 1}))
    assert code == 4307 and frame["url"].endswith("/v1/app?client=web&browser=1")
    # refusals: 404 for join on an unknown session, 400 for a bad client, on the master and a worker
    for where in (base, wb.url):
        frame, code = await framed(target(where, f"/v1/chat/{unique('none')}",
                                          {"client": "web", "mode": "join", "browser": 1}))
        assert code == 4404 and frame["type"] == "error" and frame["status"] == 404
        assert frame["code"] == "not_found" and frame["reason"]
        frame, code = await framed(target(where, "/v1/app", {"client": "bad name", "browser": 1}))
        assert (frame["type"], frame["status"], frame["code"], code) == ("error", 400, "bad_request", 4400)
    # without browser=1, plain HTTP as before (the Python SDK follows 307)
    assert (await rejected(base, "/v1/app", client="web")).status_code == 307
    assert (await rejected(wb.url, f"/v1/chat/{unique('none')}", client="w", mode="join")).status_code == 404


async def test_draining_worker_says_503_with_retry_after(two: tuple[Proc, list[Proc]]) -> None:
    master, (wa, _) = two
    async with http_client() as http:
        assert (await http.post(f"{master.http}/v1/workers/{worker_id(wa)}/drain")).status_code == 202
        try:
            async def draining() -> bool:
                w = await get_json(http, f"{master.http}/v1/workers")
                return any(x["id"] == worker_id(wa) and x["state"] != "up" for x in w["workers"])
            await wait_for(draining, what="drain")
            url = target(wa.url, "/v1/app", {"client": "web", "browser": 1})

            async def refused() -> bool:
                """The master marks the worker first; the worker refuses once its link brought the drain."""
                async with open_websocket_url(url, subprotocols=[JSON], connect_timeout=TIMEOUT) as ws:
                    return orjson.loads(await ws.get_message())["type"] != "welcome"

            await wait_for(refused, what="the worker refusing")
            frame, code = await framed(url)
            assert code == 4503 and frame["status"] == 503 and frame["retry_after"] >= 1
        finally:
            await http.delete(f"{master.http}/v1/workers/{worker_id(wa)}/drain")


async def test_default_is_no_cors_and_no_refusal(two: tuple[Proc, list[Proc]]) -> None:
    master, _ = two
    async with http_client() as http:
        pre = await http.options(f"{master.http}/v1/notify",
                                 headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        r = await http.get(f"{master.http}/v1/workers", headers={"Origin": EVIL})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # handshakes from any page are fine while allowed_origins is unset
    url = target(ws_base(master), "/v1/app", {"client": "web", "browser": 1})
    assert (await framed(url, origin=EVIL))[1] == 4307


@pytest.fixture(scope="module")
def strict() -> Iterator[Proc]:
    """A master (no workers) with allowed_origins = GOOD."""
    with running(master_proc("--allowed-origins", GOOD)) as (master,):
        yield master


async def test_allowed_origins_cors_and_403(strict: Proc) -> None:
    m = strict.http
    async with http_client() as http:
        pre = await http.options(f"{m}/v1/notify", headers={
            "Origin": GOOD, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == GOOD
        assert pre.headers["access-control-allow-methods"] == "GET, POST, DELETE"
        assert pre.headers["access-control-allow-headers"] == "Authorization, Content-Type"
        assert int(pre.headers["access-control-max-age"]) > 0
        r = await http.get(f"{m}/v1/workers", headers={"Origin": GOOD})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == GOOD
        assert "Origin" in r.headers["vary"]
        for method, path in (("GET", "/v1/workers"), ("POST", "/v1/notify"), ("OPTIONS", "/v1/notify"),
                             ("GET", "/v1/app?client=a")):
            r = await http.request(method, f"{m}{path}", headers={
                "Origin": EVIL, "Access-Control-Request-Method": "POST"})
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json()["error"] == "forbidden" and "access-control-allow-origin" not in r.headers
        # no Origin (curl, the SDK) and the master's own origin (the dashboard) are never refused
        assert (await http.get(f"{m}/v1/workers")).status_code == 200
        assert (await http.post(f"{m}/v1/notify", json={"data": 1},
                                headers={"Origin": m})).status_code == 200
        # /mc.js is public
        js = await http.get(f"{m}/mc.js", headers={"Origin": EVIL})
        assert js.status_code == 200 and js.headers["access-control-allow-origin"] == "*"
    # handshakes: 403, or in frames 4403
    assert (await rejected(ws_base(strict), "/v1/app", client="a")).status_code == 503  # no Origin: no worker
    with trio.fail_after(TIMEOUT):
        try:
            async with open_websocket_url(target(ws_base(strict), "/v1/app", {"client": "a"}),
                                          extra_headers=[(b"Origin", EVIL.encode())]):
                raise AssertionError("accepted")
        except Exception as exc:  # ConnectionRejected
            assert getattr(exc, "status_code", None) == 403
    frame, code = await framed(target(ws_base(strict), "/v1/app", {"client": "a", "browser": 1}), origin=EVIL)
    assert code == 4403 and frame["status"] == 403 and frame["code"] == "forbidden"


async def test_mc_js_is_served_with_an_etag(two: tuple[Proc, list[Proc]]) -> None:
    master, _ = two
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.get(f"{master.http}/mc.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert r.content == (ROOT / "clients/js/mc.js").read_bytes(), "mc/master/static/mc.js is a copy"
        etag = r.headers["etag"]
        again = await http.get(f"{master.http}/mc.js", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        other = await http.get(f"{master.http}/mc.js", headers={"If-None-Match": '"other"'})
        assert other.status_code == 200
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css"):
            assert (await http.get(f"{master.http}{path}")).status_code == 200


async def test_stats_history_sessions_and_events(two: tuple[Proc, list[Proc]]) -> None:
    master, (wa, wb) = two
    m = master.http
    async with http_client() as http:
        async def sampled() -> Any:
            h = await get_json(http, f"{m}/v1/stats/history?seconds=3")
            ids = {worker_id(wa), worker_id(wb)}
            return h if len(h["samples"]) >= 2 and ids <= set(h["samples"][-1]["workers"]) else None
        h = await wait_for(sampled, what="two samples listing both workers")
        assert h["interval"] == 1 and len(h["samples"]) <= 3
        ts = [s["ts"] for s in h["samples"]]
        assert ts == sorted(ts)
        s = h["samples"][-1]
        assert {"connections", "msgs_in_per_s", "msgs_out_per_s", "sessions"} <= set(s)
        assert set(s["workers"][worker_id(wa)]) == set(s) - {"ts", "workers"}
        assert len((await get_json(http, f"{m}/v1/stats/history"))["samples"]) <= 900
        for bad in ("0", "901", "abc", "-1"):
            r = await http.get(f"{m}/v1/stats/history", params={"seconds": bad})
            assert r.status_code == 400 and r.json()["error"] == "bad_request"

        room = unique("listed")
        async with follow(wb.url, f"/v1/chat/{room}", client="py"):
            async def listed() -> Any:
                body = await get_json(http, f"{m}/v1/sessions")
                return [x for x in body["sessions"] if x["session"] == room]
            (entry,) = await wait_for(listed, what="session listed")
            assert entry["worker"] == worker_id(wb)

        with trio.fail_after(TIMEOUT):
            async with http.stream("GET", f"{m}/v1/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                buf = ""
                async for chunk in stream.aiter_text():
                    buf += chunk
                    if "\n\ndata:" in buf or ("event: stats" in buf and buf.endswith("\n\n")):
                        break
        data = next(line for line in buf.splitlines() if line.startswith("data:"))
        snap = orjson.loads(data[5:])
        assert {w["id"] for w in snap["workers"]} == {worker_id(wa), worker_id(wb)}
        assert snap["keys"] is False and "uptime_s" in snap["workers"][0]


async def test_new_routes_need_the_api_key_and_401s_carry_cors() -> None:
    key = "k-browser-api"
    with running(master_proc("--api-keys", key, "--allowed-origins", GOOD)) as (master,):
        m = master.http
        async with http_client() as http:
            for path in ("/v1/events", "/v1/sessions", "/v1/stats/history"):
                r = await http.get(f"{m}{path}", headers={"Origin": GOOD})
                assert r.status_code == 401, path
                assert r.headers["access-control-allow-origin"] == GOOD  # the page can read the 401
            auth = {"Authorization": f"Bearer {key}"}
            assert (await http.get(f"{m}/v1/sessions", headers=auth)).status_code == 200
            assert (await http.get(f"{m}/v1/stats/history?seconds=1", headers=auth)).status_code == 200
            with trio.fail_after(TIMEOUT):
                async with http.stream("GET", f"{m}/v1/events", headers=auth) as stream:
                    assert stream.status_code == 200
                    buf = ""
                    async for chunk in stream.aiter_text():
                        buf += chunk
                        if "data:" in buf and buf.endswith("\n\n"):
                            break
                    assert '"keys":true' in buf
            for path in ("/mc.js", "/", "/static/dashboard.js"):  # the page and the client stay open
                assert (await http.get(f"{m}{path}")).status_code == 200
