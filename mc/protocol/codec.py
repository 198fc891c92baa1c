"""The two wire codecs: ``mc.v1.json`` (orjson) and ``mc.v1.msgpack``.

A codec turns one frame map into bytes and back. Decoding failures of any
kind (bad UTF-8, bad JSON, bad msgpack, trailing bytes, extension types)
become a ProtocolError with close code 4000 and nothing else escapes.

One exception: a msgpack map whose keys are not strings (``{1: "x"}``, at
any depth) is well-formed msgpack that the protocol does not allow, and it is
answered like any other bad request: a ProtocolError ``bad_request`` without
a close code, carrying the frame's ``id`` when it has a valid one, so the
connection stays open (docs/protocol.md). Bytes keys remain data (a msgpack
recipient can carry them).

``data`` may be raw bytes in msgpack. JSON cannot hold bytes, so a JSON
connection receives such ``data`` as a base64 string (docs/protocol.md).
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import orjson

from .errors import ErrorCode, ProtocolError, violation
from .frames import MAX_ID

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
            stack.extend(value.values())  # keys are str or bytes (see _key_error)
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
            # ExtraData, FormatError, StackError and bad UTF-8 all land here,
            # and so does a key that is neither str nor bytes (strict_map_key).
            raise _key_error(data) or violation(
                f"undecodable msgpack frame: {type(exc).__name__}") from None
        # The byte scan is cheap; the walk only runs when a timestamp may be there.
        if any(head in data for head in _TIMESTAMP_HEADS) and _has_timestamp(obj):
            raise violation("msgpack extension types are not part of the protocol")
        return obj


def _key_error(data: bytes) -> ProtocolError | None:
    """The bad_request for a frame whose only fault is a non-string map key, else None.

    The slow path, taken only after the strict decode failed: decode again
    with every key allowed (through ``object_pairs_hook``, so unhashable
    array and map keys are seen too) and drop the offending pairs. If that
    decode fails as well, or finds an extension type, or the frame is not a
    map, the frame stays a violation (None).
    """
    bad_key = False
    dropped: list[Any] = []  # searched for timestamps too

    def pairs(items: list[tuple[Any, Any]]) -> dict[Any, Any]:
        nonlocal bad_key
        out = {}
        for key, value in items:
            if type(key) is str or type(key) is bytes:
                out[key] = value
            else:
                bad_key = True
                dropped.append([key, value])
        return out

    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_no_ext, object_pairs_hook=pairs
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not bad_key or type(obj) is not dict or _has_timestamp([obj, dropped]):
        return None
    rid = obj.get("id")
    if not (type(rid) is str and 1 <= len(rid) <= MAX_ID):
        rid = None
    return ProtocolError(ErrorCode.BAD_REQUEST, "map keys must be strings", request_id=rid)


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
