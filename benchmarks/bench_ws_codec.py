"""mc.websocket frame codec vs wsproto on the worker's common case.

Parses masked 100-byte text frames (one frame per feed, as with one frame per
recv, and 16 frames per feed) and encodes 100-byte server frames. Each pair is
measured alternately in the same run and the best of several rounds is kept,
so the ratio holds on a noisy machine even when the absolute figures drift.

    /work/venv/bin/python benchmarks/bench_ws_codec.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, BytesMessage, Request
from wsproto.frame_protocol import FrameProtocol

from mc.websocket import OP_BINARY, OP_TEXT, FrameParser, encode_frame, encode_masked_frame

FRAMES = 2048  # distinct frames, each with its own random mask
ROUNDS = 15
PAYLOAD = b"x" * 100


def time_round(run: Callable[[], int], rounds: list[float]) -> None:
    """Append the us/frame of one pass of ``run`` (which returns its frame count)."""
    start = time.perf_counter()
    n = run()
    rounds.append((time.perf_counter() - start) / n * 1e6)


def server_connection() -> Connection:
    """A wsproto server connection after a real handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="bench", target="/")))
    assert isinstance(next(server.events()), Request)
    server.send(AcceptConnection())
    return server


def main() -> None:
    frames = [encode_masked_frame(OP_TEXT, PAYLOAD, os.urandom(4)) for _ in range(FRAMES)]
    batches = [b"".join(frames[i : i + 16]) for i in range(0, FRAMES, 16)]

    def ours_single() -> int:
        parser = FrameParser()
        for frame in frames:
            parser.feed(frame)
        return FRAMES

    def ours_batch() -> int:
        parser = FrameParser()
        for batch in batches:
            parser.feed(batch)
        return FRAMES

    def wsproto_frames(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            proto = FrameProtocol(client=False, extensions=[])
            for chunk in chunks:
                proto.receive_bytes(chunk)
                list(proto.received_frames())
            return FRAMES

        return run

    def wsproto_connection(chunks: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            server = server_connection()
            for chunk in chunks:
                server.receive_data(chunk)
                list(server.events())
            return FRAMES

        return run

    def ours_encode() -> int:
        for _ in range(FRAMES):
            encode_frame(OP_BINARY, PAYLOAD)
        return FRAMES

    def wsproto_encode() -> int:
        server = server_connection()
        message = BytesMessage(PAYLOAD)
        for _ in range(FRAMES):
            server.send(message)
        return FRAMES

    comparisons = [
        ("parse, 1 frame/feed", ours_single, "FrameProtocol", wsproto_frames(frames)),
        ("parse, 1 frame/feed", ours_single, "WSConnection", wsproto_connection(frames)),
        ("parse, 16 frames/feed", ours_batch, "FrameProtocol", wsproto_frames(batches)),
        ("parse, 16 frames/feed", ours_batch, "WSConnection", wsproto_connection(batches)),
        ("encode 100 B", ours_encode, "WSConnection.send", wsproto_encode),
    ]
    header = f"{'case':24} {'mc us/frame':>12} {'wsproto us/frame':>17}  {'speed-up':>8}"
    print(header, " (wsproto layer)")
    for case, ours, layer, theirs in comparisons:
        ours_rounds: list[float] = []
        their_rounds: list[float] = []
        for _ in range(ROUNDS):
            time_round(ours, ours_rounds)
            time_round(theirs, their_rounds)
        a, b = min(ours_rounds), min(their_rounds)
        print(f"{case:24} {a:12.3f} {b:17.3f}  {b / a:7.1f}x  ({layer})")


if __name__ == "__main__":
    main()
