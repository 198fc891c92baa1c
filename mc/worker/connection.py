"""One client connection after the handshake: reading, bounded writing, closing.

The worker owns the socket (ARCHITECTURE.md "Hot path"): frames are parsed by
mc.websocket.FrameParser and outbound frames are complete pre-encoded bytes
appended to a per-connection list that the Flusher writes in batches.

Limits: at most ``max_queued_frames`` frames and ``max_queued_bytes`` bytes
wait for one connection; past that the queue is dropped and the connection
closed with 4029 (slow consumer), without ever blocking the sender or other
recipients. A close waits ``close_timeout`` for the client's reply.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import trio

from mc.protocol import CloseCode, Codec
from mc.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    WebSocketError,
    encode_close,
    encode_frame,
)

from .peer import Peer
from .prepared import frame_bytes

if TYPE_CHECKING:
    import socket

    from .flusher import Flusher

log = logging.getLogger("mc.worker")

RECV_SIZE = 65536


class Connection(Peer):
    __slots__ = (
        "sock",
        "codec",
        "parser",
        "io",
        "on_message",
        "out",
        "out_bytes",
        "dirty",
        "blocked",
        "closing",
        "done",
        "scope",
        "last_seen",
        "close_timeout",
        "sender",
    )

    def __init__(
        self,
        sock: "socket.socket",
        kind: str,
        codec: Codec,
        io: "Flusher",
        *,
        max_message: int,
        close_timeout: float,
        **identity: Any,
    ) -> None:
        super().__init__(kind, **identity)
        self.sock = sock
        self.codec = codec
        self.parser = FrameParser(max_message)
        self.io = io
        self.on_message: Callable[[Connection, bytes], None] = _ignore
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.dirty = False
        self.blocked = False
        self.closing = False
        self.done = False
        self.scope: trio.CancelScope | None = None
        self.last_seen = trio.current_time()
        self.close_timeout = close_timeout
        self.sender = {"client": self.client, "device": self.device}

    # ------------------------------------------------------------- writing

    def write(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; overflow closes with 4029."""
        if self.closing:
            return
        size = self.out_bytes + len(frame)
        io = self.io
        if self.queued >= io.max_frames or size > io.max_bytes:
            self.out.clear()
            self.queued = 0
            self.out_bytes = 0
            self.close(CloseCode.SLOW, "outbound queue overflow")
            return
        self.out.append(frame)
        self.queued += 1
        self.out_bytes = size
        if not self.dirty:
            self.dirty = True
            io.mark(self)

    def send(self, frame: Any) -> None:
        """Encode and queue one protocol frame (an attrs frame or a map)."""
        obj = frame if type(frame) is dict else frame.to_wire()
        self.write(frame_bytes(self.codec, obj))

    def flush(self) -> None:
        """Write what is queued without blocking; hand leftovers to a drain task."""
        self.dirty = False
        if self.blocked or not self.out:
            return
        self._send_some()
        if self.out and self.io.nursery is not None:
            self.blocked = True
            self.io.nursery.start_soon(self._drain)

    def _send_some(self) -> None:
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        if sent == len(data):
            out.clear()
            self.queued = 0
            self.out_bytes = 0
            return
        self.out_bytes -= sent
        i = 0
        while sent >= len(out[i]):
            sent -= len(out[i])
            i += 1
        del out[:i]
        if sent:
            out[0] = out[0][sent:]
        self.queued = len(out)

    async def _drain(self) -> None:
        try:
            while self.out:
                await trio.lowlevel.wait_writable(self.sock)
                self._send_some()
        except (trio.ClosedResourceError, OSError):
            self._lost()
        finally:
            self.blocked = False

    def _lost(self) -> None:
        """The socket failed: stop reading, nothing more can be written."""
        self.out.clear()
        self.queued = 0
        self.out_bytes = 0
        self.closing = True
        if self.scope is not None:
            self.scope.cancel()

    # ------------------------------------------------------------- closing

    def close(self, code: int, reason: str = "") -> None:
        """Start the close handshake; the socket drops after the reply or a timeout."""
        if self.closing:
            return
        self.out.append(encode_close(code, reason[:120]))
        self.queued += 1
        self.closing = True
        if not self.dirty:
            self.dirty = True
            self.io.mark(self)
        if self.scope is not None:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + self.close_timeout)

    # ------------------------------------------------------------- reading

    async def run(self, trailing: bytes) -> None:
        """Read and dispatch until the close handshake ends or the socket fails."""
        with trio.CancelScope() as self.scope:
            if self.closing:  # closed before the loop began (e.g. replaced at once)
                self.scope.deadline = trio.current_time() + self.close_timeout
            if trailing:
                self.receive(trailing)
            sock = self.sock
            while not self.done:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.receive(data)

    def receive(self, data: bytes) -> None:
        """Feed bytes from the socket; dispatch complete messages in order."""
        self.last_seen = trio.current_time()
        try:
            events = self.parser.feed(data)
        except WebSocketError as exc:
            self._dispatch(exc.events)
            self.close(exc.close_code, exc.reason)
            self.done = True
            return
        self._dispatch(events)

    def _dispatch(self, events: list[tuple[int, Any]]) -> None:
        on_message = self.on_message
        for op, payload in events:
            if op == OP_TEXT or op == OP_BINARY:
                if not self.closing:
                    on_message(self, payload)
            elif op == OP_PING:
                self.write(encode_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                if self.closing:  # the reply to our close
                    self.done = True
                else:
                    code = payload[0] or CloseCode.NORMAL
                    self.close(code if code >= 3000 or code in (1000, 1001) else 1000)
                    self.done = True
            # OP_PONG: any frame counts as activity, nothing else to do

    def final_flush(self) -> None:
        """Best-effort last write (e.g. the close frame) before the socket closes."""
        if self.out and not self.blocked:
            self._send_some()


def _ignore(conn: Connection, payload: bytes) -> None:
    return None
