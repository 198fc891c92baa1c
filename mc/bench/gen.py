"""Load generator processes: ``python -m mc.bench.gen ROLE [options]``.

Roles:

``recv``     N consumer connections subscribed to one topic; counts delivered
             frames cheaply (bytes received / the mean frame size, measured
             exactly on one sample connection that parses everything: every
             subscriber receives the same byte stream) and publishes, in a
             shared-memory slot, how many frames its slowest connection has.
``pub``      one app connection publishing 100-byte messages in batches,
             never more than ``--window`` messages ahead of the slowest
             subscriber (the shared-memory slots), so no queue overflows.
``relay``    chat sessions of two members; closed loop (``--window`` messages
             in flight per connection) or open loop (``--rate`` messages/s);
             latency from a send timestamp carried in ``data``.
``idle``     N idle app connections (memory).
``control``  a fake worker on the master's control link: register, then
             pipelined claim/lookup requests with ids.

Each prints JSON lines on stdout: ``ready``, then ``progress`` every 0.2 s
(cumulative counters, ``t`` = CLOCK_MONOTONIC, ``cpu`` = process CPU
seconds), then ``done``. Between ``ready`` and the run it waits for a line
on stdin (the runner's "go"). Every loop ends at a deadline.
"""

from __future__ import annotations

import argparse
import gc
import mmap
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import orjson

from mc.protocol.control import MAX_BATCH
from mc.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    WebSocketError,
    encode_masked_frame,
)

from . import tlsclient
from .wsclient import MASK, ChatFrames, Reporter, Wire, open_many, pong, send_all, text, wait_go, watch

PROGRESS_EVERY = 0.2
BUF = 1 << 20
BUCKET_US = 10  # latency histogram resolution
MAX_BUCKET = 100_000  # 1 s


class Hist:
    """Latency histogram in 10 us buckets (up to 1 s), mergeable across processes."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add_us(self, us: float) -> None:
        b = int(us) // BUCKET_US
        if b > MAX_BUCKET:
            b = MAX_BUCKET
        self.counts[b] = self.counts.get(b, 0) + 1


def _told_to_stop() -> bool:
    """The runner wrote a second line ("stop") or went away (EOF on stdin)."""
    return bool(select.select([sys.stdin], [], [], 0)[0])


def _flow_map(path: str, slots: int) -> mmap.mmap:
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 8 * slots)


# ------------------------------------------------------------------ fan-out


def run_recv(a: argparse.Namespace) -> None:
    rep = Reporter("recv", a.slot)
    paths = [f"{a.path}?name=r{a.slot}x{i}" for i in range(a.conns)]
    conns = open_many(a.port, paths, timeout=a.timeout, tls=a.tls_context)
    socks = [s for s, _ in conns]
    n = len(socks)
    deadline = time.monotonic() + a.timeout
    sub = text({"type": "subscribe", "topic": a.topic, "id": "s"})
    for s in socks:
        send_all(s, sub, deadline)
    parsers = [FrameParser(1 << 20, expect_masked=False) for _ in socks]
    waiting = set(range(n))
    for i, (_, trailing) in enumerate(conns):
        if trailing and _has_ack(parsers[i].feed(trailing)):
            waiting.discard(i)
    ep, index = watch(socks)
    while waiting:
        if time.monotonic() > deadline:
            raise SystemExit(f"recv: {len(waiting)} subscriptions not acknowledged")
        for fd, _ in ep.poll(0.05):
            i = index[fd]
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("recv: connection closed during setup")
            if _has_ack(parsers[i].feed(data)):
                waiting.discard(i)
    rep.emit("ready", conns=n)
    if not wait_go(a.timeout):
        return
    sample_parser = FrameParser(1 << 20, expect_masked=False)

    def text_frames(data: bytes) -> int:
        try:
            return sum(1 for op, _payload in sample_parser.feed(data) if op == OP_TEXT)
        except WebSocketError:
            return 0

    count_received(a, rep, socks, ep, index, text_frames)


def count_received(a: argparse.Namespace, rep: Reporter, socks: list[socket.socket], ep: select.epoll,
                   index: dict[int, int], frames_in: Callable[[bytes], int]) -> None:
    """Count what arrives on ``socks`` for ``a.duration`` (bytes into one reused buffer),
    and frames as bytes over the mean frame size, which ``frames_in`` measures exactly
    on the first connection (every subscriber receives the same stream). Keeps the
    slowest connection's frame count in the flow map, so the publisher stays within
    its window of it. Shared by the WebSocket and the NATS receivers."""
    flow = _flow_map(a.flow, a.flow_slots) if a.flow else None
    sample_fd = socks[0].fileno()
    sample_frames = 0
    sample_bytes = 0
    counts = [0] * len(socks)
    closed = 0
    total = 0
    buf = bytearray(BUF)
    recv_into = [s.recv_into for s in socks]
    now = time.monotonic()
    end = now + a.duration
    next_report = now
    next_flow = now
    poll = ep.poll
    while now < end:
        for fd, _ in poll(0.01):
            i = index[fd]
            try:
                got = recv_into[i](buf)
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if not got:
                ep.unregister(fd)
                counts[i] = 1 << 62  # not the slowest any more
                closed += 1
                continue
            counts[i] += got
            total += got
            if fd == sample_fd:
                sample_bytes += got
                sample_frames += frames_in(bytes(buf[:got]))
        now = time.monotonic()
        if flow is not None and now >= next_flow and sample_frames:
            next_flow = now + 0.002
            struct.pack_into("d", flow, 8 * a.slot, min(counts) * sample_frames / sample_bytes)
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            size = sample_bytes / sample_frames if sample_frames else 0.0
            rep.emit("progress", bytes=total, frames=total / size if size else 0.0,
                     frame_size=size, closed=closed)
    size = sample_bytes / sample_frames if sample_frames else 0.0
    rep.emit("done", bytes=total, frames=total / size if size else 0.0, frame_size=size, closed=closed)


def _has_ack(events: list) -> bool:
    return any(op == OP_TEXT and b'"ack"' in payload for op, payload in events)


def run_pub(a: argparse.Namespace) -> None:
    rep = Reporter("pub", a.slot)
    ((sock, _),) = open_many(a.port, [f"/v1/app?client=pub{a.slot}"], timeout=a.timeout, tls=a.tls_context)

    def read(deadline: float) -> None:
        try:
            sock.recv(65536)  # welcome or errors; nothing else is expected
        except BlockingIOError:
            pass
    publish_loop(a, rep, sock, text({"type": "publish", "topic": a.topic, "data": "x" * a.payload}), read)


def publish_loop(a: argparse.Namespace, rep: Reporter, sock: socket.socket, frame: bytes,
                 read: Callable[[float], None]) -> None:
    """The pub role's loop, whatever the wire: ``frame`` published in batches of at most
    ``--batch``, never more than ``--window`` ahead of the slowest subscriber (the flow map);
    ``read(deadline)`` takes what the server sends meanwhile (replies bounded by ``deadline``).
    Ends at ``--duration``."""
    rep.emit("ready", frame_bytes=len(frame))
    if not wait_go(a.timeout):
        return
    flow = _flow_map(a.flow, a.flow_slots)
    slots = a.flow_slots
    batches = [frame * k for k in range(a.batch + 1)]
    published = 0
    blocked = 0
    now = time.monotonic()
    end = now + a.duration
    next_report = now
    while now < end:
        slowest = min(struct.unpack_from(f"{slots}d", flow, 0))
        room = int(slowest) + a.window - published
        if room > 0:
            k = min(room, a.batch)
            send_all(sock, batches[k], end + 5)
            published += k
        else:
            blocked += 1
            select.select([sock], [], [], 0.0002)
        read(end + 5)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            rep.emit("progress", published=published, blocked=blocked)
    rep.emit("done", published=published, blocked=blocked)


# -------------------------------------------------------------------- relay


DRAIN_QUIET = 1.0  # s with nothing arriving that end the relay loop's wait for the messages in flight
DRAIN_MAX = 10.0  # s that wait takes at most (the slowest server here drains 128,000 in 2.5 s)
ZERO_MASK = b"\0\0\0\0"  # relay frames: a valid key under which the payload is its own masked form


def run_relay(a: argparse.Namespace) -> None:
    rep = Reporter("relay", a.slot)
    paths = []
    for i in range(a.first, a.first + a.sessions):
        paths.append(f"/v1/chat/bench{i}?client=a{i}")
        paths.append(f"/v1/chat/bench{i}?client=b{i}")
    conns = open_many(a.port, paths, timeout=a.timeout, tls=a.tls_context)
    socks = [s for s, _ in conns]
    wires = [ChatFrames() for _ in socks]
    for w, (_, trailing) in zip(wires, conns, strict=True):
        w.feed(trailing)
    ep, index = watch(socks)
    deadline = time.monotonic() + a.timeout
    while not all(w.others for w in wires):  # each connection's first text frame is its welcome
        if time.monotonic() > deadline:
            raise SystemExit("relay: welcome frames missing")
        for fd, _ in ep.poll(0.05):
            data = _recv(socks[index[fd]], 65536)
            if data == b"":
                raise SystemExit("relay: connection closed during setup")
            if data:
                wires[index[fd]].feed(data)
    time.sleep(0.1)  # let the "joined" frames arrive before measuring
    for fd, _ in ep.poll(0):
        wires[index[fd]].feed(_recv(socks[index[fd]], 65536) or b"")
    rep.emit("ready", conns=len(socks))
    if not wait_go(a.timeout):
        return
    # The send frame with the mask all zero: "data" starts with the send time
    # (19 digits of perf_counter_ns), so one message is head + time + tail.
    pad = b"x" * max(0, a.payload - 19)
    body = b'{"type":"send","data":"' + b"0" * 19 + pad + b'"}'
    frame = encode_masked_frame(OP_TEXT, body, ZERO_MASK)
    head = frame[:len(frame) - len(body) + 23]
    tail = pad + b'"}'

    relay_loop(a, rep, socks, ep, index, wires, [head] * len(socks), [tail] * len(socks))


def stamp(message: bytes) -> int:
    """The send time (perf_counter_ns) in a relayed message: the 19 digits that open its ``data``."""
    at = message.find(b'"data":"') + 8
    return int(message[at:at + 19])


def relay_loop(a: argparse.Namespace, rep: Reporter, socks: list[socket.socket], ep: select.epoll,
               index: dict[int, int], wires: Sequence[Wire], heads: list[bytes], tails: list[bytes]) -> None:
    """The measured part of the relay role, for any protocol (WebSocket here, NATS in natsgen).

    Connections ``2k`` and ``2k + 1`` are the two members of a session.
    ``heads[j] + 19 digits of perf_counter_ns + tails[j]`` is one message
    sent on connection ``j``. Closed loop (``a.rate`` 0): every connection
    starts with ``a.window`` messages and each received message is answered
    by its session's other member, all answers of one poll round in one
    write per connection. Open loop: ``a.rate`` messages/s round-robin over
    the connections, answered by none. Latency (received minus sent, one
    clock) counts between ``a.warmup`` and ``a.warmup + a.seconds``: in the
    open loop for every message; in the closed loop for the first message
    of every read, so that the generator spends no Python work per message:

    A read that is whole messages of the size of the connection's last one
    (it starts with that message's framing, its length is a multiple of the
    size and its last message starts with the framing too) is counted by
    its length, unparsed; every other read (a partial message, a ping, a
    size that changed as the server's ``seq`` grew a digit) goes through the
    wire's parser. So one generator core answers several times more
    messages than any server here relays per core.
    """
    clock = time.perf_counter_ns
    hist = Hist()
    noise = Noise(a.server_pid)
    seconds: list[dict[str, Any]] = []  # per measured second: other CPU %, histogram
    sec_hist = Hist()
    n = len(socks)
    received = sent = closed = 0
    start = time.monotonic()
    rec_from = start + a.warmup
    rec_to = rec_from + a.seconds
    end = start + a.duration
    next_report = start
    next_sec = rec_from
    outq: dict[int, int] = {}  # connection -> messages to send after this round
    rate_off = a.rate <= 0  # closed loop

    def flush() -> None:
        nonlocal sent
        for j, k in outq.items():
            # one send time per write: the messages of one write leave together
            one = heads[j] + b"%019d" % clock() + tails[j]
            try:
                send_all(socks[j], one * k if k > 1 else one, end + 5)
            except OSError:
                pass
            sent += k
        outq.clear()

    def take(events: list[tuple[int, int]], measuring: bool, answer: bool) -> None:
        """Count (and time, if ``measuring``) what the ready sockets hold; queue the answers if ``answer``."""
        nonlocal received, closed
        for fd, _ in events:
            i = index[fd]
            got = _recv(socks[i], 262144)
            if got is None:
                continue
            w = wires[i]
            size = w.size
            n_got = len(got)
            if (rate_off and size and not w.buf and not n_got % size and got.startswith(w.mark)
                    and got.startswith(w.mark, n_got - size)):
                k = n_got // size  # whole messages of the last size: count, parse none
                if measuring:
                    us = (clock() - stamp(got[:size])) / 1000
                    hist.add_us(us)
                    sec_hist.add_us(us)
            else:
                msgs = w.feed(got) if got else []
                if w.owed:
                    send_all(socks[i], w.owed, end + 5)
                    w.owed = b""
                if not got or w.closed:
                    ep.unregister(fd)
                    closed += 1
                k = len(msgs)
                if not k:
                    continue
                if measuring:
                    t_ns = clock()
                    for m in msgs if not rate_off else msgs[:1]:
                        us = (t_ns - stamp(m)) / 1000
                        hist.add_us(us)
                        sec_hist.add_us(us)
            received += k
            if answer:
                mate = i ^ 1  # the session's other member answers
                outq[mate] = outq.get(mate, 0) + k

    if rate_off:
        for j in range(n):
            outq[j] = a.window
        flush()
    rr = 0
    now = start
    poll = ep.poll
    while now < end:
        if a.rate > 0:
            due = int((now - start) * a.rate) - sent
            if due > 0:
                for _ in range(min(due, 1000)):
                    outq[rr] = outq.get(rr, 0) + 1
                    rr = (rr + 1) % n
                flush()
            events = poll(max(0.0, min((sent + 1) / a.rate - (time.monotonic() - start), 0.05)))
        else:
            events = poll(0.05)
        take(events, rec_from <= now < rec_to, rate_off)
        if outq:
            flush()
        now = time.monotonic()
        if now >= next_sec and next_sec <= rec_to:
            other = noise.sample()
            if next_sec > rec_from:
                seconds.append({"other_cpu": other, "hist": {str(k): v for k, v in sec_hist.counts.items()}})
            sec_hist = Hist()
            next_sec += 1.0
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            rep.emit("progress", received=received, sent=sent, closed=closed)
            if _told_to_stop():
                break
    # Answer nothing more and count what is still on its way: with every
    # message counted right, none is missing at the end (the runner checks).
    drain_end = time.monotonic() + DRAIN_MAX
    last = received
    quiet_until = time.monotonic() + DRAIN_QUIET
    while received < sent and time.monotonic() < min(drain_end, quiet_until):
        take(poll(0.05), False, False)
        if received > last:
            last, quiet_until = received, time.monotonic() + DRAIN_QUIET
    rep.emit("done", received=received, sent=sent, closed=closed, missing=sent - received,
             hist={str(k): v for k, v in hist.counts.items()}, seconds=seconds)


class Noise:
    """CPU % used by processes other than this one and the server, since the last sample."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._server = psutil.Process(server_pid) if server_pid else None
        self._last = self._read()

    def _read(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        server = 0.0
        if self._server is not None:
            try:
                c = self._server.cpu_times()
                server = c.user + c.system
            except self._psutil.Error:
                pass
        return time.monotonic(), busy, server + time.process_time()

    def sample(self) -> float:
        now = self._read()
        last, self._last = self._last, now
        dt = now[0] - last[0]
        if dt <= 0:
            return 0.0
        return round(max(0.0, 100 * ((now[1] - last[1]) - (now[2] - last[2])) / dt), 1)


# --------------------------------------------------------------------- idle


def run_idle(a: argparse.Namespace) -> None:
    rep = Reporter("idle", a.slot)
    paths = [f"/v1/app?client=i{a.port}x{a.slot}x{i}" for i in range(a.conns)]
    conns = open_many(a.port, paths, timeout=a.timeout, concurrency=a.concurrency)
    socks = [s for s, _ in conns]
    parsers: dict[int, FrameParser] = {}

    def answer(i: int, data: bytes) -> None:
        parser = parsers.setdefault(i, FrameParser(1 << 20, expect_masked=False))
        try:
            for op, payload in parser.feed(data):
                if op == OP_PING:
                    socks[i].send(pong(payload))
        except (WebSocketError, OSError):
            pass
    hold_idle(a, rep, socks, answer)


def hold_idle(a: argparse.Namespace, rep: Reporter, socks: list[socket.socket],
              answer: Callable[[int, bytes], None]) -> None:
    """The idle role's loop, whatever the wire: ``answer(i, data)`` replies to what connection
    ``i`` got (pings); closes are counted, progress reported every 0.5 s, until ``--duration``
    or the runner goes away."""
    ep, index = watch(socks)
    rep.emit("ready", conns=len(socks))
    end = time.monotonic() + a.duration
    open_count = len(socks)
    next_report = 0.0
    go_seen = False
    now = time.monotonic()
    while now < end:
        for fd, _ in ep.poll(0.1):
            i = index[fd]
            data = _recv(socks[i], 65536)
            if data is None:
                continue
            if not data:
                ep.unregister(fd)
                open_count -= 1
                continue
            answer(i, data)
        if not go_seen and select.select([sys.stdin], [], [], 0)[0]:
            go_seen = True
            if not sys.stdin.readline():  # the runner went away
                break
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 0.5
            rep.emit("progress", open=open_count)
    rep.emit("done", open=open_count)


def _recv(sock: socket.socket, size: int) -> bytes | None:
    """What the socket has: None if nothing yet, ``b""`` once it is closed or failed."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


# ------------------------------------------------------------------ control


def run_control(a: argparse.Namespace) -> None:
    rep = Reporter("control", a.slot)
    ((sock, trailing),) = open_many(a.port, ["/v1/control"], timeout=a.timeout)
    wid = f"bench{a.slot}"
    parser = FrameParser(1 << 20, expect_masked=False)
    deadline = time.monotonic() + a.timeout
    # as a worker does: msgpack in binary frames (``--codec json``: text frames)
    loads: Callable[[bytes], Any]
    if a.codec == "msgpack":
        def frame(obj: Any) -> bytes:
            return encode_masked_frame(OP_BINARY, msgpack.packb(obj), MASK)
        loads = msgpack.unpackb
        data_op = OP_BINARY
    else:
        frame = text
        loads = orjson.loads
        data_op = OP_TEXT
    send_all(sock, frame({"type": "register", "worker": wid, "url": f"ws://127.0.0.1:{9000 + a.slot}",
                          "capacity": 100000, "sessions": {}, "presence": []}), deadline)
    registered = False
    data = trailing
    while not registered:
        if time.monotonic() > deadline:
            raise SystemExit("control: no 'registered' from the master")
        for op, payload in parser.feed(data):
            if op == data_op:
                decoded = loads(payload)
                batch = decoded if type(decoded) is list else [decoded]
                registered = any(m.get("type") == "registered" for m in batch)
        if not registered:
            select.select([sock], [], [], 0.05)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = b""
    rep.emit("ready")
    if not wait_go(a.timeout):
        return
    heartbeat = frame({"type": "heartbeat", "metrics": {}})
    hist = Hist()
    sent_at: dict[int, int] = {}
    replies = 0
    claims = 0
    errors = 0
    next_id = 2  # even: claim s<n>, the next odd: look it up
    start = time.monotonic()
    rec_from = start + a.warmup
    rec_to = rec_from + a.seconds
    end = start + a.duration
    next_report = start
    next_hb = start
    now = start
    prefix = f"s{a.slot}-"
    while now < end:
        room = a.window - len(sent_at)
        if room >= a.batch or (room > 0 and not sent_at):
            requests = []
            t_ns = time.perf_counter_ns()
            for _ in range(room):
                rid = next_id
                next_id += 1
                # even ids claim a new session, odd ids look the previous one up
                kind = "claim" if rid & 1 == 0 else "lookup"
                requests.append({"type": kind, "id": rid, "session": f"{prefix}{rid >> 1}"})
                sent_at[rid] = t_ns
            # as a worker's link writer does: what is queued goes out as batches
            send_all(sock, b"".join(frame(requests[i:i + MAX_BATCH])
                                    for i in range(0, len(requests), MAX_BATCH)), end + 5)
        if now >= next_hb:
            next_hb = now + 0.5
            send_all(sock, heartbeat, end + 5)
        select.select([sock], [], [], 0.05)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            data = b""
        if data:
            t_ns = time.perf_counter_ns()
            for op, payload in parser.feed(data):
                if op != data_op:
                    if op == OP_PING:
                        send_all(sock, pong(payload), end + 5)
                    elif op == OP_CLOSE:
                        raise SystemExit(f"control: the master closed the link: {payload}")
                    continue
                decoded = loads(payload)
                for m in decoded if type(decoded) is list else [decoded]:
                    if m.get("type") != "owner":
                        continue
                    rid = m.get("id")
                    t0 = sent_at.pop(rid, None)
                    if t0 is None or m.get("worker") != wid:
                        errors += 1  # unknown id, or a claim/lookup answered with another owner
                        continue
                    replies += 1
                    if rid & 1 == 0:
                        claims += 1
                    if rec_from <= now < rec_to:
                        hist.add_us((t_ns - t0) / 1000)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            rep.emit("progress", replies=replies, claims=claims, errors=errors)
            if _told_to_stop():
                break
    rep.emit("done", replies=replies, claims=claims, errors=errors,
             hist={str(k): v for k, v in hist.counts.items()})


# ------------------------------------------------------------------- jitter


def run_jitter(a: argparse.Namespace) -> None:
    """The machine's noise floor: how late a 1 ms epoll timeout wakes this process."""
    rep = Reporter("jitter", a.slot)
    ep = select.epoll()
    hist = Hist()
    end = time.monotonic() + a.seconds
    n = 0
    while time.monotonic() < end and n < 100_000:
        t = time.perf_counter_ns()
        ep.poll(0.001)
        hist.add_us(max(0, (time.perf_counter_ns() - t) / 1000 - 1000))
        n += 1
    rep.emit("done", hist={str(k): v for k, v in hist.counts.items()}, samples=n)


# ----------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mc.bench.gen")
    p.add_argument("role", choices=["recv", "pub", "relay", "idle", "control", "jitter"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--slot", type=int, default=0)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--path", default="/v1/consumer")
    p.add_argument("--topic", default="bench.fanout")
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--flow", default="")
    p.add_argument("--codec", choices=["msgpack", "json"], default="msgpack",
                   help="control: the link's codec (workers use msgpack)")
    p.add_argument("--server-pid", type=int, default=0, help="relay: for the per-second noise figure")
    p.add_argument("--flow-slots", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=8.0, help="hard bound of the run after go")
    p.add_argument("--timeout", type=float, default=60.0, help="bound of the setup phase")
    p.add_argument("--tls", default="", metavar="CAFILE", help="recv, pub, relay: TLS, trusting CAFILE")
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    a.tls_context = tlsclient.client_context(a.tls) if a.tls else None
    # No collector pauses inside a measurement: generators allocate little
    # that is cyclic, and every run is bounded in time.
    gc.disable()
    {"recv": run_recv, "pub": run_pub, "relay": run_relay, "idle": run_idle,
     "control": run_control, "jitter": run_jitter}[a.role](a)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # ConnectionError included
        raise SystemExit(f"generator: {exc}") from None
