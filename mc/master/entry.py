"""The master's WebSocket entry point: every data-plane handshake gets ``307``.

A client needs only the master URL (PROTOCOL.md "Addresses"): ``/v1/app`` and
``/v1/consumer`` go to the least loaded live worker, ``/v1/chat/{session}`` to
the session's owner (or, with no owner, to the least loaded worker, which then
claims it; ``mode=join`` with no owner is ``404``). The identity is validated
here first, so a bad handshake gets the same ``400`` as on a worker. Plain
HTTP GETs of these paths are answered the same way, which lets tools without
WebSocket support discover where to connect.

A handshake with ``browser=1`` gets the same answer in frames instead
(PROTOCOL.md "Browsers"; mc.worker.browser): accepted, one ``redirect`` or
``error`` frame, then close 4307 or 4000 + status. A handshake whose
``Origin`` is not allowed (mc.master.origins) is ``403``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from mc.identify import APP, CHAT, CONSUMER, Refusal, identify
from mc.protocol import ErrorCode, negotiate
from mc.worker.browser import FRAMED_STATUSES, frame_of, wants_frames

from .origins import refused
from .state import MasterState
from .store import StoreUnavailable

RETRY_AFTER = "1"


def error(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status, headers=headers)


def unavailable(reason: str) -> JSONResponse:
    return error(503, ErrorCode.UNAVAILABLE, reason, {"Retry-After": RETRY_AFTER})


async def decide(state: MasterState, conn: HTTPConnection) -> Response:
    """The HTTP answer to a handshake at the master: 307, or an error."""
    path = conn.url.path
    raw_query = conn.url.query
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    kind = {"/v1/app": APP, "/v1/consumer": CONSUMER}.get(path, CHAT)
    try:
        who = identify(kind, conn.path_params.get("session"), query, conn.headers,
                       tokens=state.tokens, api_keys=state.config.api_keys)
    except Refusal as exc:
        return error(exc.status, exc.code, exc.reason)
    if who.session is not None:
        found = (await state.store.locate([(who.session, None)], now=state.store_now()))[0]
        if found.url is not None:
            return _redirect(found.url, path, raw_query)
        if who.mode == "join":
            return error(404, ErrorCode.NOT_FOUND, f"no chat session {who.session!r}")
    worker = await state.assign()
    if worker is None:
        return unavailable("no live worker can take a connection")
    return _redirect(worker.url, path, raw_query)


def _redirect(base: str, path: str, raw_query: str) -> Response:
    location = f"{base}{path}?{raw_query}" if raw_query else f"{base}{path}"
    return Response(status_code=307, headers={"Location": location})


async def _settle(state: MasterState, conn: HTTPConnection) -> None:
    """For a chat path: wait while the session's owner is suspect (its link just dropped).

    **Decision:** a member re-opening a session whose owner crashed is held
    here (at most the dead-link grace) until the master knows whether the
    owner is back or dead, then sent to the right place, instead of being
    redirected to a worker that is probably gone.
    """
    session = conn.path_params.get("session")
    if isinstance(session, str):
        await state.owner_settled(session)


def origin_refusal(conn: HTTPConnection) -> Response | None:
    """403 for a handshake whose Origin ``allowed_origins`` does not list."""
    origin = conn.headers.get("origin")
    allowed = conn.app.state.master.config.allowed_origins
    if origin is not None and refused(origin, conn.headers, conn.url.scheme, allowed):
        return error(403, ErrorCode.FORBIDDEN, f"origin {origin[:200]!r} is not allowed")
    return None


async def _answer(conn: HTTPConnection) -> Response:
    refusal = origin_refusal(conn)
    if refusal is not None:
        return refusal
    state: MasterState = conn.app.state.master
    try:
        await _settle(state, conn)
        return await decide(state, conn)
    except StoreUnavailable as exc:
        state.store_failed(exc)
        return unavailable(f"the registry store is unavailable: {exc}")


async def websocket_entry(ws: WebSocket) -> None:
    answer = await _answer(ws)
    codec = negotiate(ws.scope.get("subprotocols") or [])
    if not wants_frames(ws.query_params) or answer.status_code not in FRAMED_STATUSES or codec is None:
        await ws.send_denial_response(answer)
        return
    body = orjson.loads(answer.body) if answer.body else {}
    frame, code = frame_of(answer.status_code, body, answer.headers)
    await ws.accept(subprotocol=codec.name if ws.scope.get("subprotocols") else None)
    if codec.binary:
        await ws.send_bytes(codec.encode(frame))
    else:
        await ws.send_text(codec.encode(frame).decode())
    await ws.close(code, str(frame.get("code", "redirect"))[:100])


async def http_entry(request: HTTPConnection) -> Response:
    return await _answer(request)
