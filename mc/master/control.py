"""The master's end of the control link (``/v1/control``), one task per worker.

Every message is parsed into its class (mc/protocol/control.py) at the edge.
A malformed message is logged, counted and skipped: it never crashes the
master nor costs the link; only a first message that is not a valid
``register`` closes it (4000). The worker re-registers after any drop.
"""

from __future__ import annotations

import logging

import trio
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from mc.channels import batch_of, encoded
from mc.logs import Limited
from mc.protocol import JSON, MSGPACK, CloseCode, Codec, ProtocolError, Target
from mc.protocol.control import (
    TO_MASTER,
    Claim,
    ControlMessage,
    Delivered,
    Drained,
    ForwardNotify,
    HandedOff,
    HandOff,
    Heartbeat,
    Leave,
    Left,
    Lookup,
    Notified,
    Owner,
    Presence,
    Recorded,
    Register,
    Registered,
    Release,
    Reregister,
    parse_batch,
)
from mc.protocol.errors import violation
from mc.protocol.frames import Notification
from mc.security import bearer, key_matches

from .links import LinkOverflow, WorkerLink
from .registry import RegistryError, UnknownWorker
from .state import MasterState
from .store import StoreUnavailable

log = logging.getLogger("mc.master")
refusals = Limited(log, rate=1.0, burst=10.0)

REGISTER_TIMEOUT = 5.0
#: the store's answer to a lost link's lapse, at most (the lease ends it anyway)
LAPSE_TIMEOUT = 2.0
MAX_CONCURRENT_NOTIFIES = 256


async def control_endpoint(ws: WebSocket) -> None:
    state: MasterState = ws.app.state.master
    key = state.config.cluster_key
    if key and not key_matches(bearer(ws.headers.get("authorization")), (key,)):
        state.refused_links += 1
        client = ws.client.host if ws.client else "?"
        refusals.log(logging.WARNING, "link-refused",
                     "refused a control link from %s: no or wrong cluster key (%d refused)",
                     client, state.refused_links, remote=client, status=401)
        await ws.send_denial_response(JSONResponse(
            {"error": "unauthorized", "reason": "the control link needs the cluster key"}, status_code=401))
        return
    await ws.accept()
    link: WorkerLink | None = None
    try:
        with trio.fail_after(REGISTER_TIMEOUT):
            batch, codec = await _receive(state, ws)
        if len(batch) != 1:
            raise violation("the first control frame must hold one valid register, alone")
        link = await _register(state, batch[0], codec)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, ws, link, nursery.cancel_scope)
            await _reader(state, ws, link, nursery)
            nursery.cancel_scope.cancel()
    except* ProtocolError as group:
        reason = _first(group).reason  # type: ignore[attr-defined]
        log.warning("control link closed: %s", reason, extra={"code": int(CloseCode.VIOLATION),
                                                              "reason": reason})
        await _close(ws, CloseCode.VIOLATION, reason)
    except* RegistryError as group:
        await _close(ws, CloseCode.DRAINING, str(_first(group)))
    except* (WebSocketDisconnect, LinkOverflow, trio.TooSlowError, trio.BrokenResourceError,
             trio.ClosedResourceError):
        pass
    finally:
        # A link that closed while current, without a leave (a crashed worker:
        # its kernel closed the socket), makes the worker dead after a short
        # grace instead of the whole lease, unless it registers again first.
        if link is not None and state.links.detach(link):
            with trio.move_on_after(LAPSE_TIMEOUT, shield=True):  # a store call, during teardown
                await state.link_lost(link.worker_id)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _receive(state: MasterState, ws: WebSocket) -> tuple[list[ControlMessage], Codec]:
    """The valid control messages of one frame, and the frame's codec.

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
    try:
        decoded = MSGPACK.decode(raw) if raw is not None else JSON.decode(message.get("text") or "")
    except ProtocolError as bad:
        state.bad_control(bad.reason)
        return [], codec
    messages, errors = parse_batch(decoded, TO_MASTER)
    for exc in errors:
        state.bad_control(exc.reason)
    return messages, codec


async def _register(state: MasterState, msg: ControlMessage, codec: Codec) -> WorkerLink:
    if not isinstance(msg, Register):
        raise violation("the first control message must be a valid register")
    store = state.store
    now = state.store_now()
    wid = msg.worker
    link = WorkerLink(wid, state.config.link_queue, codec)
    state.links.attach(link)  # before the store names this master as its own (routing)
    try:
        await store.register(wid, msg.url, capacity=msg.capacity, now=now)
        if msg.draining:  # it was drained before this link (a master restart)
            await store.set_draining(wid)
        conflicts = await store.announce_sessions(wid, msg.sessions, now=now)
        state.kick(await store.presence_replace(wid, msg.presence))
    except BaseException:
        state.links.detach(link)
        raise
    state.touched()
    state.counters.registrations += 1
    link.send(Registered(state.config.lease, state.config.report_interval, tuple(conflicts)))
    log.info("worker %s registered at %s (%d sessions, %d apps)",
             wid, msg.url, len(msg.sessions), len(msg.presence), extra={"worker": wid, "url": msg.url})
    return link


async def _writer(ws: WebSocket, link: WorkerLink, scope: trio.CancelScope) -> None:
    async with link.receive_channel:
        codec = link.codec
        async for msg in link.receive_channel:
            for frame in encoded(batch_of(msg, link.receive_channel), codec.encode):
                if codec.binary:
                    await ws.send_bytes(frame)
                else:
                    await ws.send_text(frame.decode())
    scope.cancel()  # the link was closed (replaced or overflowed)


async def _reader(state: MasterState, ws: WebSocket, link: WorkerLink, nursery: trio.Nursery) -> None:
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_NOTIFIES)
    while True:
        batch, _ = await _receive(state, ws)
        run: list[Claim | Lookup] = []  # consecutive claims and lookups: one store round trip
        for msg in batch:
            if isinstance(msg, (Claim, Lookup)):
                run.append(msg)
                continue
            if run:
                await _locate(state, link, run)
                run = []
            try:
                await _handle(state, link, msg, nursery, limiter)
            except StoreUnavailable as exc:
                state.store_failed(exc)
                link.resync = True  # what it told us is lost: its full state, once the store is back
        if run:
            await _locate(state, link, run)


async def _locate(state: MasterState, link: WorkerLink, run: list[Claim | Lookup]) -> None:
    """Answer claims and lookups, in order. With the store unreachable, claims get "no owner"
    (the worker answers 503) and lookups no answer (503 after the worker's request timeout)."""
    wid = link.worker_id
    for m in run:
        if isinstance(m, Claim):
            state.counters.claims += 1
        else:
            state.counters.lookups += 1
    try:
        found = await state.store.locate(
            [(m.session, wid if isinstance(m, Claim) else None) for m in run], now=state.store_now())
    except StoreUnavailable as exc:
        state.store_failed(exc)
        for m in run:
            if isinstance(m, Claim):
                link.send(Owner(m.id, None, None, 0))
        return
    for m, where in zip(run, found, strict=True):
        link.send(Owner(m.id, where.owner, where.url, where.seq))


async def _handle(state: MasterState, link: WorkerLink, msg: ControlMessage,
                  nursery: trio.Nursery, limiter: trio.CapacityLimiter) -> None:
    store = state.store
    wid = link.worker_id
    if isinstance(msg, Heartbeat):
        state.counters.heartbeats += 1
        if not await store.heartbeat(wid, msg.metrics, now=state.store_now()) or link.resync:
            link.resync = False
            link.send(Reregister())
        else:
            state.rates.observe(wid, msg.metrics, state.now())
    elif isinstance(msg, Presence):
        try:
            state.kick(await store.presence_delta(wid, msg.added, msg.removed))
            for session, n in msg.members.items():
                await store.report_members(session, wid, n)
        except UnknownWorker:
            link.send(Reregister())
            return
        if msg.id is not None:  # the app's welcome waits for this
            link.send(Recorded(msg.id))
    elif isinstance(msg, HandOff):
        await state.hand_off(wid, msg.sessions)
        link.send(HandedOff())
    elif isinstance(msg, Drained):
        if await store.set_drained(wid):
            state.touched()
            log.info("worker %s drained", wid)
    elif isinstance(msg, Release):
        await store.release_session(msg.session, wid)
    elif isinstance(msg, ForwardNotify):
        token = object()
        await limiter.acquire_on_behalf_of(token)
        nursery.start_soon(_notify, state, link, limiter, token, msg.id, msg.to, msg.frame)
    elif isinstance(msg, Leave):
        await store.remove(wid)
        state.touched()
        log.info("worker %s left", wid)
        link.send(Left(msg.id))
    elif isinstance(msg, Delivered):
        state.links.replied(link, msg.id, msg.count)
    else:  # a second register
        state.bad_control(f"unexpected {msg.TYPE!r} on a registered link")


async def _notify(state: MasterState, link: WorkerLink, limiter: trio.CapacityLimiter,
                  token: object, rid: int, to: Target, frame: Notification) -> None:
    try:
        delivered = await state.route_notify(to, frame, exclude=link.worker_id)
        link.send(Notified(rid, delivered))
    finally:
        limiter.release_on_behalf_of(token)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason[:120])
    except Exception:  # the socket is already gone
        pass
