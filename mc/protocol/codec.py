"""The two wire codecs: ``mc.v1.json`` (orjson) and ``mc.v1.msgpack``.

A codec turns one frame map into bytes and back. Decoding failures of any
kind (bad UTF-8, bad JSON, bad msgpack, trailing bytes, non-string keys)
become a ProtocolError with close code 4000 and nothing else escapes.

``data`` may be raw bytes in msgpack. JSON cannot hold bytes, so a JSON
connection receives such ``data`` as a base64 string (docs/protocol.md).
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import orjson

from .errors import ErrorCode, ProtocolError, violation

JSON_SUBPROTOCOL = "mc.v1.json"
MSGPACK_SUBPROTOCOL = "mc.v1.msgpack"


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not encodable")


class JsonCodec:
    """Text frames, one UTF-8 JSON object each."""

    name = JSON_SUBPROTOCOL
    binary = False

    @staticmethod
    def encode(obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=_bytes_as_base64)
        except (orjson.JSONEncodeError, TypeError) as exc:
            # e.g. a msgpack map with bytes keys inside ``data``
            raise _unencodable("JSON", exc) from None

    @staticmethod
    def decode(data: bytes | str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise violation(f"undecodable JSON frame: {exc}") from None


def _unencodable(codec: str, exc: Exception) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"data cannot be encoded as {codec}: {exc}")


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack extension types are not part of the protocol")


# msgpack decodes extension type -1 (timestamp) itself, without calling
# ext_hook; these are its three encodings (fixext4, fixext8, ext8 of 12 bytes).
_TIMESTAMP_HEADS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _has_timestamp(obj: Any) -> bool:
    stack = [obj]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            stack.extend(value.values())  # keys are str or bytes (strict_map_key)
        elif type(value) is list:
            stack.extend(value)
        elif isinstance(value, msgpack.Timestamp):
            return True
    return False


_packer = msgpack.Packer(use_bin_type=True)


class MsgpackCodec:
    """Binary frames, one msgpack map each (str keys, bin for bytes)."""

    name = MSGPACK_SUBPROTOCOL
    binary = True

    @staticmethod
    def encode(obj: Any) -> bytes:
        try:
            return _packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unencodable("msgpack", exc) from None

    @staticmethod
    def decode(data: bytes) -> Any:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # ExtraData, FormatError, StackError and bad UTF-8 all land here.
            raise violation(f"undecodable msgpack frame: {type(exc).__name__}") from None
        # The byte scan is cheap; the walk only runs when a timestamp may be there.
        if any(head in data for head in _TIMESTAMP_HEADS) and _has_timestamp(obj):
            raise violation("msgpack extension types are not part of the protocol")
        return obj


JSON = JsonCodec()
MSGPACK = MsgpackCodec()
CODECS: dict[str, JsonCodec | MsgpackCodec] = {JSON.name: JSON, MSGPACK.name: MSGPACK}

Codec = JsonCodec | MsgpackCodec


def negotiate(offered: list[str]) -> Codec | None:
    """The codec for a handshake's offered subprotocols, in the client's order.

    No offer means JSON; an offer naming none of ours means ``None`` (the
    handshake is refused with 400 rather than silently picking a codec the
    client did not ask for).
    """
    if not offered:
        return JSON
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None
