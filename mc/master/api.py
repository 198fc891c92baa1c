"""The master's HTTP API (PROTOCOL.md "Master HTTP API"), as Starlette handlers.

Every input is validated with mc.protocol's name rules; errors are JSON
``{"error", "reason"}`` with a 4xx status, never a traceback. The notify API
(the only bodies) is served ahead of Starlette: mc.master.notify_api.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mc.protocol import ErrorCode, is_name
from mc.protocol.control import Metrics

from .entry import error, unavailable
from .history import History, parse_seconds
from .registry import WorkerInfo
from .state import MasterState
from .store import StoreUnavailable


def _state(request: Request) -> MasterState:
    return request.app.state.master


def worker_json(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "url": w.url,
        "state": w.state,
        "connections": w.metrics.connections,
        "capacity": w.capacity,
    }


async def assign(request: Request) -> Response:
    client = request.query_params.get("client")
    if not is_name(client):
        return error(400, ErrorCode.BAD_REQUEST, "client is required: 1-128 of A-Za-z0-9._-:@")
    worker = await _state(request).assign()
    if worker is None:
        return unavailable("no live worker can take a connection")
    return JSONResponse({"worker": worker.id, "url": worker.url})


async def workers(request: Request) -> Response:
    state = _state(request)
    after = request.query_params.get("after")
    if after is not None:
        if not after.isdigit() or len(after) > 18:
            return error(400, ErrorCode.BAD_REQUEST, "after must be a non-negative integer")
        await state.wait_version(int(after), state.config.long_poll)
    await state.purge_lapsed()  # the version moves with the listing
    listed = await state.live_workers()
    return JSONResponse({
        "version": await state.store.version(),
        "workers": [worker_json(w) for w in listed],
    })


async def session(request: Request) -> Response:
    state = _state(request)
    await state.purge_lapsed()
    name = request.path_params["session"]
    info = await state.store.lookup_session(name) if is_name(name) else None
    url = await state.url_of(info.worker_id) if info is not None else None
    if info is None or url is None:
        return error(404, ErrorCode.NOT_FOUND, f"no chat session {name!r}")
    return JSONResponse({"session": name, "worker": info.worker_id, "url": url, "members": info.members})


async def client(request: Request) -> Response:
    name = request.path_params["client"]
    if not is_name(name):
        return error(400, ErrorCode.BAD_REQUEST, "client must be 1-128 of A-Za-z0-9._-:@")
    state = _state(request)
    await state.purge_lapsed()
    conns = await state.store.client_connections(name)
    return JSONResponse({
        "client": name,
        "online": bool(conns),
        "connections": [{"worker": w, "device": d} for w, d in conns],
    })


async def drain(request: Request) -> Response:
    state = _state(request)
    wid = request.path_params["worker"]
    if request.method == "DELETE":
        if not await state.undrain(wid):
            return error(404, ErrorCode.NOT_FOUND, f"no worker {wid!r}")
        return JSONResponse({"worker": wid, "state": "up"})
    if not await state.drain(wid):
        return error(404, ErrorCode.NOT_FOUND, f"no worker {wid!r}")
    return JSONResponse({"worker": wid, "state": "draining"}, status_code=202)


async def reload(request: Request) -> Response:
    state = _state(request)
    reloader = state.reloader
    problem = reloader.reload() if reloader is not None else "this master has no settings to reload"
    if problem is not None:
        return error(400, ErrorCode.BAD_REQUEST, problem)
    return JSONResponse({"reloaded": True})


async def rebalance(request: Request) -> Response:
    return JSONResponse({"shedding": await _state(request).rebalance(force=True)}, status_code=202)


def _counters(m: Metrics) -> dict[str, int]:
    """Counters since each worker started: 4029 closes, 4008 closes, refused handshakes, error frames."""
    return {"slow_consumer_closes": m.overflows, "idle_closes": m.idle_closes,
            "handshakes_refused": m.rejected, "errors": m.errors}


async def stats_json(state: MasterState) -> dict[str, Any]:
    totals = await state.store.totals(state.store_now())
    per_worker = []
    total_in = total_out = 0.0
    for w in await state.live_workers():
        m = w.metrics
        # rates over a window of the heartbeats' cumulative counters (mc/master/observe.py)
        rate_in, rate_out = state.rates.of(w.id, m)
        total_in += rate_in
        total_out += rate_out
        per_worker.append({
            **worker_json(w),
            "sessions": m.sessions,
            "subscriptions": m.subscriptions,
            "msgs_in_per_s": rate_in,
            "msgs_out_per_s": rate_out,
            "cpu_percent": m.cpu_percent,
            "rss_bytes": m.rss_bytes,
            **_counters(m),
        })
    t = totals.metrics
    return {
        "totals": {
            "workers": totals.workers,
            "draining": totals.draining,
            "connections": t.connections,
            "sessions": t.sessions,
            "subscriptions": t.subscriptions,
            "msgs_in_per_s": total_in,
            "msgs_out_per_s": total_out,
            "cpu_percent": t.cpu_percent,
            "rss_bytes": t.rss_bytes,
            **_counters(t),
        },
        "workers": per_worker,
    }


async def stats(request: Request) -> Response:
    return JSONResponse(await stats_json(_state(request)))


async def healthz(request: Request) -> Response:
    return Response(orjson.dumps({"ok": True}), media_type="application/json")


def store_unavailable(request: Request, exc: Exception) -> Response:
    """Any route whose store call failed (Redis unreachable): 503, retry shortly."""
    _state(request).store_failed(exc)
    return unavailable(f"the registry store is unavailable: {exc}")


# ------------------------------------------------------------ for the dashboard and browsers

#: ``GET /v1/sessions`` lists at most this many sessions (``total`` counts them all)
MAX_SESSIONS_LISTED = 1000
#: seconds between two ``GET /v1/events`` pushes
EVENTS_INTERVAL = 1.0


async def sessions(request: Request) -> Response:
    state = _state(request)
    await state.purge_lapsed()
    total, listed = await state.store.sessions(MAX_SESSIONS_LISTED)
    return JSONResponse({
        "total": total,
        "truncated": total > len(listed),
        "sessions": [{"session": s.session, "worker": s.worker_id, "members": s.members} for s in listed],
    })


def _history(request: Request) -> History:
    return request.app.state.history


async def stats_history(request: Request) -> Response:
    history = _history(request)
    seconds = parse_seconds(request.query_params.get("seconds"), history.capacity)
    if seconds is None:
        return error(400, ErrorCode.BAD_REQUEST, f"seconds must be an integer from 1 to {history.capacity}")
    return JSONResponse({"interval": 1, "samples": [s.to_json() for s in history.last(seconds)]})


async def snapshot(state: MasterState, history: History) -> dict[str, Any]:
    """What one ``/v1/events`` push carries: stats, the workers with their uptime, the latest sample."""
    await state.purge_lapsed()
    now = state.store_now()  # registered_at is on the store's clock
    latest = history.latest
    stats = await stats_json(state)
    uptimes = {w.id: round(now - w.registered_at, 1) for w in state.last_workers}
    for w in stats["workers"]:
        w["uptime_s"] = uptimes.get(w["id"], 0.0)
    return {
        "version": state.store.version_hint,
        "keys": bool(state.config.api_keys),  # the dashboard shows its login box when True
        **stats,
        "sample": latest.to_json() if latest is not None else None,
    }


async def events(request: Request) -> Response:
    """Server-sent events: one ``stats`` event a second (PROTOCOL.md "Observability")."""
    state, history = _state(request), _history(request)

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        while True:
            try:
                snap = await snapshot(state, history)
            except StoreUnavailable as exc:
                state.store_failed(exc)
                snap = {"error": "unavailable"}
            yield b"event: stats\ndata: " + orjson.dumps(snap) + b"\n\n"
            await trio.sleep(EVENTS_INTERVAL)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def static_file(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving a file of mc/master/static with an ETag (``304`` on a matching If-None-Match)."""
    body = resources.files("mc.master").joinpath(f"static/{name}").read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'

    async def endpoint(request: Request) -> Response:
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        match = request.headers.get("if-none-match", "")
        if etag in (t.strip() for t in match.split(",")) or match.strip() == "*":
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    return endpoint
