"""NATS-protocol load generators: ``python -m mc.bench.natsgen ROLE [options]``.

The same roles, options, JSON lines and stdin "go" as mc.bench.gen, so the
runner drives nats-server exactly as it drives mc; only the wire differs.
Raw non-blocking sockets and one ``epoll``, the client protocol written by
hand (``CONNECT``, ``SUB``, ``PUB``, ``PING``/``PONG`` and ``MSG`` parsing):

``recv``   N connections subscribed to ``--topic`` (sid 1, so all receive the
           same byte stream); counts bytes and divides by the mean ``MSG``
           size one sample connection measures by parsing everything.
``pub``    one connection publishing payloads shaped like mc's ``message``
           frame, within ``--window`` of the slowest subscriber.
``relay``  two-member "sessions": member a subscribes to ``chat.<i>.a`` and
           publishes to ``chat.<i>.b`` and back. A received message is only
           sliced (the send time sits at a fixed offset of the payload) and
           every reply of one poll round goes out as one write per
           connection, so one generator process drives nats-server close to
           its limit; ``--generators`` adds processes.
``idle``   N idle connections (memory), answering the server's PINGs.

A connection is set up when the server answered the ``PING`` that follows
``CONNECT`` (and ``SUB``): NATS's equivalent of mc's welcome and ack.
"""

from __future__ import annotations

import argparse
import gc
import os
import select
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

import orjson

from .gen import PROGRESS_EVERY, Hist, Noise, _flow_map, _recv, _told_to_stop, count_received, parser
from .wsclient import HandshakeFailed, Reporter, connect_nowait, send_all, wait_go, watch

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"echo":false,"headers":false}\r\nPING\r\n'
PONG = b"PONG\r\n"
TS_AT = 9  # the payload starts {"data":" and then 19 digits of perf_counter_ns


class MsgParser:
    """``MSG`` payloads out of a NATS server's byte stream; counts PINGs and errors."""

    __slots__ = ("buf", "errors", "pings", "pongs")

    def __init__(self) -> None:
        self.buf = b""
        self.pings = 0
        self.pongs = 0
        self.errors: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data if self.buf else data
        out = []
        pos = 0
        n = len(buf)
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"MSG ", pos):
                end = eol + 2 + int(buf[buf.rfind(b" ", pos, eol) + 1:eol])
                if end + 2 > n:
                    break
                out.append(buf[eol + 2:end])
                pos = end + 2
                continue
            line = buf[pos:eol]
            pos = eol + 2
            if line == b"PING":
                self.pings += 1
            elif line == b"PONG":
                self.pongs += 1
            elif line.startswith(b"-ERR"):
                self.errors.append(line)
        self.buf = buf[pos:]
        return out


def open_many(port: int, subs: list[bytes], *, timeout: float,
              concurrency: int = 256) -> list[tuple[socket.socket, MsgParser]]:
    """One connection per entry of ``subs`` (its SUB lines, may be empty), each answered by PONG.

    At most ``concurrency`` are being set up at once; all within
    ``timeout`` seconds. Sockets are left non-blocking with TCP_NODELAY.
    """
    todo = deque(enumerate(subs))
    results: list[Any] = [None] * len(todo)
    ep = select.epoll()
    pending: dict[int, list[Any]] = {}  # fd -> [index, sock, SUB lines or None once sent, parser]
    deadline = time.monotonic() + timeout
    try:
        while todo or pending:
            if time.monotonic() > deadline:
                done = sum(r is not None for r in results)
                raise HandshakeFailed(f"only {done}/{len(results)} NATS connections set up in {timeout}s")
            while todo and len(pending) < concurrency:
                i, sub = todo.popleft()
                s = connect_nowait(port)
                pending[s.fileno()] = [i, s, sub, MsgParser()]
                ep.register(s.fileno(), select.EPOLLOUT)
            for fd, _ in ep.poll(0.05):
                st = pending[fd]
                s = st[1]
                if st[2] is not None:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise HandshakeFailed(f"connect: {os.strerror(err)}")
                    # the server answers PING only after CONNECT and the SUBs before it
                    s.send(CONNECT[:-6] + st[2] + b"PING\r\n")
                    st[2] = None
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise HandshakeFailed("nats-server closed the connection during setup")
                p = st[3]
                p.feed(data)
                if p.errors:
                    raise HandshakeFailed(f"nats-server: {p.errors[0].decode(errors='replace')}")
                if p.pongs:
                    ep.unregister(fd)
                    del pending[fd]
                    results[st[0]] = (s, p)
    except BaseException:
        for st in pending.values():
            st[1].close()
        for r in results:
            if r is not None:
                r[0].close()
        raise
    finally:
        ep.close()
    return results


# ------------------------------------------------------------------ fan-out


def run_recv(a: argparse.Namespace) -> None:
    rep = Reporter("recv", a.slot)
    sub = f"SUB {a.topic} 1\r\n".encode()
    conns = open_many(a.port, [sub] * a.conns, timeout=a.timeout, concurrency=a.concurrency)
    socks = [s for s, _ in conns]
    rep.emit("ready", conns=len(socks))
    if not wait_go(a.timeout):
        return
    ep, index = watch(socks)
    sample = MsgParser()
    count_received(a, rep, socks, ep, index, lambda data: len(sample.feed(data)))


def message_payload(topic: str, payload: int, client: str) -> bytes:
    """What mc delivers for one publish (its ``message`` frame), as the NATS payload."""
    return orjson.dumps({"type": "message", "topic": topic, "data": "x" * payload,
                         "from": {"client": client, "device": "default"}, "worker": "nats",
                         "seq": 1, "ts": time.time_ns() // 1_000_000})


def run_pub(a: argparse.Namespace) -> None:
    rep = Reporter("pub", a.slot)
    ((sock, _),) = open_many(a.port, [b""], timeout=a.timeout)
    body = message_payload(a.topic, a.payload, f"pub{a.slot}")
    frame = b"PUB %s %d\r\n%s\r\n" % (a.topic.encode(), len(body), body)
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
        room = int(min(struct.unpack_from(f"{slots}d", flow, 0))) + a.window - published
        if room > 0:
            k = min(room, a.batch)
            send_all(sock, batches[k], end + 5)
            published += k
        else:
            blocked += 1
            select.select([sock], [], [], 0.0002)
        data = _recv(sock, 65536)  # the server's PINGs and errors only
        if data and b"PING\r\n" in data:
            send_all(sock, PONG, end + 5)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            rep.emit("progress", published=published, blocked=blocked)
    rep.emit("done", published=published, blocked=blocked)


# -------------------------------------------------------------------- relay


def run_relay(a: argparse.Namespace) -> None:
    rep = Reporter("relay", a.slot)
    subs, heads, tails = [], [], []
    pad = b"x" * max(0, a.payload - 19)
    for i in range(a.first, a.first + a.sessions):
        for me, peer in (("a", "b"), ("b", "a")):
            subs.append(f"SUB chat.{i}.{me} 1\r\n".encode())
            # mc's chat frame: {"type":"chat","from":...,"data":...,"seq":...,"ts":...}, data first
            tail = pad + b'","type":"chat","from":"%s%d","seq":1,"ts":1}' % (me.encode(), i)
            heads.append(b'PUB chat.%d.%s %d\r\n{"data":"' % (i, peer.encode(), TS_AT + 19 + len(tail)))
            tails.append(tail + b"\r\n")
    conns = open_many(a.port, subs, timeout=a.timeout, concurrency=a.concurrency)
    socks = [s for s, _ in conns]
    parsers = [p for _, p in conns]
    n = len(socks)
    rep.emit("ready", conns=n)
    if not wait_go(a.timeout):
        return
    ep, index = watch(socks)
    clock = time.perf_counter_ns
    hist = Hist()
    noise = Noise(a.server_pid)
    seconds: list[dict[str, Any]] = []  # per measured second: other CPU %, histogram
    sec_hist = Hist()
    received = sent = closed = 0
    start = time.monotonic()
    rec_from = start + a.warmup
    rec_to = rec_from + a.seconds
    end = start + a.duration
    next_report = start
    next_sec = rec_from
    outq: dict[int, int] = {}  # connection -> messages to send after this round

    def flush() -> None:
        nonlocal sent
        for j, k in outq.items():
            h, t = heads[j], tails[j]
            try:
                send_all(socks[j], b"".join([h + b"%019d" % clock() + t for _ in range(k)]), end + 5)
            except OSError:
                pass
            sent += k
        outq.clear()

    if a.rate <= 0:
        for j in range(n):
            outq[j] = a.window
        flush()
    rr = 0
    now = start
    while now < end:
        if a.rate > 0:
            due = int((now - start) * a.rate) - sent
            if due > 0:
                for _ in range(min(due, 1000)):
                    outq[rr] = outq.get(rr, 0) + 1
                    rr = (rr + 1) % n
                flush()
            events = ep.poll(max(0.0, min((sent + 1) / a.rate - (time.monotonic() - start), 0.05)))
        else:
            events = ep.poll(0.05)
        measuring = rec_from <= now < rec_to
        for fd, _ in events:
            i = index[fd]
            got = _recv(socks[i], 262144)
            if got is None:
                continue
            if not got:
                ep.unregister(fd)
                closed += 1
                continue
            p = parsers[i]
            msgs = p.feed(got)
            if p.pings:
                p.pings = 0
                send_all(socks[i], PONG, end + 5)
            if not msgs:
                continue
            received += len(msgs)
            if measuring:
                t_ns = clock()
                for m in msgs:
                    us = (t_ns - int(m[TS_AT:TS_AT + 19])) / 1000
                    hist.add_us(us)
                    sec_hist.add_us(us)
            if a.rate <= 0:
                mate = i ^ 1  # the session's other member answers
                outq[mate] = outq.get(mate, 0) + len(msgs)
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
    rep.emit("done", received=received, sent=sent, closed=closed,
             hist={str(k): v for k, v in hist.counts.items()}, seconds=seconds)


# --------------------------------------------------------------------- idle


def run_idle(a: argparse.Namespace) -> None:
    rep = Reporter("idle", a.slot)
    conns = open_many(a.port, [b""] * a.conns, timeout=a.timeout, concurrency=a.concurrency)
    socks = [s for s, _ in conns]
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
            elif b"PING\r\n" in data:
                try:
                    socks[i].send(PONG)
                except OSError:
                    pass
        if not go_seen and select.select([sys.stdin], [], [], 0)[0]:
            go_seen = True
            if not sys.stdin.readline():  # the runner went away
                break
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 0.5
            rep.emit("progress", open=open_count)
    rep.emit("done", open=open_count)


ROLES = {"recv": run_recv, "pub": run_pub, "relay": run_relay, "idle": run_idle}


def main(argv: list[str] | None = None) -> None:
    p = parser()
    p.prog = "python -m mc.bench.natsgen"
    a = p.parse_args(argv)
    if a.role not in ROLES:
        p.error(f"role {a.role!r} has no NATS form (one of {', '.join(ROLES)})")
    gc.disable()  # as mc.bench.gen: no collector pauses inside a measurement
    ROLES[a.role](a)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except (OSError, HandshakeFailed) as exc:
        raise SystemExit(f"natsgen: {exc}") from None
