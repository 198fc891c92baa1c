"""The lean idle-app generator of ``mc bench million``: ``python -m mc.bench.holdgen``.

One process opens ``--conns`` app connections (``/v1/app?client=h<slot>c<i>``)
round-robin over the workers' ports, each bound first to a source address of
its own 127.0.0.0/8 block with ``IP_BIND_ADDRESS_NO_PORT`` (the port is picked
at connect time, per destination, so bind-before-connect reserves none and a
process is not limited to the 28,232 ephemeral ports of one address). A
connection counts as open once its ``welcome`` arrived, i.e. once the master
recorded its presence (PROTOCOL.md "Presence before welcome"); one welcomed
with ``"presence": "local"`` (the master did not answer within 1 s) is
counted apart.

Lean on purpose, because a million of these share the machine with the
cluster: once welcomed, a connection is only its file descriptor, in the
epoll set and in no Python object (the socket is detached). Server frames are
parsed from each read: pings are answered (the worker's idle timeout is
3 x heartbeat; a read that is just the worker's empty ping gets a constant
pong without parsing), ``notify`` frames counted and their arrival times kept in a
1 ms histogram on CLOCK_MONOTONIC (system-wide, so the runner can merge the
generators' histograms against the moment it posted the notify). A frame
split across reads (rare: server frames here are small) waits in a dict
keyed by fd until its rest arrives.

Bounds: at most ``--concurrency`` handshakes in flight; a failed attempt is
retried after 0.5 s, ``--retries`` times per connection; the setup phase
ends by ``--timeout`` (then the process holds what is open and says
``"complete": false`` in ``ready``) and the whole process by ``--duration``
(or a "stop" line / EOF on stdin). JSON lines on stdout: ``started`` (RSS before any
connection), ``progress`` (when something changed, at most every 0.5 s),
``ready``, ``done`` (with the notify histogram).
"""

from __future__ import annotations

import argparse
import errno
import gc
import os
import select
import socket
import sys
import time
from collections import deque

from .wsclient import HOST, Reporter, pong, request_bytes

#: Linux: bind() picks no port; connect() chooses one unique for the 4-tuple
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCES_PER_GEN = 16  # source addresses per generator: 127.<1 + slot // 250>.<slot % 250>.1..16
PROGRESS_EVERY = 0.5
RETRY_AFTER = 0.5
READ = 65536
MAX_HEAD = 16384  # bytes of handshake answer before it counts as failed
OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9
#: the worker's keep-alive ping (empty, unmasked) as one read, and its answer: an
#: empty pong with a zero mask key (any key is allowed), so constant bytes
PING = b"\x89\x00"
PONG = b"\x8a\x80\x00\x00\x00\x00"


def sources(slot: int) -> list[str]:
    """This generator's source addresses: a block of 127.0.0.0/8 no other generator uses.

    >>> sources(251)[:2]
    ['127.2.1.1', '127.2.1.2']
    """
    return [f"127.{1 + slot // 250}.{slot % 250}.{k}" for k in range(1, SOURCES_PER_GEN + 1)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Handshake:
    """A connection until its welcome: the only per-connection Python object, and short-lived."""

    __slots__ = ("attempts", "buf", "index", "sent", "sock")

    def __init__(self, index: int, sock: socket.socket, attempts: int) -> None:
        self.index = index
        self.sock = sock
        self.attempts = attempts
        self.sent = False
        self.buf = b""


class Hold:
    """The welcomed connections' frames: pongs, notify counts, closes."""

    def __init__(self, ep: select.epoll) -> None:
        self.ep = ep
        self.partial: dict[int, bytes] = {}
        self.notified = 0
        self.closed = 0
        self.pings = 0
        self.arrivals: dict[int, int] = {}  # CLOCK_MONOTONIC ms -> notify frames

    def close(self, fd: int) -> None:
        self.partial.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        os.close(fd)
        self.closed += 1

    def readable(self, fd: int, now_ms: int) -> None:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(fd)
            return
        if data == PING and fd not in self.partial:  # holding is mostly this: one recv, one send
            self.pings += 1
            try:
                os.write(fd, PONG)
            except OSError:
                pass
            return
        if fd in self.partial:
            data = self.partial.pop(fd) + data
        pos = 0
        end = len(data)
        while end - pos >= 2:
            op = data[pos] & 0x0F
            n = data[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(data[pos + 2:pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(data[pos + 2:pos + 10], "big")
                head = 10
            if end - pos < head + n:
                break
            payload = data[pos + head:pos + head + n]
            pos += head + n
            if op == OP_TEXT:
                if b'"notify"' in payload:
                    self.notified += 1
                    self.arrivals[now_ms] = self.arrivals.get(now_ms, 0) + 1
            elif op == OP_PING:
                self.pings += 1
                try:
                    os.write(fd, pong(payload) if payload else PONG)
                except OSError:
                    pass
            elif op == OP_CLOSE:
                self.close(fd)
                return
        if pos < end:
            self.partial[fd] = data[pos:]


def _told(stdin_open: list[bool]) -> bool:
    """A line ("stop") or EOF on stdin."""
    if stdin_open[0] and select.select([sys.stdin], [], [], 0)[0]:
        stdin_open[0] = False
        return True
    return False


def run(a: argparse.Namespace) -> None:
    rep = Reporter("hold", a.slot)
    rep.emit("started", rss=rss_bytes())
    ports = [int(p) for p in a.ports.split(",")]
    srcs = sources(a.slot)
    ep = select.epoll()
    hold = Hold(ep)
    pending: dict[int, Handshake] = {}  # by fd; at most --concurrency entries
    todo: deque[tuple[int, int]] = deque((i, 0) for i in range(a.conns))  # (index, attempts so far)
    later: deque[tuple[float, int, int]] = deque()  # (not before, index, attempts)
    opened = failed = local = 0
    errors: dict[str, int] = {}
    stdin_open = [True]
    t0 = time.monotonic()
    setup_end = t0 + a.timeout
    end = t0 + a.duration
    next_report = 0.0
    last_reported: tuple[int, ...] = ()

    def fail(st: Handshake, why: str) -> None:
        nonlocal failed
        errors[why] = errors.get(why, 0) + 1
        ep.unregister(st.sock.fileno())
        del pending[st.sock.fileno()]
        st.sock.close()
        if st.attempts < a.retries:
            later.append((time.monotonic() + RETRY_AFTER, st.index, st.attempts + 1))
        else:
            failed += 1

    def report(event: str, **extra: object) -> None:
        rep.emit(event, opened=opened - hold.closed, failed=failed, local=local, pending=len(pending),
                 notified=hold.notified, closed=hold.closed, pings=hold.pings, errors=errors, **extra)

    poll = ep.poll
    ready = False
    now = t0
    while now < end:
        if not ready:
            while later and later[0][0] <= now:
                _, i, k = later.popleft()
                todo.append((i, k))
            while todo and len(pending) < a.concurrency:
                i, k = todo.popleft()
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((srcs[i % len(srcs)], 0))
                s.setblocking(False)
                err = s.connect_ex((HOST, ports[i % len(ports)]))
                new = Handshake(i, s, k)
                pending[s.fileno()] = new
                ep.register(s.fileno(), select.EPOLLOUT)
                if err not in (0, errno.EINPROGRESS):
                    fail(new, os.strerror(err))
            if not todo and not pending and not later:
                ready = True
                report("ready", seconds=round(now - t0, 2))
            elif now > setup_end:  # hold what is open; the runner reports the shortfall
                for st in list(pending.values()):
                    fail(st, "setup bound")
                failed += len(todo) + len(later)
                todo.clear()
                later.clear()
                ready = True
                report("ready", seconds=round(now - t0, 2), complete=False)
        events = poll(0.05, 4096)
        now_ms = int(time.monotonic() * 1000)  # after the wait: arrivals are never stamped early
        for fd, _ in events:
            if fd not in pending:
                hold.readable(fd, now_ms)
                continue
            st = pending[fd]
            s = st.sock
            if not st.sent:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(st, os.strerror(err))
                    continue
                s.send(request_bytes(f"/v1/app?client=h{a.slot}c{st.index}", ports[st.index % len(ports)]))
                st.sent = True
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = s.recv(READ)
            except BlockingIOError:
                continue
            except OSError as exc:
                fail(st, exc.strerror or "recv")
                continue
            if not data:
                fail(st, "closed in handshake")
                continue
            st.buf += data
            head, sep, rest = st.buf.partition(b"\r\n\r\n")
            if not sep:
                if len(st.buf) > MAX_HEAD:
                    fail(st, "handshake too long")
                continue
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                fail(st, status.decode(errors="replace")[9:12] or "bad answer")
                continue
            if b'"welcome"' not in rest:
                continue
            if b'"local"' in rest:
                local += 1
            del pending[fd]
            s.detach()  # from now on the connection is only its fd
            opened += 1
        now = time.monotonic()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            state = (opened, failed, hold.notified, hold.closed, len(pending))
            if state != last_reported:
                last_reported = state
                report("progress")
        if ready and _told(stdin_open):
            break
    report("done", rss=rss_bytes(), arrivals={str(k): v for k, v in hold.arrivals.items()})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mc.bench.holdgen")
    p.add_argument("--ports", required=True, help="the workers' ports, comma-separated")
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--slot", type=int, default=0, help="this generator's number (its source addresses)")
    p.add_argument("--concurrency", type=int, default=128, help="handshakes in flight")
    p.add_argument("--retries", type=int, default=3, help="attempts per connection after the first")
    p.add_argument("--timeout", type=float, default=60.0, help="bound of the setup phase, seconds")
    p.add_argument("--duration", type=float, default=120.0, help="bound of the whole run, seconds")
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    if a.conns < 1 or a.concurrency < 1 or a.retries < 0:
        raise SystemExit("holdgen: --conns and --concurrency must be >= 1, --retries >= 0")
    gc.disable()  # nothing cyclic is allocated per connection; the run is bounded
    run(a)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(f"holdgen: {exc}") from None
