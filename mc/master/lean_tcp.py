"""Hypercorn's connection task (``hypercorn.trio.tcp_server.TCPServer``) with less work per request.

Under notify load (thousands of short keep-alive requests a second) the
master's CPU went mostly to Hypercorn's and trio's per-request machinery, not
to answering. :class:`LeanTCPServer` keeps what the connection task does and
changes how, in four places:

* **The keep-alive timer is a deadline.** Hypercorn stops the idle timer task
  when a request arrives and starts a new one when the answer is out: a task
  spawned (and one cancelled) per request. Here one timer task per connection
  waits in a cancel scope whose deadline is moved instead: ``keep_alive_timeout``
  from now when the connection falls idle, never while a request is served.
  The same timeout, the same close, the same early close on shutdown.
* **The read timeout is a deadline too.** Hypercorn enters a fresh
  ``fail_after(read_timeout)`` (a generator-based context manager and a cancel
  scope) around every read; here one scope's deadline is set before each read
  and lifted while the data is handled.
* **A read is a readiness wait and one ``read``**, without trio's stream and
  socket layers around it.
* **A write that fits goes out at once.** Hypercorn takes a lock and a shielded
  cancel scope, then trio's ``send_all``, for every write. When no other write
  is under way, the bytes go straight to the non-blocking socket; whatever the
  kernel does not take (a full buffer) and every TLS write goes the usual way.

And one fix: when reading ends (the peer closed, or a read timed out) between
requests, Hypercorn leaves the connection's task and its socket open until the
keep-alive timeout; here they are closed at once.

Bytes on the wire, timeouts and the close sequence are Hypercorn's. Used by
:func:`mc.master.hypercorn_patches.install` only if Hypercorn's connection task
still has the shape this was written for (0.16 to 0.18).
"""

from __future__ import annotations

import math
import os
from typing import Any

import trio
from hypercorn.events import Closed, RawData
from hypercorn.trio import tcp_server


class IdleTimer:
    """``TrioSingleTask``'s job for one connection's keep-alive timer, as one task and a deadline.

    ``restart`` (the connection fell idle) moves the close ``keep_alive_timeout``
    ahead, spawning the timer task the first time; ``stop`` (a request came in)
    only marks the connection busy: a deadline that comes during a request
    waits for its answer, and the next ``restart`` moves it on. Shutdown closes
    an idle connection at once, and a busy one when its answer is out.
    :meth:`reading_over` ends it with the reads.
    """

    __slots__ = ("_abandoned", "_busy", "_idle_again", "_scope", "_server")

    def __init__(self, server: LeanTCPServer) -> None:
        self._server = server
        self._scope: trio.CancelScope | None = None
        self._busy = False
        self._abandoned = False
        self._idle_again: trio.Event | None = None  # only while a deadline waits for an answer

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection is idle: close it ``keep_alive_timeout`` from now (``action`` is that close)."""
        self._busy = False
        deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if self._scope is None:
            self._scope = trio.CancelScope(deadline=deadline)
            task_group.spawn(self._run)
        else:
            self._scope.deadline = deadline
        if self._idle_again is not None:
            self._idle_again.set()

    async def stop(self) -> None:
        """A request is being served: no keep-alive close until its answer is out."""
        self._busy = True

    def reading_over(self) -> None:
        """No more reads (the peer closed, or a read timed out): close now if idle.

        If an answer is still being written, the timer just ends, so the
        connection's task group can: Hypercorn closes the socket when the
        answer is out, as it does without this timer.
        """
        if self._scope is None:
            return
        if self._busy:
            self._abandoned = True
            self._scope.cancel()
            if self._idle_again is not None:
                self._idle_again.set()
        else:
            self._scope.deadline = -math.inf

    async def _run(self) -> None:
        terminated = self._server.context.terminated
        while True:
            assert self._scope is not None
            with self._scope:
                await terminated.wait()
            if self._abandoned:
                return
            if not self._busy:  # idle to the deadline, or shutdown
                break
            # the deadline, or shutdown, came during a request: once its answer is out, restart()
            # gives the new scope its deadline
            self._scope = trio.CancelScope()
            self._idle_again = trio.Event()
            await self._idle_again.wait()
            self._idle_again = None
            if self._abandoned:
                return
            if terminated.is_set():
                break
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


class LeanTCPServer(tcp_server.TCPServer):
    """Hypercorn's ``TCPServer`` with the keep-alive and read timeouts as deadlines and direct writes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._timer = IdleTimer(self)
        self.idle_task = self._timer  # type: ignore[assignment]  # TrioSingleTask's two methods
        # a plain trio.SocketStream's socket (TLS streams have none); its fd is asked for on every
        # write: -1 once the stream is closed, never a number that now names another socket
        self._sock = self.stream.socket if type(self.stream) is trio.SocketStream else None

    async def protocol_send(self, event: Any) -> None:
        fd = self._sock.fileno() if self._sock is not None else -1
        if type(event) is RawData and fd >= 0 and not self.send_lock.locked():
            data = event.data
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                await self.protocol.handle(Closed())
                return
            if sent == len(data):
                return
            event = RawData(data=data[sent:])
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        timeout = self.config.read_timeout or math.inf
        with trio.CancelScope() as reading:
            while True:
                reading.deadline = trio.current_time() + timeout
                try:
                    if self._sock is None:
                        data = await self.stream.receive_some(tcp_server.MAX_RECV)
                    else:
                        data = await _receive(self._sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                reading.deadline = math.inf
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
        await self.protocol.handle(Closed())
        self._timer.reading_over()


async def _receive(sock: Any) -> bytes:
    """``SocketStream.receive_some`` of a plain socket: a readiness wait, then one read.

    The same bytes and errors as trio's (closed: ClosedResourceError, reset:
    BrokenResourceError) without its two context managers and its checkpoint
    sandwich per read. It waits before it reads because a keep-alive client
    sends its next request only once it has the answer to the last one: a read
    first would find nothing, once per request (a failed system call and an
    exception). The wait is the checkpoint.
    """
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, tcp_server.MAX_RECV)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise trio.BrokenResourceError(f"reading the connection: {exc}") from exc


def fits(server: Any) -> bool:
    """Whether Hypercorn's ``TCPServer`` still has what :class:`LeanTCPServer` overrides and uses."""
    return all(callable(getattr(server, name, None))
               for name in ("protocol_send", "_read_data", "_initiate_server_close", "run")) and \
        hasattr(tcp_server, "MAX_RECV")
