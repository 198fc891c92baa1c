"""The master's HTTP API (PROTOCOL.md "Master HTTP API"), as Starlette handlers.

Every input is validated: query values with mc.protocol's name rules, bodies
as JSON objects of at most ``max_body`` bytes; errors are JSON
``{"error", "reason"}`` with a 4xx status, never a traceback.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mc.protocol import ErrorCode, ProtocolError, Target, is_name
from mc.protocol.control import Metrics
from mc.protocol.frames import MAX_ID, Notification

from .entry import error, unavailable
from .registry import WorkerInfo
from .state import MasterState

_notify_ids = itertools.count(1)
_boot = f"{time.time_ns():x}"


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


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, or ProtocolError (400/413 by code)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ProtocolError(ErrorCode.TOO_LARGE, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"body larger than {limit} bytes")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body must be JSON") from None
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    return obj


async def notify(request: Request) -> Response:
    state = _state(request)
    try:
        body = await read_json(request, state.config.max_body)
        target = Target.parse(body.get("to"))
        if "data" not in body:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "data is required")
        nid = body.get("id")
        if nid is not None and not (type(nid) is str and 1 <= len(nid) <= MAX_ID):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"id must be a string of 1 to {MAX_ID} characters")
    except ProtocolError as exc:
        return error(413 if exc.code == ErrorCode.TOO_LARGE else 400, exc.code, exc.reason)
    await state.purge_lapsed()
    store = state.store
    if target.client is not None and not await store.workers_for(target.client, target.device):
        return error(404, "offline", f"client {target.client!r} has no matching connection")
    if nid is not None and await store.seen_notify_id(nid, now=state.store_now()):
        return error(409, "duplicate", f"notify id {nid!r} was used in the last 10 minutes")
    frame = Notification(body["data"], "api", nid if nid is not None else f"api-{_boot}-{next(_notify_ids)}")
    delivered = await state.route_notify(target, frame)
    return JSONResponse({"delivered": delivered})


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


async def rebalance(request: Request) -> Response:
    return JSONResponse({"shedding": await _state(request).rebalance(force=True)}, status_code=202)


def _counters(m: Metrics) -> dict[str, int]:
    """Counters since each worker started: 4029 closes, 4008 closes, refused handshakes, error frames."""
    return {"slow_consumer_closes": m.overflows, "idle_closes": m.idle_closes,
            "handshakes_refused": m.rejected, "errors": m.errors}


async def stats_json(state: MasterState) -> dict[str, Any]:
    totals = await state.store.totals(state.store_now())
    per_worker = []
    for w in await state.live_workers():
        m = w.metrics
        per_worker.append({
            **worker_json(w),
            "sessions": m.sessions,
            "subscriptions": m.subscriptions,
            "msgs_in_per_s": m.msgs_in_rate,
            "msgs_out_per_s": m.msgs_out_rate,
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
            "msgs_in_per_s": t.msgs_in_rate,
            "msgs_out_per_s": t.msgs_out_rate,
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

