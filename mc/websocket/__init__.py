"""Sans-IO RFC 6455 (server side) for the worker's hot path.

Why not wsproto: once the handshake is done the worker owns the TCP socket
and parses every frame itself. wsproto spends ~6-14 us per small masked frame
(generators, per-frame objects, a general-purpose buffer); :class:`FrameParser`
needs ~1 us. wsproto stays the reference: the tests check this codec against it
differentially. No I/O here (no trio, no sockets): callers feed bytes in and
write the returned bytes out.
"""

from mc.websocket.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    WebSocketError,
    encode_close,
    encode_frame,
    encode_masked_frame,
)
from mc.websocket.handshake import (
    HandshakeError,
    HandshakeReader,
    HandshakeRequest,
    accept_response,
    reject_response,
)

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "HandshakeError",
    "HandshakeReader",
    "HandshakeRequest",
    "WebSocketError",
    "accept_response",
    "encode_close",
    "encode_frame",
    "encode_masked_frame",
    "reject_response",
]
