"""A frame encoded at most once per codec, written to many connections.

Fan-out (ARCHITECTURE.md principle 5): the map is encoded and framed the
first time a connection with a given codec needs it; every other recipient
with that codec gets the very same ``bytes`` object.
"""

from __future__ import annotations

from typing import Any, Iterable

from mc.protocol import JSON, Codec
from mc.websocket import OP_BINARY, OP_TEXT, encode_frame


def frame_bytes(codec: Codec, obj: Any) -> bytes:
    """One complete server->client WebSocket frame holding ``obj``."""
    return encode_frame(OP_TEXT if codec is JSON else OP_BINARY, codec.encode(obj))


class Prepared:
    __slots__ = ("obj", "_json", "_msgpack")

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self._json: bytes | None = None
        self._msgpack: bytes | None = None

    def for_codec(self, codec: Codec) -> bytes:
        if codec is JSON:
            if self._json is None:
                self._json = frame_bytes(codec, self.obj)
            return self._json
        if self._msgpack is None:
            self._msgpack = frame_bytes(codec, self.obj)
        return self._msgpack


def fan_out(obj: Any, peers: Iterable[Any]) -> int:
    """Write ``obj`` to every peer, encoding once per codec; returns the count.

    The same encoding as :class:`Prepared`, inlined: per recipient only a
    codec check and ``peer.write`` (no method call per recipient to find the
    bytes).
    """
    json_frame: bytes | None = None
    binary_frame: bytes | None = None
    count = 0
    for peer in peers:
        codec = peer.codec
        if codec is JSON:
            if json_frame is None:
                json_frame = encode_frame(OP_TEXT, codec.encode(obj))
            peer.write(json_frame)
        else:
            if binary_frame is None:
                binary_frame = encode_frame(OP_BINARY, codec.encode(obj))
            peer.write(binary_frame)
        count += 1
    return count
