"""The Flusher's write path (mc.worker.flusher) over real socket pairs.

Runs of ``write_many`` frames are kept unqueued until the pass; these tests
check that whatever mix of runs, single writes and closes is queued, every
connection reads exactly its frames in the order they were queued, that the
queue limits still close a slow consumer, and that identical queues share
one joined ``bytes`` without sharing a partial send.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mc.websocket import OP_TEXT, FrameParser, encode_frame
from mc.worker.connection import Connection
from mc.worker.flusher import RUN_FRAMES, Flusher
from mc.worker.peer import CONSUMER
from mc.worker.states import CLOSING

Pair = tuple[Connection, socket.socket]


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for conn, other in made:
        conn.sock.close()
        other.close()


def connect(made: list[Pair], n: int) -> list[Connection]:
    for i in range(n):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.settimeout(2)
        made.append((Connection(a, CONSUMER, name=f"c{len(made)}-{i}"), b))
    return [conn for conn, _ in made[-n:]]


def received(made: list[Pair], conn: Connection, parser: FrameParser | None = None) -> list[bytes]:
    """The payload of every data frame that reached ``conn``'s other end so far."""
    other = next(b for c, b in made if c is conn)
    parser = parser or FrameParser(1 << 20, expect_masked=False)
    data = b""
    other.setblocking(False)
    try:
        while chunk := other.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return [payload for op, payload in parser.feed(data) if op == OP_TEXT]


def frame(text: str) -> bytes:
    return encode_frame(OP_TEXT, text.encode())


def flusher(**limits: int) -> tuple[Flusher, list[Connection]]:
    released: list[Connection] = []
    f = Flusher(max_frames=limits.get("max_frames", 4096), max_bytes=limits.get("max_bytes", 4 << 20),
                release=released.append)
    overflowed: list[Connection] = []

    def overflow(conn: Connection, now: float) -> None:
        overflowed.append(conn)
        conn.state = CLOSING  # as the core does (it queues the 4029 close first)

    f.on_overflow = overflow
    return f, overflowed


ops = st.lists(
    st.one_of(
        st.tuples(st.just("many"), st.sampled_from([0, 1, 2])),  # one of three fixed lists
        st.tuples(st.just("one"), st.integers(0, 3)),  # one connection
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, flush_every=st.integers(1, 50))
def test_every_connection_reads_its_frames_in_order(ops: list[tuple[str, int]], flush_every: int) -> None:
    made: list[Pair] = []
    try:
        conns = connect(made, 4)
        lists = [conns[:3], conns[1:], [conns[0], conns[3]]]
        f, _ = flusher()
        expected: dict[Connection, list[bytes]] = {c: [] for c in conns}
        for i, (kind, which) in enumerate(ops):
            text = f"m{i}"
            if kind == "many":
                f.write_many(lists[which], frame(text))
                for c in lists[which]:
                    expected[c].append(text.encode())
            else:
                f.write(conns[which], frame(text))
                expected[conns[which]].append(text.encode())
            if i % flush_every == flush_every - 1:
                f.flush_now()
        f.flush_now()
        for c in conns:
            assert received(made, c) == expected[c]
            assert c.queued == 0 and c.out_bytes == 0 and not c.out
    finally:
        for conn, other in made:
            conn.sock.close()
            other.close()


async def test_a_run_settles_before_a_close(pairs: list[Pair]) -> None:
    a, b = connect(pairs, 2)
    f, _ = flusher()
    f.write_many([a, b], frame("x"))
    f.close(a, 1000, "")
    a.state = CLOSING  # as the core does after queueing the close
    f.write_many([a, b], frame("y"))  # a new run: a is skipped
    f.flush_now()
    assert received(pairs, b) == [b"x", b"y"]
    other = pairs[0][1]
    other.setblocking(False)
    assert other.recv(100) == frame("x") + b"\x88\x02\x03\xe8"  # x, then the close (1000)


async def test_a_member_overflows_at_exactly_the_frame_that_crosses_its_limit(pairs: list[Pair]) -> None:
    a, b = connect(pairs, 2)
    f, overflowed = flusher(max_frames=RUN_FRAMES + 10)
    b.out.append(frame("stuck"))  # b already holds 11 frames: 255 more fit
    b.queued = 11
    b.out_bytes = 11 * len(frame("stuck"))
    run = [a, b]
    for i in range(RUN_FRAMES - 1):
        f.write_many(run, frame(str(i)))
    assert overflowed == []
    f.write_many(run, frame("crossing"))
    assert overflowed == [b]  # at once, not when the run settles
    assert b.out == [] and b.queued == 0
    f.write_many(run, frame("after"))
    f.flush_now()
    assert received(pairs, a) == [str(i).encode() for i in range(RUN_FRAMES - 1)] + [b"crossing", b"after"]
    assert received(pairs, b) == []  # closing: nothing more is queued


async def test_long_runs_settle_and_a_run_overflows_on_bytes(pairs: list[Pair]) -> None:
    a, b = connect(pairs, 2)
    size = len(frame("x" * 60))
    f, overflowed = flusher(max_bytes=size * (RUN_FRAMES + 2) - 1)  # RUN_FRAMES + 1 frames fit
    for _ in range(RUN_FRAMES + 1):
        f.write_many([a], frame("x" * 60))  # a new list object each time: a run each
    assert a.queued == RUN_FRAMES and overflowed == []  # the last run is pending
    run = [a, b]
    f.write_many(run, frame("y" * 60))  # one byte too many for a: it overflows at once
    assert overflowed == [a] and a.out == []
    assert b.queued == 1
    for _ in range(RUN_FRAMES):
        f.write_many(run, frame("y" * 60))
    assert b.queued == 1  # a full run, pending
    f.flush_now()
    assert received(pairs, a) == []
    assert received(pairs, b) == [b"y" * 60] * (RUN_FRAMES + 1)
    assert overflowed == [a]


async def test_pending_few_counts_the_run(pairs: list[Pair]) -> None:
    conns = connect(pairs, 5)
    f, _ = flusher()
    assert not f.pending_few()
    f.write_many(conns[:4], frame("x"))
    assert f.pending_few()
    f.write(conns[4], frame("y"))
    assert not f.pending_few()  # five connections: the pass writes them, coalesced


async def test_identical_queues_share_a_join_but_not_a_partial_send(pairs: list[Pair]) -> None:
    a, b, c = connect(pairs, 3)
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    f, _ = flusher()
    big = [frame(str(i) * 1000) for i in range(64)]  # ~64 KB: more than b's buffer takes
    for data in big:
        f.write_many([a, b, c], data)
    f.flush_now()
    assert a.out == [] and c.out == []
    assert b.out and b.queued < len(big)  # b's tail waits (no drain task without a nursery)
    assert received(pairs, a) == received(pairs, c) == [d[4:] for d in big]
    parser = FrameParser(1 << 20, expect_masked=False)
    got_b = received(pairs, b, parser)
    for _ in range(1000):
        if not b.out:
            break
        Flusher._send_some(b)
        got_b += received(pairs, b, parser)
    assert got_b == [d[4:] for d in big]
    assert b.queued == 0 and b.out_bytes == 0 and not b.partial
