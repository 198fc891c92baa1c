"""The master's WebSocket entry point: every data-plane handshake gets ``307``.

A client needs only the master URL (PROTOCOL.md "Addresses"): ``/v1/app`` and
``/v1/consumer`` go to the least loaded live worker, ``/v1/chat/{session}`` to
the session's owner (or, with no owner, to the least loaded worker, which then
claims it; ``mode=join`` with no owner is ``404``). The identity is validated
here first, so a bad handshake gets the same ``400`` as on a worker. Plain
HTTP GETs of these paths are answered the same way, which lets tools without
WebSocket support discover where to connect.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from mc.protocol import ErrorCode, ProtocolError
from mc.protocol.identity import parse_app, parse_chat, parse_consumer

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
    try:
        if path == "/v1/app":
            parse_app(query, conn.headers)
        elif path == "/v1/consumer":
            parse_consumer(query, conn.headers)
        else:
            chat = parse_chat(conn.path_params["session"], query, conn.headers)
            found = (await state.store.locate([(chat.session, None)], now=state.store_now()))[0]
            url = found.url
            if url is not None:
                return _redirect(url, path, raw_query)
            if chat.mode == "join":
                return error(404, ErrorCode.NOT_FOUND, f"no chat session {chat.session!r}")
    except ProtocolError as exc:
        return error(400, exc.code, exc.reason)
    worker = await state.assign()
    if worker is None:
        return unavailable("no live worker can take a connection")
    return _redirect(worker.url, path, raw_query)


def _redirect(base: str, path: str, raw_query: str) -> Response:
    location = f"{base}{path}?{raw_query}" if raw_query else f"{base}{path}"
    return Response(status_code=307, headers={"Location": location})


async def websocket_entry(ws: WebSocket) -> None:
    state: MasterState = ws.app.state.master
    try:
        answer = await decide(state, ws)
    except StoreUnavailable as exc:
        state.store_failed(exc)
        answer = unavailable(f"the registry store is unavailable: {exc}")
    await ws.send_denial_response(answer)


async def http_entry(request: HTTPConnection) -> Response:
    state: MasterState = request.app.state.master
    try:
        return await decide(state, request)
    except StoreUnavailable as exc:
        state.store_failed(exc)
        return unavailable(f"the registry store is unavailable: {exc}")
