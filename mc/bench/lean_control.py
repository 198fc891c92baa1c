"""A lean ``/v1/control`` endpoint, for comparison only: ``python -m mc.bench.lean_control --port P``.

Not a product and not used by mc: it answers the question "how fast could
the master's control link be?" for ``mc bench master``. It serves register,
heartbeat, claim and lookup with the master's own :class:`Registry` (the same
calls and checks as mc/master/control.py), but moves bytes like a worker
does: mc.websocket's handshake and frame parser, the worker's Connection
(one reader task per link, several frames per recv) and Flusher (all the
replies queued in one pass leave in one ``send``), instead of Hypercorn +
Starlette (one wsproto event, one ASGI message and one ``send`` per reply).
"""

from __future__ import annotations

import argparse
import functools
import socket
from typing import Any

import orjson
import trio

from mc.master.registry import Metrics, Registry, UnknownWorker
from mc.protocol import JSON, MSGPACK, is_name
from mc.runner import until_signalled
from mc.websocket import HandshakeError, HandshakeReader, accept_response, reject_response
from mc.worker.connection import RECV_SIZE, Connection
from mc.worker.flusher import Flusher
from mc.worker.prepared import frame_bytes


class Link:
    """One fake-or-real worker's control connection."""

    def __init__(self, registry: Registry, conn: Connection) -> None:
        self.registry = registry
        self.conn = conn
        self.worker: str | None = None

    def __call__(self, conn: Connection, payload: bytes) -> None:
        binary = payload[:1] != b"{"
        codec = MSGPACK if binary else JSON
        msg = codec.decode(payload)
        if type(msg) is not dict:
            conn.close(4000, "a control message must be a map")
            return
        kind = msg.get("type")
        reg = self.registry
        now = trio.current_time()
        if kind in ("claim", "lookup") and self.worker is not None:
            session = msg.get("session")
            if type(session) is not str or not is_name(session):
                conn.close(4000, "bad session")
                return
            if kind == "claim":
                try:
                    owner: str | None = reg.claim_session(session, self.worker, now=now)
                except UnknownWorker:
                    owner = None
            else:
                info = reg.lookup_session(session)
                owner = None if info is None else info.worker_id
            url = None
            if owner is not None:
                w = reg.worker(owner)
                url = None if w is None else w.url
            conn.write(frame_bytes(codec, {"type": "owner", "id": msg.get("id"), "worker": owner, "url": url}))
        elif kind == "heartbeat" and self.worker is not None:
            if not reg.heartbeat(self.worker, Metrics(**(msg.get("metrics") or {})), now=now):
                conn.write(frame_bytes(codec, {"type": "reregister"}))
        elif kind == "register":
            wid, url = msg.get("worker"), msg.get("url")
            if type(wid) is not str or not is_name(wid) or type(url) is not str:
                conn.close(4000, "bad register message")
                return
            reg.register(wid, url, capacity=int(msg.get("capacity") or 1), now=now)
            self.worker = wid
            conn.write(frame_bytes(codec, {"type": "registered", "lease": 5.0, "interval": 0.5,
                                           "conflicts": []}))
        else:
            conn.close(4000, f"unexpected control message {kind!r}")


async def handle(sock: socket.socket, registry: Registry, flusher: Flusher) -> None:
    reader = HandshakeReader()
    try:
        with trio.move_on_after(10):
            request = None
            while request is None:
                await trio.lowlevel.wait_readable(sock)
                data = sock.recv(RECV_SIZE)
                if not data:
                    return
                try:
                    request = reader.feed(data)
                except HandshakeError as exc:
                    sock.send(reject_response(exc.status, orjson.dumps({"error": exc.reason})))
                    return
        if request is None:
            return
        if request.path == "/healthz":
            sock.send(reject_response(200, b"{}", (("Content-Type", "application/json"),)))
            return
        sock.send(accept_response(request, None))
        conn = Connection(sock, "control", MSGPACK, flusher, max_message=1 << 20, close_timeout=1.0,
                          name="control")
        conn.on_message = Link(registry, conn)
        try:
            await conn.run(reader.trailing)
        finally:
            conn.final_flush()
    except OSError:
        pass
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def serve(port: int) -> None:
    registry = Registry(lease=5.0)
    flusher = Flusher(max_frames=1 << 20, max_bytes=256 << 20)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(flusher.run)
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(handle, sock, registry, flusher)
    finally:
        listener.close()


def main(argv: Any = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mc.bench.lean_control")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    trio.run(until_signalled, functools.partial(serve, args.port))


if __name__ == "__main__":
    main()
