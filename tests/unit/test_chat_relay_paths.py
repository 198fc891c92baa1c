"""The chat relay's shortcuts give the bytes the general path gives.

A bare ``send`` (no ``id``, no ``trace``) skips ``send_fields``, and a room
of two writes its one frame without ``_fan_out``'s per-codec table; the
``chat`` map is built inline, not by ``chat_wire`` (mc/worker/core.py).
Here the same message goes through every combination of shortcut and
general path, each in a fresh core (so ``seq``, ``ts`` and the made-up trace
id are the same): the other member must receive the very same frame bytes,
``chat_wire``'s map in its codec.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from mc.protocol import JSON, MSGPACK, Codec
from mc.protocol.frames import chat_wire
from mc.websocket import OP_BINARY, OP_TEXT, HandshakeReader, encode_frame, encode_masked_frame
from mc.worker.answers import Accept
from mc.worker.config import WorkerConfig
from mc.worker.core import WorkerCore
from mc.worker.peer import Peer

KEY = base64.b64encode(os.urandom(16)).decode()


class RawSink:
    """Keeps the exact bytes written to each connection."""

    def __init__(self) -> None:
        self.out: dict[Peer, list[bytes]] = {}

    def write(self, conn: Peer, data: bytes) -> None:
        self.out.setdefault(conn, []).append(data)

    def write_many(self, conns: Sequence[Peer], data: bytes) -> None:
        for conn in conns:
            self.write(conn, data)

    def close(self, conn: Peer, code: int, reason: str) -> None:
        raise AssertionError(f"closed {conn!r} with {code}: {reason}")

    def drop(self, conn: Peer) -> None:
        raise AssertionError(f"dropped {conn!r}")

    def send_control(self, message: Any) -> bool:
        return False


def join(core: WorkerCore, client: str, codec: Codec) -> Peer:
    lines = ["GET /v1/chat/room?client=" + client + " HTTP/1.1", "Host: w", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}",
             f"Sec-WebSocket-Protocol: {codec.name}"]
    request = HandshakeReader().feed(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert request is not None
    answer = core.handshake(request, 0.0)
    assert isinstance(answer, Accept), answer
    return core.open(answer, 0.0, Peer)


def relayed(obj: dict[str, Any], sender: Codec, others: list[Codec]) -> list[bytes]:
    """What the first other member receives when a member using ``sender`` sends ``obj``."""
    sink = RawSink()
    core = WorkerCore(WorkerConfig(heartbeat=10.0), sink, worker_id="w1", instance=7, wall_ms=lambda: 1234)
    a = join(core, "a", sender)
    members = [join(core, f"m{i}", codec) for i, codec in enumerate(others)]
    sink.out.clear()  # the welcomes and joined frames
    op = OP_TEXT if sender is JSON else OP_BINARY
    core.received(a, encode_masked_frame(op, sender.encode(obj)), 0.0)
    return sink.out.get(members[0], [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
codecs = st.sampled_from([JSON, MSGPACK])


@settings(max_examples=150, deadline=None)
@given(json_values, st.none() | st.text("abc", min_size=1, max_size=8), codecs, codecs, codecs)
def test_shortcuts_and_general_path_give_the_same_chat_frame(
    data: Any, trace: str | None, sender: Codec, other: Codec, third: Codec,
) -> None:
    bare: dict[str, Any] = {"type": "send", "data": data}
    if trace is not None:
        bare["trace"] = trace
    general = {**bare, "id": None}  # an explicit null id: send_fields, with the same meaning
    frames = [relayed(obj, sender, others)
              for obj in (bare, general) for others in ([other], [other, third])]
    assert len(frames[0]) == 1
    assert all(f == frames[0] for f in frames), frames
    # and that frame is chat_wire's map in the recipient's codec (the core inlines the map)
    core = WorkerCore(WorkerConfig(), RawSink(), worker_id="w1", instance=7, wall_ms=lambda: 1234)
    made_up = core._trace_prefix + "1"
    wire = chat_wire("a", sender.decode(sender.encode(data)), 1, 1234, trace or made_up)
    assert frames[0] == [encode_frame(OP_TEXT if other is JSON else OP_BINARY, other.encode(wire))]


def test_the_frames_of_one_read_share_a_ts_and_the_next_read_reads_the_clock_again() -> None:
    sink = RawSink()
    clock = iter(range(1000, 2000))
    core = WorkerCore(WorkerConfig(heartbeat=10.0), sink, worker_id="w1", instance=7,
                      wall_ms=lambda: next(clock))
    a = join(core, "a", JSON)
    b = join(core, "b", JSON)
    sink.out.clear()
    send = encode_masked_frame(OP_TEXT, b'{"type":"send","data":1}')
    core.received(a, send * 3, 0.0)
    core.received(a, send, 0.0)
    ts = [JSON.decode(frame[2:])["ts"] for frame in sink.out[b]]
    assert ts[0] == ts[1] == ts[2] < ts[3]
