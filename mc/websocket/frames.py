"""RFC 6455 frame parser and encoders, tuned for many small frames.

The common case on a worker is one small masked text frame per ``recv``.
:meth:`FrameParser.feed` parses every complete frame straight out of the
received buffer (no intermediate buffer object, no per-frame objects besides
the event tuple), unmasks with ``websockets``' C ``apply_mask`` (a pure-Python
big-int XOR where that extension is missing) and validates text with
``bytes.isascii`` before falling back to a real UTF-8 decode. Fragmented
messages and partial frames take slower, rarer paths.
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import Any, TypeAlias

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

#: What :meth:`FrameParser.feed` returns: ``(opcode, payload)``. The payload is
#: bytes, except for OP_CLOSE: ``(code or None, reason)``. Its type follows the
#: opcode, which a static type cannot say, hence ``Any``.
Event: TypeAlias = tuple[int, Any]

_PROTOCOL_ERROR = 1002
_INVALID_DATA = 1007
_TOO_BIG = 1009

# Close codes a peer may send (RFC 6455 7.4 and the IANA registry as wsproto
# knows it): 1004-1006 and 1015 are reserved or local-only; 1014 is not
# accepted either, to agree with wsproto, the reference implementation.
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1014)})

# The int XOR costs ~2.5 ns/byte, the four strided ``translate`` calls ~0.8
# ns/byte plus ~0.6 us of fixed cost: the int wins below ~1.5 KiB.
_INT_XOR_MAX = 1024
_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]

# For payloads shorter than 126 bytes (most frames) the key stream is built
# arithmetically: key * _REP[n] repeats the 4 key bytes, & _LOW[n] cuts it to n bytes.
_REP = [int.from_bytes(b"\x01\0\0\0" * ((n + 3) >> 2), "little") for n in range(126)]
_LOW = [(1 << (n << 3)) - 1 for n in range(126)]
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _valid_close_code(code: int) -> bool:
    return code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999


def py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (masking is symmetric), in Python."""
    n = len(data)
    if n < 126:
        stream = int.from_bytes(mask, "little") * _REP[n] & _LOW[n]
        return (int.from_bytes(data, "little") ^ stream).to_bytes(n, "little")
    if n <= _INT_XOR_MAX:
        stream = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ stream).to_bytes(n, "little")
    out = bytearray(data)
    for lane in range(4):
        out[lane::4] = out[lane::4].translate(_XOR_TABLES[mask[lane]])
    return bytes(out)


# ``websockets`` (a dependency for this alone) ships the mask as a 13-line C loop:
# ~55 ns for a 100-byte chat frame where the big-int XOR takes ~400 ns, the largest
# single cost of parsing a relayed message. Its pure-Python wheels lack it.
try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the compiled extension
    apply_mask = py_apply_mask


class WebSocketError(Exception):
    """A violation that fails the connection (RFC 6455 7.1.7).

    Send a close frame with ``close_code`` and drop the connection.
    ``events`` holds the events that were complete before the violation in the
    same :meth:`FrameParser.feed` call: they are valid and may be delivered
    first (wsproto delivers them too).
    """

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.events: list[Event] = []


class FrameParser:
    """Incremental parser for the frames one peer sends.

    ``feed`` returns the complete events in order: ``(OP_TEXT, bytes)`` (valid
    UTF-8, reassembled), ``(OP_BINARY, bytes)``, ``(OP_PING, bytes)``,
    ``(OP_PONG, bytes)`` and ``(OP_CLOSE, (code or None, reason))``. After a
    close event the rest of the stream is ignored (nothing may follow a close
    frame); after a :class:`WebSocketError` every ``feed`` raises again.

    A message whose declared size (across fragments) exceeds ``max_message``
    is rejected with 1009 as soon as its frame header arrives, so at most
    ``max_message`` plus one frame header is ever buffered. A message split
    into more than ``max_fragments`` frames is rejected with 1009 too (a
    flood of empty continuation frames would otherwise cost memory and CPU
    per fragment while staying under the size limit), as wsproto-based
    servers do.
    ``expect_masked=False`` parses server-to-client frames (load generators).
    """

    __slots__ = (
        "_max",
        "_max_fragments",
        "_mask_bit",
        "_pending",
        "_pending_len",
        "_need",
        "_msg_op",
        "_msg_parts",
        "_msg_size",
        "_msg_utf8",
        "_error",
        "_closed",
    )

    def __init__(
        self, max_message: int = 65536, *, max_fragments: int = 1024, expect_masked: bool = True
    ) -> None:
        self._max = max_message
        self._max_fragments = max_fragments
        self._mask_bit = 0x80 if expect_masked else 0
        # Chunks of an incomplete frame; joined once ``_need`` bytes are there,
        # so a big frame arriving in many pieces is copied once, not per piece.
        # (Both lists start as the shared empty tuple: an idle connection's
        # parser holds no list of its own.)
        self._pending: list[bytes] | tuple[()] = ()
        self._pending_len = 0
        self._need = 0
        # The open fragmented message: opcode (0: none), payloads, total size
        # and, for text, the incremental UTF-8 validator.
        self._msg_op = 0
        self._msg_parts: list[bytes] | tuple[()] = ()
        self._msg_size = 0
        self._msg_utf8: codecs.IncrementalDecoder | None = None
        self._error: WebSocketError | None = None
        self._closed = False

    @property
    def at_boundary(self) -> bool:
        """No partial frame is buffered: the next byte fed starts a frame (the reactor's bare-pong check)."""
        return not self._pending

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` (the next bytes of the stream) into complete events."""
        if self._error is not None:
            raise WebSocketError(self._error.close_code, self._error.reason)
        if self._closed:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # never keep a reference to a reusable buffer
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return []
            data = b"".join(self._pending)
            self._pending = ()

        events: list[Event] = []
        mask_bit = self._mask_bit
        head_short = 6 if mask_bit else 2
        max_ = self._max
        msg_op = self._msg_op  # changes only in _fragment, which refreshes it
        unmask = apply_mask
        end = len(data)
        pos = 0
        while True:
            avail = end - pos
            if avail < 2:
                need = 2
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 ^ mask_bit  # the length if the mask bit is right, else >= 128
            if ln < 126 and (b0 == 0x81 or b0 == 0x82) and ln <= max_ and not msg_op:
                # The hot path: a whole short text or binary frame, correctly masked, no
                # fragmented message open; the checks below could not fail for it.
                need = head_short + ln
                if avail < need:
                    break
                start = pos + head_short
                pos = start + ln
                payload = data[start:pos]
                if mask_bit:
                    payload = unmask(payload, data[start - 4 : start])
                if b0 == 0x81 and not payload.isascii():
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self._fail(_INVALID_DATA, "invalid UTF-8", events) from None
                events.append((b0 & 0x0F, payload))
                continue
            op = b0 & 0x0F
            ln = b1 & 0x7F
            if b0 & 0x70:
                raise self._fail(_PROTOCOL_ERROR, "reserved bits set", events)
            if b1 & 0x80 != mask_bit:
                raise self._fail(_PROTOCOL_ERROR, "wrong masking", events)
            if op & 8:
                if op > OP_PONG:
                    raise self._fail(_PROTOCOL_ERROR, f"unknown opcode {op}", events)
                if not b0 & 0x80:
                    raise self._fail(_PROTOCOL_ERROR, "fragmented control frame", events)
                if ln > 125:
                    raise self._fail(_PROTOCOL_ERROR, "control frame too long", events)
            elif op > OP_BINARY:
                raise self._fail(_PROTOCOL_ERROR, f"unknown opcode {op}", events)
            elif op == OP_CONT:
                if not self._msg_op:
                    raise self._fail(_PROTOCOL_ERROR, "continuation without a message", events)
            elif self._msg_op:
                raise self._fail(_PROTOCOL_ERROR, "new message inside a fragmented one", events)

            head = 2
            if ln == 126:
                if avail < 4:
                    need = 4
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                head = 4
                if ln < 126:
                    raise self._fail(_PROTOCOL_ERROR, "non-minimal length", events)
            elif ln == 127:
                if avail < 10:
                    need = 10
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
                if ln < 0x10000 or ln >> 63:
                    raise self._fail(_PROTOCOL_ERROR, "invalid 64-bit length", events)
            if not op & 8 and self._msg_size + ln > self._max:
                raise self._fail(_TOO_BIG, f"message larger than {self._max} bytes", events)
            if mask_bit:
                head += 4
            need = head + ln
            if avail < need:
                break

            start = pos + head
            pos = start + ln
            payload = data[start:pos]
            if mask_bit:
                payload = unmask(payload, data[start - 4 : start])

            if op & 8:
                if op == OP_CLOSE:
                    events.append((OP_CLOSE, self._close_payload(payload, events)))
                    self._closed = True
                    return events
                events.append((op, payload))
            elif b0 & 0x80 and op:
                if op == OP_TEXT and not payload.isascii():
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self._fail(_INVALID_DATA, "invalid UTF-8", events) from None
                events.append((op, payload))
            else:
                self._fragment(op, b0 & 0x80, payload, events)
                msg_op = self._msg_op

        if pos < end:
            self._pending = [data[pos:]]
            self._pending_len = end - pos
            self._need = need
        return events

    def _fragment(self, op: int, fin: int, payload: bytes, events: list) -> None:
        """Add one frame of a fragmented message; emit the message on its last frame."""
        if op:
            self._msg_op = op
            self._msg_parts = []
            self._msg_utf8 = _utf8_decoder() if op == OP_TEXT else None
        if self._msg_utf8 is not None:
            try:
                self._msg_utf8.decode(payload, bool(fin))
            except UnicodeDecodeError:
                raise self._fail(_INVALID_DATA, "invalid UTF-8", events) from None
        parts = self._msg_parts
        if len(parts) >= self._max_fragments:
            raise self._fail(_TOO_BIG, f"message in more than {self._max_fragments} fragments", events)
        parts.append(payload)  # type: ignore[union-attr]
        self._msg_size += len(payload)
        if fin:
            events.append((self._msg_op, b"".join(self._msg_parts)))
            self._msg_op = 0
            self._msg_parts = ()
            self._msg_size = 0
            self._msg_utf8 = None

    def _close_payload(self, payload: bytes, events: list) -> tuple[int | None, str]:
        if not payload:
            return None, ""
        if len(payload) == 1:
            raise self._fail(_PROTOCOL_ERROR, "close payload of 1 byte", events)
        code = (payload[0] << 8) | payload[1]
        if not _valid_close_code(code):
            raise self._fail(_PROTOCOL_ERROR, f"invalid close code {code}", events)
        try:
            return code, payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(_INVALID_DATA, "invalid UTF-8 in close reason", events) from None

    def _fail(self, code: int, reason: str, events: list) -> WebSocketError:
        """Enter the failed state, dropping every buffer; return the error to raise."""
        error = WebSocketError(code, reason)
        error.events = events
        self._error = error
        self._pending = ()
        self._msg_parts = ()
        self._msg_utf8 = None
        return error


def _header(first: int, mask_bit: int, n: int) -> bytes:
    if n < 126:
        return bytes((first, mask_bit | n))
    if n < 0x10000:
        return struct.pack("!BBH", first, mask_bit | 126, n)
    return struct.pack("!BBQ", first, mask_bit | 127, n)


def _first_byte(opcode: int, fin: bool, n: int) -> int:
    """Validate what the peer would check and return the FIN/opcode byte."""
    if opcode not in _OPCODES:
        raise ValueError(f"unknown opcode {opcode}")
    if opcode & 8 and (n > 125 or not fin):
        raise ValueError("control frames must be final and at most 125 bytes")
    return 0x80 | opcode if fin else opcode


_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
#: final text and binary frames shorter than this get their header from a table (~35 ns less
#: than a pack; a chat or message frame is ~150-300 bytes); the tables take ~66 KiB a process
HEADER_TABLE = 512
# Whole headers of final unmasked frames, by opcode: text and binary up to HEADER_TABLE
# bytes, the others up to 125 (the limit of control frames).
_HEADERS = {
    op: [_header(0x80 | op, 0, n) for n in range(HEADER_TABLE if op in (OP_TEXT, OP_BINARY) else 126)]
    for op in _OPCODES
}


_MEDIUM_HEADER = struct.Struct("!BBH")


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked (server-to-client) frame.

    Final data frames up to 64 KiB (nearly every frame a worker sends) skip the
    general header path's validation: their header is one table lookup or one pack.
    """
    n = len(payload)
    if fin:
        headers = _HEADERS.get(opcode)
        if headers is not None:
            if n < len(headers):
                return headers[n] + payload
            if n < 0x10000 and opcode < OP_CLOSE:
                return _MEDIUM_HEADER.pack(0x80 | opcode, 126, n) + payload
    return _header(_first_byte(opcode, fin, n), 0, n) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; ``reason`` is truncated to fit 125 bytes on a character boundary."""
    if not _valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + raw)


def encode_masked_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A final masked (client-to-server) frame; a random mask when ``mask`` is None."""
    if mask is None:
        mask = os.urandom(4)
    elif len(mask) != 4:
        raise ValueError("the mask is 4 bytes")
    n = len(payload)
    return _header(_first_byte(opcode, True, n), 0x80, n) + mask + apply_mask(payload, mask)
