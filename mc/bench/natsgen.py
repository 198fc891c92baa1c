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
           publishes to ``chat.<i>.b`` and back; mc.bench.gen.relay_loop,
           the loop of mc's relay generator, with NATS framing (reads of
           whole messages counted by their length, one write per connection
           per poll round), so one generator core drives nats-server to
           its limit.
``idle``   N idle connections (memory), answering the server's PINGs.

A connection is set up when the server answered the ``PING`` that follows
``CONNECT`` (and ``SUB``): NATS's equivalent of mc's welcome and ack.
"""

from __future__ import annotations

import argparse
import functools
import gc
import select
import socket
import time

import orjson

from .gen import _recv, count_received, hold_idle, parser, publish_loop, relay_loop
from .wsclient import HandshakeFailed, Reporter, Wire, check_connected, open_all, send_all, wait_go, watch

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"echo":false,"headers":false}\r\nPING\r\n'
PONG = b"PONG\r\n"
TS_AT = 9  # the payload starts {"data":" and then 19 digits of perf_counter_ns


class MsgParser(Wire):
    """``MSG`` payloads out of a NATS server's stream; PINGs answered (``owed``), PONGs and errors counted.

    NATS has no close message: the socket's EOF says it.
    """

    __slots__ = ("errors", "pongs")

    def __init__(self) -> None:
        super().__init__(b"MSG ")
        self.pongs = 0
        self.errors: list[bytes] = []

    def split(self, buf: bytes, out: list[bytes]) -> int:
        pos = 0
        n = len(buf)
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return pos
            if buf.startswith(b"MSG ", pos):
                end = eol + 2 + int(buf[buf.rfind(b" ", pos, eol) + 1:eol])
                if end + 2 > n:
                    return pos
                out.append(buf[eol + 2:end])
                self.size = end + 2 - pos
                self.mark = buf[pos:eol + 2]
                pos = end + 2
                continue
            line = buf[pos:eol]
            pos = eol + 2
            if line == b"PING":
                self.owed += PONG
            elif line == b"PONG":
                self.pongs += 1
            elif line.startswith(b"-ERR"):
                self.errors.append(line)


class Connect:
    """A NATS connection being set up: ``CONNECT``, its SUB lines, then ``PING``; done at the PONG."""

    __slots__ = ("parser", "sock", "sub")

    def __init__(self, sock: socket.socket, sub: bytes) -> None:
        self.sock = sock
        self.sub: bytes | None = sub
        self.parser = MsgParser()

    def event(self) -> int:
        if self.sub is not None:
            check_connected(self.sock)
            # the server answers PING only after CONNECT and the SUBs before it
            self.sock.send(CONNECT[:-6] + self.sub + b"PING\r\n")
            self.sub = None
            return select.EPOLLIN
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return select.EPOLLIN
        if not data:
            raise HandshakeFailed("nats-server closed the connection during setup")
        p = self.parser
        p.feed(data)
        if p.errors:
            raise HandshakeFailed(f"nats-server: {p.errors[0].decode(errors='replace')}")
        return 0 if p.pongs else select.EPOLLIN


def open_many(port: int, subs: list[bytes], *, timeout: float,
              concurrency: int = 256) -> list[tuple[socket.socket, MsgParser]]:
    """One connection per entry of ``subs`` (its SUB lines, may be empty), each answered by PONG.

    wsclient.open_all with :class:`Connect`: at most ``concurrency`` at
    once, all within ``timeout`` seconds.
    """
    starts = [functools.partial(Connect, sub=sub) for sub in subs]
    done = open_all(port, starts, timeout=timeout, concurrency=concurrency, what="NATS connections")
    return [(c.sock, c.parser) for c in done]


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
    ((sock, _),) = open_many(a.port, [b""], timeout=a.timeout)
    body = message_payload(a.topic, a.payload, f"pub{a.slot}")

    def read(deadline: float) -> None:
        data = _recv(sock, 65536)  # the server's PINGs and errors only
        if data and b"PING\r\n" in data:
            send_all(sock, PONG, deadline)
    publish_loop(a, Reporter("pub", a.slot), sock,
                 b"PUB %s %d\r\n%s\r\n" % (a.topic.encode(), len(body), body), read)


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
    rep.emit("ready", conns=len(socks))
    if not wait_go(a.timeout):
        return
    ep, index = watch(socks)
    relay_loop(a, rep, socks, ep, index, [p for _, p in conns], heads, tails)


# --------------------------------------------------------------------- idle


def run_idle(a: argparse.Namespace) -> None:
    conns = open_many(a.port, [b""] * a.conns, timeout=a.timeout, concurrency=a.concurrency)
    socks = [s for s, _ in conns]

    def answer(i: int, data: bytes) -> None:
        if b"PING\r\n" in data:
            try:
                socks[i].send(PONG)
            except OSError:
                pass
    hold_idle(a, Reporter("idle", a.slot), socks, answer)


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
