"""Deciding a WebSocket handshake: accept, or answer with plain HTTP.

PROTOCOL.md "WebSocket endpoints": 400 (bad identity or subprotocol), 404
(chat ``mode=join`` on an unknown session), 409 (chat session full), 503
(at the connection limit, with ``Retry-After``), 307 (the session lives on
another worker). Decisions beyond the spec (docs/protocol.md): an unknown
path is 404 and a plain HTTP request on an endpoint is 426.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

from mc.protocol import Codec, ErrorCode, ProtocolError, negotiate
from mc.protocol.identity import parse_app, parse_chat, parse_consumer
from mc.websocket import HandshakeRequest, reject_response

from .cluster import ClusterUnavailable, SessionNotFound
from .peer import APP, CHAT, CONSUMER

if TYPE_CHECKING:
    from .server import Worker

CHAT_PREFIX = "/v1/chat/"
RETRY_AFTER = "1"


class Refused(Exception):
    """A handshake answered with plain HTTP instead of an upgrade."""

    def __init__(
        self, status: int, error: str, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers

    def response(self) -> bytes:
        body = orjson.dumps({"error": self.error, "reason": self.reason})
        return reject_response(
            self.status, body, (("Content-Type", "application/json"), *self.headers)
        )


@attrs.frozen
class Admitted:
    kind: str
    codec: Codec
    subprotocol: str | None
    identity: dict[str, Any]
    session: str | None = None


def redirect(location: str) -> Refused:
    return Refused(307, "redirect", f"go to {location}", (("Location", location),))


async def admit(worker: "Worker", req: HandshakeRequest) -> Admitted:
    """Validate ``req`` for its endpoint; raise Refused with the HTTP answer."""
    path = req.path
    if path in ("/v1/app", "/v1/consumer"):
        kind = APP if path == "/v1/app" else CONSUMER
    elif path.startswith(CHAT_PREFIX):
        kind = CHAT
    else:
        raise Refused(404, ErrorCode.NOT_FOUND, f"no endpoint at {path}")
    if not req.is_websocket:
        raise Refused(426, ErrorCode.BAD_REQUEST, "a WebSocket upgrade is required",
                      (("Upgrade", "websocket"),))
    if worker.draining:
        raise Refused(503, ErrorCode.UNAVAILABLE, "worker is draining",
                      (("Retry-After", RETRY_AFTER),))
    if len(worker.connections) >= worker.config.max_connections:
        raise Refused(503, ErrorCode.UNAVAILABLE, "worker is at its connection limit",
                      (("Retry-After", RETRY_AFTER),))
    codec = negotiate(req.subprotocols)
    if codec is None:
        raise Refused(400, ErrorCode.BAD_REQUEST,
                      "unsupported subprotocol: offer mc.v1.json or mc.v1.msgpack")
    subprotocol = codec.name if req.subprotocols else None
    try:
        if kind == APP:
            app = parse_app(req.query, req.headers)
            ident: dict[str, Any] = {"client": app.client, "device": app.device, "tags": app.tags}
            return Admitted(kind, codec, subprotocol, ident)
        if kind == CONSUMER:
            consumer = parse_consumer(req.query, req.headers)
            return Admitted(kind, codec, subprotocol, {"name": consumer.name})
        chat = parse_chat(path[len(CHAT_PREFIX):], req.query, req.headers)
    except ProtocolError as exc:
        raise Refused(400, exc.code, exc.reason) from None
    await _locate(worker, chat.session, chat.mode == "open", req.raw_query)
    room = worker.rooms.get(chat.session)
    if (
        room is not None
        and len(room) >= worker.rooms.max_members
        and not room.holds(chat.app.client, chat.app.device)
    ):
        raise Refused(409, ErrorCode.FORBIDDEN, "chat session is full")
    ident = {"client": chat.app.client, "device": chat.app.device, "tags": chat.app.tags}
    return Admitted(kind, codec, subprotocol, ident, chat.session)


async def _locate(worker: "Worker", session: str, create: bool, raw_query: str) -> None:
    """Make sure this worker owns ``session``, or refuse with 307 / 404."""
    if session in worker.rooms:
        return
    try:
        owner = await worker.cluster.locate_session(session, create)
    except SessionNotFound:
        raise Refused(404, ErrorCode.NOT_FOUND, f"no chat session {session!r}") from None
    except ClusterUnavailable as exc:
        raise Refused(503, ErrorCode.UNAVAILABLE, f"cannot locate the session: {exc}",
                      (("Retry-After", RETRY_AFTER),)) from None
    if owner is not None:
        query = f"?{raw_query}" if raw_query else ""
        raise redirect(f"{owner}{CHAT_PREFIX}{session}{query}")
