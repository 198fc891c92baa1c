"""Helpers for the cluster integration tests: a real master and real workers.

* :func:`cluster` starts one master and N workers (workers in parallel, to
  keep the suite short), waits until every worker is registered, and stops
  them all afterwards;
* :func:`follow` opens a WebSocket the way every mc client must: following
  ``307`` redirects (``Location`` header, at most 5 hops);
* ``wait_*`` poll the master's HTTP API with a deadline: presence and member
  counts reach the master in batches (every 0.5 s), so a test polls before it
  relies on them.

Every wait is bounded; nothing here mocks mc.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar

import httpx
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.procs import Proc, master_proc, worker_proc

from .wsclient import JSON, TIMEOUT, Client, header, rejected, target, unique

#: the lease the cluster tests give the master (seconds), to keep liveness tests short
LEASE = 2.0
#: chat linger the cluster tests give the workers (seconds)
LINGER = 1.0
#: how long a test waits for the master to learn something (registration, presence)
SETTLE = 10.0
MAX_HOPS = 5

T = TypeVar("T")


# --------------------------------------------------------------------------
# processes


def master_args(lease: float = LEASE) -> tuple[str, ...]:
    return ("--lease", str(lease))


def worker_for(master: Proc, *extra: str, port: int | None = None) -> Proc:
    """A worker (not started) attached to ``master``, chat linger 1 s."""
    return worker_proc("--master", master.http, "--chat-linger", str(LINGER), *extra, port=port)


def worker_id(worker: Proc) -> str:
    """The id tests/procs.py gives a worker (``w<port>``)."""
    return f"w{worker.port}"


def start_all(procs: list[Proc]) -> None:
    """Start processes concurrently (each start waits for its /healthz)."""
    if not procs:
        return
    with ThreadPoolExecutor(len(procs)) as pool:
        futures = [pool.submit(p.start) for p in procs]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for p in procs:
            p.stop()
        raise errors[0]  # type: ignore[misc]


def wait_registered_sync(master: Proc, ids: list[str], timeout: float = SETTLE) -> dict[str, Any]:
    """Block until ``GET /v1/workers`` lists every id; the last answer."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{master.http}/v1/workers", timeout=2).json()
            if set(ids) <= {w["id"] for w in body["workers"]}:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"workers {ids} not registered within {timeout}s: {body}")


@contextmanager
def cluster(
    workers: int = 2, *, lease: float = LEASE, worker_extra: tuple[str, ...] = (),
    master_extra: tuple[str, ...] = (),
) -> Iterator[tuple[Proc, list[Proc]]]:
    """A started master (``--lease``) and ``workers`` registered workers; all stopped afterwards."""
    master = master_proc(*master_args(lease), *master_extra)
    procs = [worker_for(master, *worker_extra) for _ in range(workers)]
    master.start()
    try:
        start_all(procs)
        wait_registered_sync(master, [worker_id(w) for w in procs])
        yield master, procs
    finally:
        for p in reversed(procs):
            p.stop()
        master.stop()


def ws_base(master: Proc) -> str:
    """The master's WebSocket entry point (same port as its HTTP API)."""
    return master.http.replace("http://", "ws://", 1)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------
# HTTP


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT)


async def get_json(http: httpx.AsyncClient, url: str, status: int = 200) -> Any:
    r = await http.get(url)
    assert r.status_code == status, f"GET {url}: {r.status_code} {r.text}"
    return r.json()


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout: float = SETTLE, interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; that value. Fails after ``timeout``."""
    last: Any = None
    with trio.move_on_after(timeout):
        while True:
            last = await probe()
            if last:
                return last
            await trio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def base_of(master: Proc | str) -> str:
    """The master's http:// base URL, given its Proc or the URL itself."""
    return master if isinstance(master, str) else master.http


async def wait_registered(
    http: httpx.AsyncClient, master: Proc | str, ids: list[str], timeout: float = SETTLE
) -> dict[str, Any]:
    """``GET /v1/workers`` once it lists every id in ``ids``."""

    async def probe() -> dict[str, Any] | None:
        try:
            body = (await http.get(f"{base_of(master)}/v1/workers")).json()
        except httpx.HTTPError:
            return None
        return body if set(ids) <= {w["id"] for w in body["workers"]} else None

    return await wait_for(probe, timeout=timeout, what=f"registration of {ids}")


async def wait_presence(
    http: httpx.AsyncClient, master: Proc | str, client: str,
    connections: list[dict[str, str]], timeout: float = SETTLE,
) -> dict[str, Any]:
    """``GET /v1/clients/{client}`` once its connections are exactly ``connections``."""
    want = sorted(connections, key=lambda c: (c["worker"], c["device"]))

    async def probe() -> dict[str, Any] | None:
        try:
            body = (await http.get(f"{base_of(master)}/v1/clients/{client}")).json()
        except httpx.HTTPError:
            return None
        got = sorted(body["connections"], key=lambda c: (c["worker"], c["device"]))
        return body if got == want else None

    return await wait_for(probe, timeout=timeout, what=f"presence of {client} = {want}")


async def wait_master_down(worker: Proc, timeout: float = SETTLE) -> ConnectionRejected:
    """Until ``worker`` refuses a new chat session with 503 (it knows it cannot
    reach the master, the only one who can place a session); that refusal."""
    async def refused() -> ConnectionRejected | None:
        r = await rejected(worker.url, f"/v1/chat/{unique('probe')}", client=unique("probe"))
        return r if r.status_code == 503 else None

    return await wait_for(refused, timeout=timeout, what=f"{worker_id(worker)} noticing the master is down")


# --------------------------------------------------------------------------
# WebSocket clients that follow 307


class Redirected(Client):
    """A Client that also knows the URLs it went through (``hops[-1]`` accepted it)."""

    hops: list[str]


@asynccontextmanager
async def follow(
    base: str, path: str, *, proto: str | None = JSON, max_hops: int = MAX_HOPS,
    timeout: float = TIMEOUT, **query: Any,
) -> AsyncIterator[Redirected]:
    """Open ``base + path?query``, following ``307`` (at most ``max_hops``); ``welcome`` read.

    Any other refusal (and a 307 without ``Location``, or too many hops)
    propagates as ``ConnectionRejected`` / ``AssertionError``.
    """
    url = target(base, path, query)
    hops = [url]
    offer = [proto] if proto else []
    async with AsyncExitStack() as stack:
        for _ in range(max_hops + 1):
            try:
                ws = await stack.enter_async_context(open_websocket_url(
                    url, subprotocols=offer, message_queue_size=100_000,
                    connect_timeout=timeout, disconnect_timeout=2,
                ))
                break
            except ConnectionRejected as exc:
                if exc.status_code != 307:
                    raise
                location = header(exc, "location")
                assert location, f"307 without Location from {url}"
                url = location
                hops.append(url)
        else:
            raise AssertionError(f"more than {max_hops} redirects: {hops}")
        client = Redirected(ws, ws.subprotocol)
        client.hops = hops
        client.welcome = await client.recv_type("welcome", timeout)
        yield client


async def redirect_of(base: str, path: str, **query: Any) -> str:
    """The ``Location`` of a handshake that must be answered with ``307``."""
    exc = await rejected(base, path, **query)
    assert exc.status_code == 307, f"expected 307, got {exc.status_code}: {exc.body!r}"
    location = header(exc, "location")
    assert location, "307 without Location"
    return location

