"""The cluster key, API keys on the HTTP API and the JSON-only POST rule (PROTOCOL.md "Security")."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.procs import master_proc, running

from .cluster import get_json, http_client, wait_for, wait_registered, worker_for, worker_id
from .wsclient import connect, unique

CLUSTER_KEY = "cluster-key-0123456789abcdef"
API_KEY = "api-key-0123456789abcdef"

pytestmark = pytest.mark.timeout(60)


async def test_cluster_key_and_api_keys() -> None:
    keys = ("--cluster-key", CLUSTER_KEY, "--api-keys", API_KEY)
    master = master_proc("--lease", "2", *keys)
    good = worker_for(master, *keys)
    keyless = worker_for(master, "--api-keys", API_KEY)
    with running(master, good, keyless):
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with http_client() as http:
            await wait_registered(http, master, [worker_id(good)])
            # a worker without the key never registers; a fake one is refused at the handshake
            listed = [w["id"] for w in (await get_json(http, f"{master.http}/v1/workers"))["workers"]]
            assert listed == [worker_id(good)]

            async def refusal_logged() -> bool:
                return ("handshake refused (401)" in keyless.output()
                        and "refused a control link" in master.output())

            await wait_for(refusal_logged, what="the keyless worker's 401, logged on both sides")
            for header in ([], [(b"Authorization", b"Bearer wrong")]):
                with pytest.raises(ConnectionRejected) as refused:
                    async with open_websocket_url(f"{master.url.replace('http', 'ws')}/v1/control",
                                                  extra_headers=header) as ws:
                        await ws.send_message(msgpack.packb({"type": "register", "worker": "fake",
                                                             "url": "ws://127.0.0.1:1", "capacity": 10**6}))
                assert refused.value.status_code == 401
            listed = [w["id"] for w in (await get_json(http, f"{master.http}/v1/workers"))["workers"]]
            assert listed == [worker_id(good)]

            # open routes stay open; the others need the key
            for path in ("/v1/workers", "/healthz", "/metrics", f"/v1/assign?client={unique('a')}"):
                assert (await http.get(master.http + path)).status_code == 200, path
            client = unique("c")
            for method, path in (("GET", "/v1/stats"), ("GET", f"/v1/clients/{client}"),
                                 ("GET", "/v1/sessions/x"), ("POST", "/v1/rebalance"),
                                 ("DELETE", f"/v1/workers/{worker_id(good)}/drain")):
                for headers in ({}, {"Authorization": "Bearer nope"}):
                    r = await http.request(method, master.http + path, headers=headers)
                    assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path)
            assert (await http.get(f"{master.http}/v1/stats", headers=auth)).status_code == 200

            # a notify: the key, and JSON only (a no-cors text/plain post is refused)
            async with connect(good.url, "/v1/app", client=client) as app:
                body = orjson.dumps({"to": {"client": client}, "data": "otp"})
                plain = await http.post(f"{master.http}/v1/notify", content=body,
                                        headers={**auth, "Content-Type": "text/plain"})
                assert plain.status_code == 415
                ok = await http.post(f"{master.http}/v1/notify", content=body,
                                     headers={**auth, "Content-Type": "application/json"})
                assert ok.status_code == 200 and ok.json() == {"delivered": 1}
                assert (await app.recv_type("notify"))["data"] == "otp"
            # consumers need the key on the worker too
            async with connect(good.url, "/v1/consumer", name="svc", token=API_KEY) as consumer:
                assert consumer.welcome["name"] == "svc"


def test_non_loopback_without_cluster_key_refuses_to_start() -> None:
    import subprocess
    import sys
    for role in ("master", "worker"):
        out = subprocess.run([sys.executable, "-m", "mc.cli", role, "--host", "0.0.0.0", "--port", "1"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2
        assert out.stderr.strip().startswith("mc: refusing to listen on 0.0.0.0 without a cluster key")
        assert "Traceback" not in out.stderr
