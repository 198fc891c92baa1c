"""HTTP load on the master's notify API: ``python -m mc.bench.httpgen [options]``.

``--conns`` keep-alive HTTP/1.1 connections on raw non-blocking sockets and
one epoll, each with one request in flight (a Python HTTP client per request
would be the limit, not the master):

* closed loop (``--rate 0``): a connection sends its next request as soon as
  the answer is in, for the highest rate;
* open loop (``--rate R``): requests fall due on a fixed schedule; one due
  while every connection is busy waits (at most ``MAX_BACKLOG`` per
  connection, the rest count as ``missed``), and its latency counts from when
  it was due, so a stall of the server is not hidden by the generator.

Requests cycle over ``--count`` app clients named ``--prefix`` + index (the
idle generator's names): ``POST /v1/notify`` with ``{"to": {"client"},
"data"}``, or with ``--batch B`` ``POST /v1/notify/batch`` with B of them
per request. Answers are read by ``Content-Length``; ``delivered`` is summed.
JSON lines on stdout as mc.bench.gen's roles (``ready``, ``progress``,
``done`` with the latency histogram of the measured window); every loop ends
at ``--duration``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import select
import socket
import time

import orjson

from .gen import Hist, _told_to_stop
from .wsclient import Reporter, wait_go

PROGRESS_EVERY = 0.2
#: requests waiting for a free connection in the open loop, per connection
MAX_BACKLOG = 64
#: distinct request bodies cycled over (the clients), at most
MAX_BODIES = 10_000
_DELIVERED = b'{"delivered":'


def requests(a: argparse.Namespace) -> list[bytes]:
    """Every request this generator sends, pre-encoded: a cycle over the clients."""
    out = []
    per = max(1, a.batch)
    count = min(a.count, MAX_BODIES)
    path = "/v1/notify/batch" if a.batch else "/v1/notify"
    auth = f"Authorization: Bearer {a.api_key}\r\n" if a.api_key else ""
    for k in range(0, count, per):
        items = [{"to": {"client": f"{a.prefix}{(k + j) % a.count}"}, "data": {"n": k + j}}
                 for j in range(per)]
        body = orjson.dumps({"notifies": items} if a.batch else items[0])
        out.append((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n{auth}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    return out


class Conn:
    __slots__ = ("sock", "buf", "sent_at", "busy")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.sent_at = 0.0
        self.busy = False


def answer(buf: bytearray) -> tuple[int, bytes] | None:
    """One complete response taken off ``buf``: (status, body), or None if not all in yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"content-length:")
    if at < 0:
        raise ValueError("an answer without Content-Length")
    stop = head.find(b"\r\n", at)
    length = int(head[at + 15:stop if stop >= 0 else len(head)])
    if len(buf) < end + 4 + length:
        return None
    body = bytes(buf[end + 4:end + 4 + length])
    del buf[:end + 4 + length]
    return int(head[9:12]), body


def delivered_of(body: bytes) -> tuple[int, int]:
    """(items answered, delivered) of a single or batch answer."""
    if body.startswith(_DELIVERED):
        return 1, int(body[len(_DELIVERED):-1])
    obj = orjson.loads(body)
    results = obj.get("results", []) if type(obj) is dict else []
    return len(results), sum(r.get("delivered", 0) for r in results)


def connect(a: argparse.Namespace) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


def run(a: argparse.Namespace) -> None:
    rep = Reporter("http", a.slot)
    reqs = requests(a)
    conns = [Conn(connect(a)) for _ in range(a.conns)]
    by_fd = {c.sock.fileno(): c for c in conns}
    ep = select.epoll()
    for c in conns:
        ep.register(c.sock.fileno(), select.EPOLLIN)
    rep.emit("ready", conns=len(conns))
    if not wait_go(a.timeout):
        return
    hist = Hist()
    counts = {"answered": 0, "items": 0, "delivered": 0, "errors": 0, "missed": 0, "sent": 0, "closed": 0}
    statuses: dict[str, int] = {}
    start = time.monotonic()
    measure_from, measure_to = start + a.warmup, start + a.warmup + a.seconds
    end = start + a.duration
    idle = collections.deque(conns)
    backlog: collections.deque[float] = collections.deque()
    nreq = len(reqs)
    i = 0
    interval = 1.0 / a.rate if a.rate > 0 else 0.0
    next_due = start
    next_report = start

    def send(c: Conn, due: float) -> None:
        nonlocal i
        c.sent_at = due
        c.busy = True
        c.sock.send(reqs[i % nreq])  # a request fits the empty send buffer of a keep-alive socket
        i += 1
        counts["sent"] += 1

    if not interval:
        while idle:
            send(idle.popleft(), time.monotonic())
    now = time.monotonic()
    while now < end:
        if interval:
            while next_due <= now:
                if idle:
                    send(idle.popleft(), next_due)
                elif len(backlog) < MAX_BACKLOG * len(conns):
                    backlog.append(next_due)
                else:
                    counts["missed"] += 1
                next_due += interval
            timeout = max(0.0, min(next_due, next_report) - now)
        else:
            timeout = max(0.0, next_report - now)
        for fd, _ in ep.poll(timeout):
            c = by_fd[fd]
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:  # the master closed it (after an error answer): count it, connect again
                counts["closed"] += 1
                ep.unregister(fd)
                c.sock.close()
                c.sock = connect(a)
                c.buf.clear()
                by_fd[c.sock.fileno()] = c
                ep.register(c.sock.fileno(), select.EPOLLIN)
                data = b"HTTP/1.1 599 closed\r\ncontent-length: 0\r\n\r\n"
            c.buf += data
            got = answer(c.buf)
            if got is None:
                continue
            t = time.monotonic()
            status, body = got
            counts["answered"] += 1
            if status == 200:
                items, delivered = delivered_of(body)
                counts["items"] += items
                counts["delivered"] += delivered
            else:
                counts["errors"] += 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            if measure_from <= c.sent_at < measure_to:
                hist.add_us((t - c.sent_at) * 1e6)
            c.busy = False
            if not interval:
                send(c, t)
            elif backlog:
                send(c, backlog.popleft())
            else:
                idle.append(c)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            rep.emit("progress", **counts)
            if _told_to_stop():
                break
    rep.emit("done", hist={str(k): v for k, v in hist.counts.items()}, statuses=statuses, **counts)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mc.bench.httpgen")
    p.add_argument("--port", type=int, required=True, help="the master's port")
    p.add_argument("--slot", type=int, default=0)
    p.add_argument("--conns", type=int, default=100, help="keep-alive connections")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s (0: closed loop)")
    p.add_argument("--batch", type=int, default=0, help="notifies per request (0: the single form)")
    p.add_argument("--prefix", required=True, help="app client names: PREFIX + index")
    p.add_argument("--count", type=int, required=True, help="app clients online")
    p.add_argument("--api-key", default="")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=8.0, help="hard bound of the run after go")
    p.add_argument("--timeout", type=float, default=60.0, help="bound of the setup phase")
    return p


if __name__ == "__main__":
    gc.disable()  # as mc.bench.gen: every run is bounded, and allocations are not cyclic
    try:
        run(parser().parse_args())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(f"httpgen: {exc}") from None
