"""mc.websocket.frames, checked differentially against wsproto.

wsproto's FrameProtocol is the reference: it is the layer that turns raw bytes
into frames and raises ParseFailed(code) on violations, without the
connection state machine around it. Like FrameParser it validates UTF-8
incrementally (per fragment, so an invalid fragment fails before a later
control frame is delivered) and stops parsing after a close frame.

Intentional differences, none visible once the whole stream has been fed:
- wsproto has no message size limit; the 1009 tests derive their expectation
  from wsproto's result on the stream cut before the oversize frame.
- Violations are detected at slightly different moments of a partial frame
  (wsproto checks UTF-8 on partial payloads, FrameParser checks RSV and
  masking before the extended length has arrived). A stream that ends inside
  a frame could therefore fail in one and not (yet) in the other, so the
  generated streams only hold whole frames.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from mc.websocket import (
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
    frames,
)
from mc.websocket.frames import apply_mask, py_apply_mask

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = b"\x12\x34\x56\x78",
    wide_length: bool = False,
) -> bytes:
    """Any frame, valid or not; ``wide_length`` uses a non-minimal length encoding."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126 and not wide_length:
        head = bytes((first, mask_bit | n))
    elif n < 0x10000 and not (wide_length and n >= 126):
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def run_ours(chunks: list[bytes], max_message: int = 1 << 30) -> tuple[list, int | None]:
    """Events (including those carried by the error) and the failure close code."""
    parser = FrameParser(max_message)
    events: list = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
    except WebSocketError as exc:
        return events + exc.events, exc.close_code
    return events, None


def run_wsproto(chunks: list[bytes]) -> tuple[list, int | None]:
    """wsproto's events in our shape: messages reassembled, text as UTF-8 bytes."""
    proto = FrameProtocol(client=False, extensions=[])
    events: list = []
    parts: list = []
    try:
        for chunk in chunks:
            proto.receive_bytes(chunk)
            for frame in proto.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload
                    events.append((OP_CLOSE, (None if code == 1005 else int(code), reason)))
                elif frame.opcode in (Opcode.PING, Opcode.PONG):
                    events.append((int(frame.opcode), bytes(frame.payload)))
                else:
                    parts.append(frame.payload)
                    if frame.message_finished:
                        if frame.opcode is Opcode.TEXT:
                            events.append((OP_TEXT, "".join(parts).encode("utf-8")))
                        else:
                            events.append((OP_BINARY, b"".join(parts)))
                        parts = []
    except ParseFailed as exc:
        return events, int(exc.code)
    return events, None


# --- strategies -------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)


@st.composite
def payloads(draw: st.DrawFn, text: bool) -> bytes:
    """Mostly short payloads, sometimes a length class boundary (tiled, cheap to draw)."""
    if text:
        seed = draw(st.text(min_size=1, max_size=20)).encode("utf-8")
    else:
        seed = draw(st.binary(min_size=1, max_size=20))
    n = draw(st.integers(0, 300) | st.sampled_from(LENGTHS))
    return (seed * (n // len(seed) + 1))[:n]


INVALID_UTF8 = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """A data message split into fragments (text cut anywhere, even inside a code
    point) with valid control frames interleaved; some texts hold invalid UTF-8."""
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
    data = draw(payloads(text=opcode == OP_TEXT))
    if opcode == OP_TEXT and draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    frames = []
    for i, piece in enumerate(pieces):
        if i and draw(st.booleans()):
            frames.append(draw(control_frames(valid=True)))
        frames.append(
            raw_frame(OP_CONT if i else opcode, piece, fin=i == len(pieces) - 1, mask=draw(masks))
        )
    return frames


CLOSE_CODES = [0, 999, 1000, 1003, 1004, 1005, 1006, 1007, 1013, 1014, 1015, 1016, 2999, 3000, 4999]


@st.composite
def control_frames(draw: st.DrawFn, valid: bool = False) -> bytes:
    # Fewer closes among valid frames (a close ends the stream), more otherwise.
    closes = [OP_CLOSE] if valid else [OP_CLOSE] * 3
    opcode = draw(st.sampled_from([OP_PING, OP_PONG, OP_PING, OP_PONG, *closes]))
    if opcode != OP_CLOSE:
        payload = draw(st.binary(max_size=125))
    elif valid:
        payload = struct.pack("!H", 1000) + draw(st.text(max_size=20)).encode("utf-8")
    else:
        code = draw(st.sampled_from(CLOSE_CODES) | st.integers(1000, 1015) | st.integers(0, 0xFFFF))
        reason = draw(st.text(max_size=20).map(str.encode) | st.binary(max_size=20))
        payload = draw(st.sampled_from([b"", b"\x03"] + [struct.pack("!H", code) + reason] * 4))
    return raw_frame(opcode, payload, mask=draw(masks))


DEFECTS = [
    "rsv",
    "unmasked",
    "wide_length",
    "unknown_opcode",
    "fragmented_control",
    "long_control",
    "continuation",
    "unfinished",
    "text",
]


@st.composite
def odd_frames(draw: st.DrawFn) -> bytes:
    """A frame with one defect, or one valid only in some contexts: a continuation
    (needs an open message), an unfinished data frame (opens one), a text frame
    of arbitrary bytes."""
    defect = draw(st.sampled_from(DEFECTS))
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG]))
    fin = True
    if defect == "unknown_opcode":
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
    elif defect in ("fragmented_control", "long_control"):
        opcode = draw(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE]))
        fin = defect == "long_control"
    elif defect == "continuation":
        opcode, fin = OP_CONT, draw(st.booleans())
    elif defect == "unfinished":
        opcode, fin = draw(st.sampled_from([OP_TEXT, OP_BINARY])), False
    elif defect == "text":
        opcode = OP_TEXT
    if defect == "long_control":
        payload = draw(st.binary(min_size=126, max_size=200))
    elif opcode & 8:
        payload = draw(st.binary(max_size=2) if opcode == OP_CLOSE else st.binary(max_size=125))
    else:
        payload = draw(payloads(text=draw(st.booleans())))
    return raw_frame(
        opcode,
        payload,
        fin=fin,
        rsv=draw(st.sampled_from([1, 2, 4, 7])) if defect == "rsv" else 0,
        masked=defect != "unmasked",
        mask=draw(masks),
        wide_length=defect == "wide_length",
    )


def _flatten(parts: tuple) -> bytes:
    prefix, probe, suffix = parts
    return b"".join(frame for item in [*prefix, probe, *suffix] for frame in item)


_valid_items = st.one_of(messages(), control_frames(valid=True).map(lambda f: [f]))
_probes = st.one_of(control_frames().map(lambda f: [f]), odd_frames().map(lambda f: [f]))
# A mostly valid prefix, then a probe (a frame that is often invalid) that the
# parsers therefore nearly always reach, then anything.
streams = st.tuples(
    st.lists(_valid_items, max_size=3),
    _probes,
    st.lists(st.one_of(_valid_items, _probes), max_size=3),
).map(_flatten)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- differential -----------------------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_same_events_and_close_code_as_wsproto(data: st.DataObject) -> None:
    stream = data.draw(streams)
    chunks = data.draw(chunked(stream))
    assert run_ours(chunks) == run_wsproto(chunks)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_chunking_does_not_change_the_result(data: st.DataObject) -> None:
    stream = data.draw(streams)
    assert run_ours(data.draw(chunked(stream))) == run_ours([stream])


def first_oversize_frame(stream: bytes, limit: int) -> int | None:
    """Offset of the first frame that takes its message over ``limit`` bytes
    (for streams of well-formed masked frames only)."""
    pos = size = 0
    while pos < len(stream):
        opcode, n, head = stream[pos] & 0x0F, stream[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(stream[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(stream[pos + 2 : pos + 10], "big"), 10
        if opcode < 8:
            size = size + n if opcode == OP_CONT else n
            if size > limit:
                return pos
        pos += head + 4 + n
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_size_limit_cuts_the_wsproto_result_short_with_1009(data: st.DataObject) -> None:
    """wsproto has no size limit: the reference is wsproto's result for the stream
    cut before the frame that takes a message over the limit, then 1009 (unless
    a violation or a close frame came first)."""
    stream = b"".join(frame for item in data.draw(st.lists(_valid_items, max_size=4)) for frame in item)
    limit = data.draw(st.integers(0, 400))
    cut = first_oversize_frame(stream, limit)
    events, code = run_wsproto([stream if cut is None else stream[:cut]])
    if cut is not None and code is None and not (events and events[-1][0] == OP_CLOSE):
        code = 1009
    assert run_ours(data.draw(chunked(stream)), max_message=limit) == (events, code)


def test_a_valid_fragmented_text_message_with_interleaved_control_frames() -> None:
    text = "héllo wörld €".encode()
    stream = (
        raw_frame(OP_TEXT, text[:2], fin=False)  # cuts "é" in half
        + raw_frame(OP_PING, b"p")
        + raw_frame(OP_CONT, text[2:9], fin=False)
        + raw_frame(OP_CONT, text[9:], fin=True)
        + raw_frame(OP_CLOSE, struct.pack("!H", 1001) + b"bye")
    )
    expected = [(OP_PING, b"p"), (OP_TEXT, text), (OP_CLOSE, (1001, "bye"))]
    assert run_ours([stream]) == run_wsproto([stream]) == (expected, None)
    assert run_ours([bytes([b]) for b in stream]) == (expected, None)


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (raw_frame(OP_TEXT, b"x", rsv=4), 1002),
        (raw_frame(3, b"x"), 1002),
        (raw_frame(11, b""), 1002),
        (raw_frame(OP_TEXT, b"x", masked=False), 1002),
        (raw_frame(OP_PING, b"x" * 126), 1002),
        (raw_frame(OP_PING, b"x", fin=False), 1002),
        (raw_frame(OP_CONT, b"x"), 1002),
        (raw_frame(OP_TEXT, b"a", fin=False) + raw_frame(OP_BINARY, b"b"), 1002),
        (raw_frame(OP_BINARY, b"x" * 10, wide_length=True), 1002),
        (raw_frame(OP_CLOSE, b"\x03"), 1002),
        (raw_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
        (raw_frame(OP_CLOSE, struct.pack("!H", 1014)), 1002),  # unknown to wsproto too
        (raw_frame(OP_CLOSE, struct.pack("!H", 5000)), 1002),
        (raw_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
        (raw_frame(OP_TEXT, b"\xc3\x28"), 1007),
        (raw_frame(OP_TEXT, b"\xc3", fin=False) + raw_frame(OP_CONT, b"", fin=True), 1007),
        (b"\x82\xff" + b"\x80" + b"\0" * 7 + b"mask", 1002),  # 64-bit length with the MSB set
    ],
)
def test_violations(stream: bytes, code: int) -> None:
    assert run_ours([stream]) == run_wsproto([stream]) == ([], code)


def test_invalid_utf8_is_rejected_before_the_message_ends() -> None:
    parser = FrameParser()
    with pytest.raises(WebSocketError) as info:
        parser.feed(raw_frame(OP_TEXT, b"ok\xff", fin=False))
    assert info.value.close_code == 1007


# --- parser behaviour beyond wsproto ------------------------------------------


def test_a_message_at_the_limit_passes_and_one_byte_more_fails_on_its_header() -> None:
    assert FrameParser(1000).feed(raw_frame(OP_BINARY, b"x" * 1000)) == [(OP_BINARY, b"x" * 1000)]
    parser = FrameParser(1000)
    header = raw_frame(OP_BINARY, b"x" * 1001)[:8]  # 2 + 2 length + 4 mask, no payload
    with pytest.raises(WebSocketError) as info:
        parser.feed(header)
    assert info.value.close_code == 1009


def test_the_limit_counts_every_fragment() -> None:
    parser = FrameParser(100)
    assert parser.feed(raw_frame(OP_TEXT, b"a" * 60, fin=False)) == []
    with pytest.raises(WebSocketError) as info:
        parser.feed(raw_frame(OP_CONT, b"a" * 41)[:6])
    assert info.value.close_code == 1009
    ok = FrameParser(100)
    ok.feed(raw_frame(OP_TEXT, b"a" * 60, fin=False))
    assert ok.feed(raw_frame(OP_CONT, b"a" * 40)) == [(OP_TEXT, b"a" * 100)]


def test_a_huge_declared_length_fails_without_waiting_for_the_payload() -> None:
    header = b"\x82\xff" + struct.pack("!Q", 1 << 40) + b"mask"
    with pytest.raises(WebSocketError) as info:
        FrameParser().feed(header)
    assert info.value.close_code == 1009


def test_control_frames_are_not_subject_to_the_message_limit() -> None:
    assert FrameParser(10).feed(raw_frame(OP_PING, b"p" * 125)) == [(OP_PING, b"p" * 125)]


def test_events_before_a_violation_travel_on_the_error_and_the_parser_stays_failed() -> None:
    parser = FrameParser()
    with pytest.raises(WebSocketError) as info:
        parser.feed(raw_frame(OP_TEXT, b"one") + raw_frame(OP_PING, b"") + raw_frame(3, b""))
    assert info.value.events == [(OP_TEXT, b"one"), (OP_PING, b"")]
    assert info.value.close_code == 1002
    with pytest.raises(WebSocketError) as again:
        parser.feed(raw_frame(OP_TEXT, b"two"))
    assert again.value.close_code == 1002
    assert again.value.events == []


def test_nothing_is_parsed_after_a_close_frame() -> None:
    parser = FrameParser()
    events = parser.feed(raw_frame(OP_CLOSE, b"") + raw_frame(OP_TEXT, b"late") + b"\xff\xff")
    assert events == [(OP_CLOSE, (None, ""))]
    assert parser.feed(raw_frame(OP_TEXT, b"later")) == []


def test_reusable_buffers_are_copied() -> None:
    frame = raw_frame(OP_BINARY, b"abcdef")
    buffer = bytearray(frame[:5])
    parser = FrameParser()
    assert parser.feed(memoryview(buffer)) == []
    buffer[:] = b"\0" * 5
    assert parser.feed(bytearray(frame[5:])) == [(OP_BINARY, b"abcdef")]


@pytest.mark.parametrize("n", [*LENGTHS, 1024, 1025, 4099])
def test_unmasking_every_length_class(n: int) -> None:
    payload = os.urandom(n)
    frame = raw_frame(OP_BINARY, payload, mask=os.urandom(4))
    assert FrameParser(1 << 20).feed(frame) == [(OP_BINARY, payload)]
    assert run_wsproto([frame]) == ([(OP_BINARY, payload)], None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500) | st.binary(min_size=1500, max_size=5000), st.binary(min_size=4, max_size=4))
def test_the_python_mask_gives_the_c_masks_bytes(payload: bytes, mask: bytes) -> None:
    assert py_apply_mask(payload, mask) == apply_mask(payload, mask)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_parser_with_the_python_mask_matches_wsproto(data: st.DataObject) -> None:
    """Where websockets' C extension is missing the parser falls back to py_apply_mask."""
    stream = data.draw(streams)
    chunks = data.draw(chunked(stream))
    saved = frames.apply_mask
    frames.apply_mask = py_apply_mask
    try:
        assert run_ours(chunks) == run_wsproto(chunks)
    finally:
        frames.apply_mask = saved


def test_server_frames_with_expect_masked_false() -> None:
    parser = FrameParser(expect_masked=False)
    stream = (
        encode_frame(OP_TEXT, b"ab", fin=False) + encode_frame(OP_CONT, b"c") + encode_close(1000)
    )
    assert parser.feed(stream) == [(OP_TEXT, b"abc"), (OP_CLOSE, (1000, ""))]
    with pytest.raises(WebSocketError) as info:
        FrameParser(expect_masked=False).feed(encode_masked_frame(OP_TEXT, b"x"))
    assert info.value.close_code == 1002


# --- encoders ---------------------------------------------------------------


def wsproto_client_parse(data: bytes) -> list[tuple[int, object]]:
    """What a wsproto client makes of server frames (single-frame messages)."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    out = []
    for frame in proto.received_frames():
        assert frame.message_finished
        payload = frame.payload
        if frame.opcode is Opcode.CLOSE:
            payload = (int(payload[0]), payload[1])
        elif isinstance(payload, str):
            payload = payload.encode()
        out.append((int(frame.opcode), payload))
    return out


@pytest.mark.parametrize("n", [*LENGTHS, frames.HEADER_TABLE - 1, frames.HEADER_TABLE])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_encode_frame_is_understood_by_wsproto(opcode: int, n: int) -> None:
    payload = b"z" * n
    assert wsproto_client_parse(encode_frame(opcode, payload)) == [(opcode, payload)]
    parser = FrameParser(1 << 20, expect_masked=False)
    assert parser.feed(encode_frame(opcode, payload)) == [(opcode, payload)]


def test_encode_control_frames_are_understood_by_wsproto() -> None:
    stream = (
        encode_frame(OP_PING, b"x" * 125) + encode_frame(OP_PONG, b"") + encode_close(4000, "bye")
    )
    expected = [(OP_PING, b"x" * 125), (OP_PONG, b""), (OP_CLOSE, (4000, "bye"))]
    assert wsproto_client_parse(stream) == expected


@pytest.mark.parametrize("n", LENGTHS)
def test_encode_masked_frame_round_trips(n: int) -> None:
    payload = os.urandom(n)
    frame = encode_masked_frame(OP_BINARY, payload)
    assert FrameParser(1 << 20).feed(frame) == [(OP_BINARY, payload)]
    assert run_wsproto([frame]) == ([(OP_BINARY, payload)], None)
    assert encode_masked_frame(OP_TEXT, b"abc", b"\0\0\0\0") == b"\x81\x83\0\0\0\0abc"


@pytest.mark.parametrize("n", LENGTHS)
def test_wsproto_client_frames_parse(n: int) -> None:
    client = FrameProtocol(client=True, extensions=[])
    text = "é" * (n // 2)
    stream = (
        bytes(client.send_data(text))
        + bytes(client.send_data(b"b" * n))
        + bytes(client.send_data(text, fin=False))
        + bytes(client.ping(b"p"))
        + bytes(client.send_data("", fin=True))
        + bytes(client.close(1000, "done"))
    )
    utf8 = text.encode()
    expected = [
        (OP_TEXT, utf8),
        (OP_BINARY, b"b" * n),
        (OP_PING, b"p"),
        (OP_TEXT, utf8),
        (OP_CLOSE, (1000, "done")),
    ]
    assert run_ours([stream]) == (expected, None)


def test_encode_close_truncates_the_reason_on_a_character_boundary() -> None:
    frame = encode_close(1001, "€" * 100)
    [(opcode, (code, reason))] = FrameParser(expect_masked=False).feed(frame)
    assert (opcode, code, reason) == (OP_CLOSE, 1001, "€" * 41)
    assert len(frame) == 2 + 2 + 123
    # an ASCII reason is cut at exactly 123 bytes: the payload (code + reason) is the
    # 125 bytes a control frame may carry, and a peer accepts it
    frame = encode_close(4000, "x" * 200)
    assert len(frame) == 2 + 2 + 123
    assert wsproto_client_parse(frame) == [(OP_CLOSE, (4000, "x" * 123))]


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_frame(OP_PING, b"x" * 126),
        lambda: encode_frame(OP_CLOSE, b"", fin=False),
        lambda: encode_frame(3, b""),
        lambda: encode_close(1005),
        lambda: encode_close(1014),
        lambda: encode_masked_frame(OP_TEXT, b"", b"abc"),
    ],
)
def test_encoders_refuse_what_a_peer_would_reject(call) -> None:
    with pytest.raises(ValueError):
        call()
