"""The master's end of the control link (``/v1/control``), one task per worker.

Validates every message (a malformed one closes the link with 4000), applies
it to the registry and answers; the worker re-registers after any drop. See
mc/protocol/control.py for the message catalogue.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from mc.protocol import JSON, MSGPACK, Codec, CloseCode, ProtocolError, Target, is_name
from mc.protocol.errors import violation
from mc.channels import batch_of
from mc.protocol.control import MAX_BATCH, counts, field, pairs

from .links import LinkOverflow, WorkerLink
from .registry import Metrics, RegistryError, UnknownWorker
from .state import MasterState

log = logging.getLogger("mc.master")

REGISTER_TIMEOUT = 5.0
MAX_CONCURRENT_NOTIFIES = 256


async def control_endpoint(ws: WebSocket) -> None:
    state: MasterState = ws.app.state.master
    await ws.accept()
    link: WorkerLink | None = None
    try:
        with trio.fail_after(REGISTER_TIMEOUT):
            (hello, *rest), codec = await _receive(ws)
        if rest:
            raise violation("register must come alone")
        link = _register(state, hello, codec)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, ws, link, nursery.cancel_scope)
            await _reader(state, ws, link, nursery)
            nursery.cancel_scope.cancel()
    except* ProtocolError as group:
        reason = _first(group).reason  # type: ignore[attr-defined]
        log.warning("control link closed: %s", reason)
        await _close(ws, CloseCode.VIOLATION, reason)
    except* RegistryError as group:
        await _close(ws, CloseCode.DRAINING, str(_first(group)))
    except* (WebSocketDisconnect, LinkOverflow, trio.TooSlowError, trio.BrokenResourceError,
             trio.ClosedResourceError):
        pass
    finally:
        if link is not None:
            state.links.detach(link)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _receive(ws: WebSocket) -> tuple[list[dict[str, Any]], Codec]:
    """The control messages of one frame, and the frame's codec.

    Workers send msgpack in binary frames (so notify ``data`` may hold bytes);
    JSON text frames are accepted for tools and tests, and replies use the
    codec of the link's first frame. A frame holds one message (a map) or a
    batch (a list of maps): batching is what lets one master serve tens of
    thousands of claims per second despite the per-frame cost of the ASGI stack.
    """
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("bytes")
    codec: Codec = MSGPACK if raw is not None else JSON
    decoded = codec.decode(raw if raw is not None else message.get("text") or "")
    batch = decoded if type(decoded) is list else [decoded]
    if not batch or len(batch) > MAX_BATCH or any(type(m) is not dict for m in batch):
        raise violation(f"a control frame holds a map or a list of 1 to {MAX_BATCH} maps")
    return batch, codec


def _register(state: MasterState, msg: dict[str, Any], codec: Codec) -> WorkerLink:
    if msg.get("type") != "register":
        raise violation("the first control message must be register")
    wid = field(msg, "worker", str)
    url = field(msg, "url", str)
    capacity = field(msg, "capacity", int)
    if not is_name(wid) or not url.startswith(("ws://", "wss://")) or capacity < 1:
        raise violation("bad register message")
    sessions = counts(msg, "sessions")
    presence = pairs(msg, "presence")
    reg = state.registry
    now = state.now()
    reg.register(wid, url, capacity=capacity, now=now)
    if msg.get("draining") is True:  # it was drained before this link (a master restart)
        reg.set_draining(wid)
    conflicts = reg.announce_sessions(wid, sessions, now=now)
    state.kick(reg.presence_replace(wid, presence))
    state.touched()
    link = WorkerLink(wid, state.config.link_queue, codec)
    state.links.attach(link)
    link.send({
        "type": "registered",
        "lease": state.config.lease,
        "interval": state.config.report_interval,
        "conflicts": conflicts,
    })
    log.info("worker %s registered at %s (%d sessions, %d apps)", wid, url, len(sessions), len(presence))
    return link


async def _writer(ws: WebSocket, link: WorkerLink, scope: trio.CancelScope) -> None:
    async with link.receive_channel:
        codec = link.codec
        async for msg in link.receive_channel:
            frame = codec.encode(batch_of(msg, link.receive_channel))
            if codec.binary:
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame.decode())
    scope.cancel()  # the link was closed (replaced or overflowed)


async def _reader(state: MasterState, ws: WebSocket, link: WorkerLink, nursery: trio.Nursery) -> None:
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_NOTIFIES)
    while True:
        batch, _ = await _receive(ws)
        for msg in batch:
            await _handle(state, link, msg, nursery, limiter)


async def _handle(state: MasterState, link: WorkerLink, msg: dict[str, Any],
                  nursery: trio.Nursery, limiter: trio.CapacityLimiter) -> None:
    reg = state.registry
    wid = link.worker_id
    kind = msg.get("type")
    now = state.now()
    if kind == "heartbeat":
        metrics = field(msg, "metrics", dict)
        try:
            ok = reg.heartbeat(wid, Metrics(**metrics), now=now)
        except (TypeError, ValueError):
            raise violation("bad metrics") from None
        if not ok:
            link.send({"type": "reregister"})
    elif kind == "presence":
        try:
            state.kick(reg.presence_delta(wid, pairs(msg, "added"), pairs(msg, "removed")))
            for session, n in counts(msg, "members").items():
                reg.report_members(session, wid, n)
        except UnknownWorker:
            link.send({"type": "reregister"})
    elif kind in ("claim", "lookup"):
        session = field(msg, "session", str)
        owner = _owner(state, kind, session, wid, now)
        link.send({"type": "owner", "id": msg.get("id"), "worker": owner,
                   "url": state.url_of(owner) if owner else None})
    elif kind == "release":
        reg.release_session(field(msg, "session", str), wid)
    elif kind == "notify":
        to = Target.parse(msg.get("to"))
        frame = field(msg, "frame", dict)
        token = object()
        await limiter.acquire_on_behalf_of(token)
        nursery.start_soon(_notify, state, link, limiter, token, msg.get("id"), to, frame)
    elif kind == "leave":
        reg.remove(wid)
        state.touched()
        log.info("worker %s left", wid)
        link.send({"type": "left", "id": msg.get("id")})
    elif kind == "delivered":
        state.links.replied(link, msg.get("id"), msg.get("count"))
    else:
        raise violation(f"unknown control message {kind!r}")


def _owner(state: MasterState, kind: str, session: str, wid: str, now: float) -> str | None:
    if not is_name(session):
        raise violation("bad session")
    reg = state.registry
    if kind == "claim":
        try:
            return reg.claim_session(session, wid, now=now)
        except UnknownWorker:
            return None
    state.purge_lapsed()
    info = reg.lookup_session(session)
    return None if info is None else info.worker_id


async def _notify(state: MasterState, link: WorkerLink, limiter: trio.CapacityLimiter,
                  token: object, rid: Any, to: Target, frame: dict[str, Any]) -> None:
    try:
        delivered = await state.route_notify(to, frame, exclude=link.worker_id)
        link.send({"type": "notified", "id": rid, "delivered": delivered})
    finally:
        limiter.release_on_behalf_of(token)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason[:120])
    except Exception:  # the socket is already gone
        pass
