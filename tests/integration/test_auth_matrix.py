"""Every endpoint x every credential (issue 10 "Tests that must exist"; PROTOCOL.md "Security").

One secured cluster (a master and a worker sharing a TOML file with
``jwt_secret``, ``api_keys`` and ``cluster_key``), then for each endpoint:
no credential, a wrong one, an expired one, a valid one, with the answer
PROTOCOL.md documents. "Expired" is a JWT whose ``exp`` is past (beyond the
5 s leeway) for apps and chats, and for API keys a key removed by a reload
(``POST /v1/reload`` on the master, ``SIGHUP`` on the worker) while the
cluster runs. The HTTP rows are checked against the master's route table,
so a new route without a row fails here.

The control link's cases, and a fake worker with no or a wrong cluster key
that must get nothing and change nothing, are at the end.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import msgpack
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

import mc.master.app
from mc import tokens
from tests.procs import Proc

from .cluster import cluster, follow, http_client, wait_for, wait_presence, worker_id, ws_base
from .wsclient import connect, rejected, unique

SECRET = "matrix-secret-0123456789abcdef0123456789"
KEY = "matrix-key-0123456789abcdef"
REMOVED = "matrix-removed-key-0123456789"  # valid at start, then removed by a reload
CLUSTER_KEY = "matrix-cluster-key-0123456789"
CREDENTIALS = ("none", "wrong", "expired", "valid")

pytestmark = pytest.mark.timeout(60)


def settings(keys: list[str]) -> str:
    return (f'jwt_secret = "{SECRET}"\ncluster_key = "{CLUSTER_KEY}"\n'
            f"api_keys = {orjson.dumps(keys).decode()}\n")


@attrs.frozen
class Secured:
    master: Proc
    worker: Proc


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    path: Path = tmp_path_factory.mktemp("matrix") / "mc.toml"
    path.write_text(settings([KEY, REMOVED]))
    config = ("--config", str(path))
    with cluster(1, master_extra=config, worker_extra=config) as (master, (worker,)):
        auth = {"Authorization": f"Bearer {REMOVED}"}
        assert httpx.get(f"{master.http}/v1/stats", headers=auth).status_code == 200  # valid before
        path.write_text(settings([KEY]))
        assert httpx.post(f"{master.http}/v1/reload", headers=auth).status_code == 200
        worker.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        trio.run(_wait_refused, worker)
        yield Secured(master, worker)


async def _wait_refused(worker: Proc) -> None:
    async def gone() -> bool:
        try:
            refusal = await rejected(worker.url, "/v1/consumer", name="probe", token=REMOVED)
            return refusal.status_code == 401
        except AssertionError:  # still accepted: the reload has not happened yet
            return False
    await wait_for(gone, what="the worker's reload removing a key")


def jwt(credential: str, sub: str) -> str | None:
    """The app token for a credential case."""
    return {
        "none": None,
        "wrong": tokens.mint("another-secret-0123456789abcdef0123", sub, 60),
        "expired": tokens.mint(SECRET, sub, -60),  # a minute ago: past the 5 s leeway
        "valid": tokens.mint(SECRET, sub, 60),
    }[credential]


def api_key(credential: str) -> str | None:
    return {"none": None, "wrong": "wrong-key-0123456789", "expired": REMOVED, "valid": KEY}[credential]


# ------------------------------------------------------------ WebSocket endpoints

#: endpoint -> (path, query without the credential, which credential it takes)
SOCKETS: dict[str, tuple[str, dict[str, str], str]] = {
    "app": ("/v1/app", {"client": "matrix"}, "jwt"),
    "chat": ("/v1/chat/matrix-room", {"client": "matrix"}, "jwt"),
    "consumer": ("/v1/consumer", {"name": "matrix"}, "key"),
}


def _query(endpoint: str, credential: str) -> dict[str, str]:
    _, query, kind = SOCKETS[endpoint]
    token = jwt(credential, query.get("client", "")) if kind == "jwt" else api_key(credential)
    return {**query, "device": unique("d")} | ({"token": token} if token else {})


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("endpoint", sorted(SOCKETS))
@pytest.mark.parametrize("where", ["worker", "master"])
async def test_websocket_endpoint(secured: Secured, where: str, endpoint: str, credential: str) -> None:
    """Refused with 401 without a valid credential; else 101 and ``welcome`` (the master: 307 first)."""
    path = SOCKETS[endpoint][0]
    query = _query(endpoint, credential)
    base = secured.worker.url if where == "worker" else ws_base(secured.master)
    if credential != "valid":
        refusal = await rejected(base, path, **query)
        assert refusal.status_code == 401
        assert orjson.loads(refusal.body)["error"] == "unauthorized"
        return
    async with follow(base, path, **query) as client:
        assert client.welcome["type"] == "welcome"
        assert len(client.hops) == (2 if where == "master" else 1)  # the master redirects, with the token
        if endpoint != "consumer":
            assert client.welcome["client"] == "matrix"  # the token's sub


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("endpoint", sorted(SOCKETS))
async def test_plain_get_of_an_entry_point(secured: Secured, endpoint: str, credential: str) -> None:
    """A plain GET of the master's entry point is answered as the handshake would be."""
    path = SOCKETS[endpoint][0]
    async with http_client() as http:
        r = await http.get(secured.master.http + path, params=_query(endpoint, credential))
    assert r.status_code == (307 if credential == "valid" else 401), r.text
    if credential == "valid":
        assert r.headers["location"].startswith(secured.worker.url + path)


# ------------------------------------------------------------ the master's HTTP routes

#: (method, path, JSON body or None, answer with a valid key, needs a key); {worker} is filled in
ROUTES: list[tuple[str, str, Any, int, bool]] = [
    ("GET", "/", None, 200, False),
    ("GET", "/static/dashboard.js", None, 200, False),
    ("GET", "/static/dashboard.css", None, 200, False),
    ("GET", "/mc.js", None, 200, False),
    ("GET", "/healthz", None, 200, False),
    ("GET", "/metrics", None, 200, False),
    ("GET", "/v1/assign?client=matrix", None, 200, False),
    ("GET", "/v1/workers", None, 200, False),
    ("POST", "/v1/workers/no-such-worker/drain", None, 404, True),  # authorized, then: no such worker
    ("DELETE", "/v1/workers/{worker}/drain", None, 200, True),  # an up worker stays up
    ("POST", "/v1/rebalance", None, 202, True),
    ("POST", "/v1/reload", None, 200, True),
    ("GET", "/v1/sessions/no-such-session", None, 404, True),
    ("GET", "/v1/clients/matrix", None, 200, True),
    ("POST", "/v1/notify", {"to": {"tags": ["nobody-has-this-tag"]}, "data": 1}, 200, True),
    ("GET", "/v1/sessions", None, 200, True),
    ("GET", "/v1/stats", None, 200, True),
    ("GET", "/v1/stats/history?seconds=5", None, 200, True),
    ("GET", "/v1/events", None, 200, True),
]


def _route_paths() -> set[str]:
    """Every HTTP route of the master, read from its route table's source (mc/master/app.py)."""
    source = Path(mc.master.app.__file__).read_text()
    paths = set(re.findall(r'Route\("([^"]+)"', source)) | set(mc.master.app._STATIC)
    return paths - set(mc.master.app._ENTRY_PATHS)  # the entry points are the WebSocket rows


def test_every_route_has_a_row() -> None:
    rows = {re.sub(r"\?.*", "", path) for _, path, _, _, _ in ROUTES}
    generic = {re.sub(r"/(no-such-worker|\{worker\})/", "/{worker}/", p) for p in rows}
    generic = {re.sub(r"/v1/(sessions|clients)/[^/]+$", r"/v1/\1/{x}", p) for p in generic}
    wanted = {re.sub(r"\{(session|client)\}", "{x}", p) for p in _route_paths()}
    assert wanted <= generic, wanted - generic


async def _status(http: httpx.AsyncClient, method: str, url: str, body: Any,
                  headers: dict[str, str]) -> int:
    content = orjson.dumps(body) if body is not None else None
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    async with http.stream(method, url, content=content, headers=headers) as r:  # /v1/events never ends
        return r.status_code


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize(("method", "path", "body", "ok", "protected"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
async def test_http_route(secured: Secured, method: str, path: str, body: Any, ok: int, protected: bool,
                          credential: str) -> None:
    """Open routes answer whatever the credential; the others 401 unless the key is valid."""
    key = api_key(credential)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = secured.master.http + path.format(worker=worker_id(secured.worker))
    async with http_client() as http:
        status = await _status(http, method, url, body, headers)
    assert status == (401 if protected and credential != "valid" else ok), (method, path, credential)


# ------------------------------------------------------------ the control link


@pytest.mark.parametrize("credential", ["none", "wrong", "valid"])
async def test_control_link(secured: Secured, credential: str) -> None:
    """``/v1/control`` needs the cluster key (it has no expiry: a changed key is a wrong one)."""
    key = {"none": None, "wrong": "wrong-cluster-key-0123456789", "valid": CLUSTER_KEY}[credential]
    headers = [(b"Authorization", f"Bearer {key}".encode())] if key else []
    url = f"{ws_base(secured.master)}/v1/control"
    wid = unique("tool")
    register = msgpack.packb({"type": "register", "worker": wid, "url": "ws://127.0.0.1:1", "capacity": 1})
    if credential != "valid":
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(url, extra_headers=headers) as ws:
                await ws.send_message(register)
        assert refused.value.status_code == 401
        return
    async with open_websocket_url(url, extra_headers=headers) as ws:
        await ws.send_message(register)
        with trio.fail_after(5):
            reply = msgpack.unpackb(await ws.get_message())
        replies = reply if isinstance(reply, list) else [reply]
        assert replies[0]["type"] == "registered"


async def _refused_links(http: httpx.AsyncClient, master: Proc) -> float:
    text = (await http.get(f"{master.http}/metrics")).text
    found = re.search(r"^mc_master_control_links_refused_total (\S+)$", text, re.M)
    assert found, "no refused-links counter in /metrics"
    return float(found.group(1))


async def test_a_fake_worker_without_the_key_changes_nothing(secured: Secured) -> None:
    """No key or a wrong one: no registration, no presence, no session claim, no kick (4009)."""
    master = secured.master
    client, session = unique("alice"), unique("room")
    token = tokens.mint(SECRET, client, 60)
    async with connect(secured.worker.url, "/v1/app", device="phone", token=token) as app, \
            follow(ws_base(master), f"/v1/chat/{session}", token=token, device="chat") as chat, \
            http_client() as http:
        auth = {"Authorization": f"Bearer {KEY}"}
        http.headers.update(auth)
        conns = [{"worker": worker_id(secured.worker), "device": "phone"}]  # presence: app connections
        await wait_presence(http, master, client, conns)
        owner = (await http.get(f"{master.http}/v1/sessions/{session}")).json()
        assert owner["worker"] == worker_id(secured.worker)
        refused_before = await _refused_links(http, master)
        fake = [msgpack.packb(m) for m in (
            {"type": "register", "worker": worker_id(secured.worker), "url": "ws://127.0.0.1:1",
             "capacity": 10**6, "presence": [[client, "phone"]], "sessions": {session: 1}},
            {"type": "presence", "added": [[client, "phone"]], "removed": []},
            {"type": "claim", "id": 1, "session": session},
        )]
        for headers in ([], [(b"Authorization", b"Bearer wrong-cluster-key-0123456789")]):
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(f"{ws_base(master)}/v1/control", extra_headers=headers) as ws:
                    for frame in fake:
                        await ws.send_message(frame)
            assert refused.value.status_code == 401
        # a worker takes commands only over its own link: it serves no control endpoint at all
        with pytest.raises(ConnectionRejected) as on_worker:
            async with open_websocket_url(f"{secured.worker.url}/v1/control") as ws:
                await ws.send_message(fake[0])
        assert on_worker.value.status_code in (400, 404)
        await trio.sleep(1.5)  # longer than a presence batch: anything accepted would show by now
        workers = (await http.get(f"{master.http}/v1/workers")).json()["workers"]
        assert [(w["id"], w["url"]) for w in workers] == [(worker_id(secured.worker), secured.worker.url)]
        await wait_presence(http, master, client, conns, timeout=1)
        after = (await http.get(f"{master.http}/v1/sessions/{session}")).json()
        assert (after["worker"], after["url"]) == (owner["worker"], owner["url"])  # still the real owner
        for ws in (app, chat):  # neither was kicked (4009) nor closed
            await ws.send({"type": "ping", "id": "still"})
            try:
                assert (await ws.recv_type("pong"))["id"] == "still"
            except ConnectionClosed as exc:
                raise AssertionError(f"closed: {exc.reason}") from None
        assert await _refused_links(http, master) == refused_before + 2  # both counted
