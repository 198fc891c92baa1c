"""Hypercorn's connection task (``hypercorn.trio.tcp_server.TCPServer``) with less work per request.

Under notify load (thousands of short keep-alive requests a second) the
master's CPU went mostly to Hypercorn's and trio's per-request machinery, not
to answering. :class:`LeanTCPServer` keeps what the connection task does and
changes how, in four places:

* **The keep-alive and read timeouts are one timer, moved lazily.** Hypercorn
  spawns a timer task each time a connection falls idle (and cancels it when
  the next request comes), and enters a fresh ``fail_after(read_timeout)``
  around every read: a task, two cancel scopes and three deadline changes per
  request. Here a request only notes when the connection fell idle and when a
  read began (two floats); one task per connection sleeps until the earliest
  moment either could be due, acts on what is due and sleeps again: about one
  wake-up per timeout per connection. The same timeouts, to the same instant,
  the same close, the same early close on shutdown.
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


class Timers:
    """One connection's keep-alive and read timeouts: one task and a deadline that lags.

    As ``TrioSingleTask`` (Hypercorn's keep-alive timer) ``restart`` says the
    connection fell idle: it is closed ``keep_alive_timeout`` later unless
    ``stop`` (a request came in) is called first. ``read_started`` and
    ``read_done`` bracket each read inside :attr:`reading`, the read loop's
    cancel scope, which is cancelled when a read lasts ``read_timeout``.

    Activity writes down its time and never moves a deadline later: the task's
    deadline is at or before everything that is pending, so it may wake early;
    it then finds what is really due and sleeps to that. A deadline that comes
    during a request waits for its answer. Shutdown closes an idle connection
    at once and a busy one when its answer is out; :meth:`reading_over` ends
    the timer with the reads.
    """

    __slots__ = ("_abandoned", "_idle_again", "_idle_since", "_keep_alive", "_now", "_read",
                 "_reading_since", "_scope", "_server", "reading")

    def __init__(self, server: LeanTCPServer) -> None:
        self._server = server
        self._now = trio.lowlevel.current_clock().current_time  # trio.current_time, one call not three
        self._keep_alive = server.config.keep_alive_timeout
        self._read = server.config.read_timeout or math.inf
        self.reading = trio.CancelScope()
        self._idle_since: float | None = None  # None while a request is served
        self._reading_since: float | None = None  # None between reads
        self._scope: trio.CancelScope | None = None  # the task's sleep: it wakes at its deadline
        self._abandoned = False
        self._idle_again: trio.Event | None = None  # only while shutdown waits for an answer

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection is idle: close it ``keep_alive_timeout`` from now (``action`` is that close)."""
        now = self._now()
        self._idle_since = now
        if self._scope is None:
            self._scope = trio.CancelScope()
            task_group.spawn(self._run)
        self._arm(now + self._keep_alive)
        if self._idle_again is not None:
            self._idle_again.set()

    async def stop(self) -> None:
        """A request is being served: no keep-alive close until its answer is out."""
        self._idle_since = None

    def read_started(self) -> None:
        now = self._now()
        self._reading_since = now
        self._arm(now + self._read)

    def read_done(self) -> None:
        self._reading_since = None

    def reading_over(self) -> None:
        """No more reads (the peer closed, or a read timed out): close now if idle.

        If an answer is still being written, the timer just ends, so the
        connection's task group can: Hypercorn closes the socket when the
        answer is out, as it does without this timer.
        """
        self._reading_since = None
        if self._scope is None:
            return
        if self._idle_since is None:
            self._abandoned = True
            self._scope.cancel()
            if self._idle_again is not None:
                self._idle_again.set()
        else:
            self._idle_since = -math.inf
            self._arm(-math.inf)

    def _arm(self, due: float) -> None:
        """Wake the task by ``due``: a deadline is moved only to come sooner (rarely: see the class)."""
        scope = self._scope
        if scope is not None and due < scope.deadline:
            scope.deadline = due

    def _due(self) -> float:
        """When the next timeout would fall, from what is pending now."""
        due = math.inf
        if self._reading_since is not None:
            due = self._reading_since + self._read
        if self._idle_since is not None:
            due = min(due, self._idle_since + self._keep_alive)
        return due

    async def _run(self) -> None:
        terminated = self._server.context.terminated
        while True:
            assert self._scope is not None
            with self._scope:
                await terminated.wait()
            if self._abandoned:
                return
            if terminated.is_set():
                if self._idle_since is not None:
                    break
                self._idle_again = trio.Event()  # a request is being served: close once it is answered
                await self._idle_again.wait()
                if self._abandoned:
                    return
                break
            now = self._now()
            if self._reading_since is not None and now >= self._reading_since + self._read:
                self._reading_since = None
                self.reading.cancel()  # the read loop ends; reading_over() follows
            if self._idle_since is not None and now >= self._idle_since + self._keep_alive:
                break
            self._scope = trio.CancelScope(deadline=self._due())
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


class LeanTCPServer(tcp_server.TCPServer):
    """Hypercorn's ``TCPServer`` with the keep-alive and read timeouts as deadlines and direct writes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._timers = Timers(self)
        self.idle_task = self._timers  # type: ignore[assignment]  # TrioSingleTask's two methods
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
        timers = self._timers
        with timers.reading:
            while True:
                timers.read_started()
                try:
                    if self._sock is None:
                        data = await self.stream.receive_some(tcp_server.MAX_RECV)
                    else:
                        data = await _receive(self._sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                timers.read_done()
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
        await self.protocol.handle(Closed())
        timers.reading_over()


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
    used = ("protocol_send", "_read_data", "_initiate_server_close", "run")
    return all(callable(getattr(server, name, None)) for name in used) and hasattr(tcp_server, "MAX_RECV")
