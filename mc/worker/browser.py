"""Handshake answers in frames for browsers (PROTOCOL.md "Browsers").

A browser cannot follow a ``307`` on a WebSocket handshake nor read a refused
handshake's status or body: it only sees close code 1006. A valid upgrade
with ``browser=1`` in its query is therefore accepted, and exactly one frame
follows, then a close: ``redirect`` (close 4307) instead of ``307``, or
``error`` with ``code``, ``reason``, ``status`` (and ``retry_after`` for 503)
and close ``4000 + status`` instead of 400/401/403/404/409/503. Pure: the
shell writes the bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mc.protocol import negotiate
from mc.websocket import HandshakeRequest, accept_response, encode_close, encode_frame
from mc.websocket.frames import OP_BINARY, OP_TEXT

from .answers import Respond

#: HTTP statuses answered in frames; any other stays a plain HTTP answer
FRAMED_STATUSES = frozenset({307, 400, 401, 403, 404, 409, 503})
REDIRECT_CLOSE = 4307


def wants_frames(query: Mapping[str, str]) -> bool:
    """Whether a handshake asked for answers in frames (``browser=1``)."""
    return query.get("browser") == "1"


def frame_of(status: int, body: Any, headers: Mapping[str, str]) -> tuple[dict[str, Any], int]:
    """The frame and close code that stand for an HTTP answer (status, JSON body, headers)."""
    if status == 307:
        return {"type": "redirect", "url": headers.get("location", "")}, REDIRECT_CLOSE
    body = body if isinstance(body, dict) else {}
    frame: dict[str, Any] = {
        "type": "error",
        "code": str(body.get("error", "")),
        "reason": str(body.get("reason", "")),
        "status": status,
    }
    retry = headers.get("retry-after")
    if status == 503 and retry is not None and retry.isdigit():
        frame["retry_after"] = int(retry)
    return frame, 4000 + status


def browser_answer(request: HandshakeRequest, answer: Respond) -> bytes | None:
    """101 + the frame + a close for a ``browser=1`` upgrade, or None to answer in HTTP."""
    if not (request.is_websocket and wants_frames(request.query)) or answer.status not in FRAMED_STATUSES:
        return None
    codec = negotiate(request.subprotocols)
    if codec is None:  # offered only unknown subprotocols: no frame the client could read
        return None
    subprotocol = codec.name if request.subprotocols else None
    frame, close = frame_of(answer.status, answer.body, {k.lower(): v for k, v in answer.headers})
    opcode = OP_BINARY if codec.binary else OP_TEXT
    return (accept_response(request, subprotocol) + encode_frame(opcode, codec.encode(frame))
            + encode_close(close, str(frame.get("code", "redirect"))[:100]))
