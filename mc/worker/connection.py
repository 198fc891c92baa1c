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
        "partial",
        "done",
        "last_seen",
        "close_timeout",
        "_sender",
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
        #: out[0] is the unsent tail of a frame whose start is already on the wire
        self.partial = False
        self.closing = False
        self.done = False
        self.last_seen = trio.current_time()
        self.close_timeout = close_timeout
        self._sender: dict[str, str] | None = None

    @property
    def sender(self) -> dict[str, str]:
        """The ``from`` of this app's messages, built on its first publish (memory)."""
        sender = self._sender
        if sender is None:
            sender = self._sender = {"client": self.client, "device": self.device}
        return sender

    # ------------------------------------------------------------- writing

    def write(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; overflow closes with 4029."""
        if self.closing:
            return
        size = self.out_bytes + len(frame)
        io = self.io
        if self.queued >= io.max_frames or size > io.max_bytes:
            # Drop what is queued, except the tail of a frame already partly
            # sent: cutting it would corrupt the stream (and swallow the close).
            if self.partial:
                del self.out[1:]
                self.queued = 1
                self.out_bytes = len(self.out[0])
            else:
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
            self.partial = False
            return
        self.out_bytes -= sent
        i = 0
        while sent >= len(out[i]):
            sent -= len(out[i])
            i += 1
        del out[:i]
        if sent:
            out[0] = out[0][sent:]
            self.partial = True
        elif i:
            self.partial = False
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
        self.partial = False
        self.closing = True
        self._stop_reading()

    def _stop_reading(self) -> None:
        """End ``run``: it exits at its next check, or now if it waits for data.

        No cancel scope per connection (memory): a reader parked in
        ``wait_readable`` is woken with ClosedResourceError by notify_closing.
        """
        if not self.done:
            self.done = True
            if self.sock.fileno() != -1:
                trio.lowlevel.notify_closing(self.sock)

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
        # the reply must come within close_timeout, else the flusher ends run()
        self.io.expire_at(self, trio.current_time() + self.close_timeout)

    # ------------------------------------------------------------- reading

    async def run(self, trailing: bytes) -> None:
        """Read and dispatch until the close handshake ends or the socket fails."""
        if trailing:
            self.receive(trailing)
        sock = self.sock
        try:
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
        except trio.ClosedResourceError:  # _stop_reading: lost, or the close timed out
            pass

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
        io = self.io
        if io.pending_few():
            io.flush_now()

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

