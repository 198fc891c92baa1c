"""A logical connection that outlives reconnects (PROTOCOL.md "Closing").

A :class:`Link` connects (following ``307``), reads the ``welcome``, lets its
owner restore state (``on_open``: a consumer re-subscribes), and then serves
requests until the connection ends. What happens next depends on why:

* close codes 1000, 1002, 1007, 1009, 4000, 4001, 4009 and refused
  handshakes (400, 401, 404, 409) stop the link for good: ``failure`` is set
  and every request and the owner's event iterator raise it;
* anything else (4008, 4029, 4503, a dead worker, a refused TCP connect, a
  ``503``) is retried after the :class:`Backoff` delay, asking ``url()``
  again each time, so apps and chats go back through the master and may
  land on another worker. A connection that was up and ended by something
  the client did not cause (4503, 1001, 1006 or a lost socket: a draining
  or dead worker) is retried at once the first time (:class:`Retries`).

A redirect to a host no master named is not followed with the credential
(mc.client.trust): that attempt counts as failed and the link goes back
through the master; after ``untrusted_limit`` such attempts in a row it stops
with ``forbidden`` (a consumer's links keep retrying instead: one bad worker
must not stop a consumer that is on every other worker).

Requests made while reconnecting wait for the next connection (within
``Options.timeout``); requests in flight when a connection drops fail with a
temporary McError instead of being resent, because they may already have
been delivered (delivery is at-most-once).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio
from trio_websocket import ConnectionClosed, DisconnectionTimeout, HandshakeError

from mc.protocol import Ack, Codec, Error, Ping, Pong, ProtocolError, Welcome
from mc.protocol.errors import CloseCode

from .backoff import Retries
from .errors import McError
from .options import Options
from .transport import Conn, open_following
from .trust import UNTRUSTED_LIMIT, Trust, UntrustedRedirect, given_up

log = logging.getLogger("mc.client")

OnOpen = Callable[[Conn, Welcome], Awaitable[None]]


def _always() -> bool:
    return True


def _nothing() -> None:
    return None


def _network_error(exc: BaseException) -> McError:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(cause or exc).__name__
    return McError.unavailable(f"cannot connect: {text}")


class Link:
    """One logical connection; ``run()`` it in a nursery, ``request()`` through it.

    ``url`` is called before every attempt; ``keep_trying`` is asked before
    each retry (a consumer stops retrying a worker that left the cluster);
    ``on_frame`` gets every event frame (not acks, errors, pings or pongs);
    ``on_state`` is called whenever the link goes up or down.
    """

    def __init__(
        self,
        url: Callable[[], str],
        codec: Codec,
        options: Options,
        *,
        on_frame: Callable[[Any], None],
        on_open: OnOpen | None = None,
        on_state: Callable[[], None] = _nothing,
        keep_trying: Callable[[], bool] = _always,
        headers: Callable[[], Awaitable[list[tuple[bytes, bytes]] | None]] | None = None,
        trust: Trust | None = None,
        untrusted_limit: int | None = UNTRUSTED_LIMIT,
        name: str = "connection",
    ) -> None:
        self.options = options
        self.name = name
        self._url = url
        self._codec = codec
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_state = on_state
        self._keep_trying = keep_trying
        self._headers = headers
        self._trust = trust
        self._untrusted_limit = untrusted_limit
        #: the open connection, also while ``on_open`` restores state
        self.conn: Conn | None = None
        #: the last ``welcome`` (which worker, members of a chat...)
        self.welcome: Welcome | None = None
        #: why the link stopped for good, if it did
        self.failure: McError | None = None
        #: why the last attempt or connection ended (for messages)
        self.last_error: McError | None = None
        #: True once ``run`` has returned
        self.finished = False
        self._live: Conn | None = None
        self._up_at: float | None = None  # when the current connection went live
        self._changed = trio.Event()
        self._closing = False
        self._scope = trio.CancelScope()
        self._slots = trio.Semaphore(options.max_pending)

    @property
    def live(self) -> Conn | None:
        """The connection requests go to: open and restored, else None."""
        return self._live

    # ----------------------------------------------------------- waiting

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._on_state()

    async def wait_up(self) -> Conn:
        """The live connection, waiting for one; raises ``failure`` if stopped."""
        while True:
            if self._live is not None:
                return self._live
            if self.failure is not None:
                raise self.failure
            if self.finished:
                raise McError.unavailable(f"{self.name} is closed")
            await self._changed.wait()

    async def wait_tried(self) -> None:
        """Until the first attempt is over (up, or retrying); raises ``failure``."""
        while self._live is None and self.last_error is None and not self.finished:
            await self._changed.wait()
        if self.failure is not None:
            raise self.failure

    async def ready(self) -> None:
        """The first connection, within ``connect_timeout``; McError otherwise."""
        timeout = self.options.connect_timeout
        with trio.move_on_after(timeout):
            await self.wait_up()
            return
        why = f": {self.last_error.reason}" if self.last_error else ""
        raise McError.unavailable(f"{self.name}: no connection within {timeout} s{why}")

    async def request(self, frame: Any, conn: Conn | None = None) -> Ack:
        """Send ``frame`` with an id and return its ``ack``, within ``Options.timeout``.

        Goes to the live connection (waiting for one), or to ``conn`` when
        given: a consumer changing its subscriptions also tells connections
        that are still restoring them.
        """
        timeout = self.options.timeout
        with trio.move_on_after(timeout):
            async with self._slots:
                return await (conn or await self.wait_up()).request(frame)
        raise McError.unavailable(f"no reply to {frame.TYPE} within {timeout} s")

    # ----------------------------------------------------------- closing

    async def aclose(self) -> None:
        """Close with 1000 (within ``close_timeout``) and stop reconnecting."""
        self._closing = True
        conn = self.conn
        if conn is not None:
            with trio.move_on_after(self.options.close_timeout):
                await conn.ws.aclose(CloseCode.NORMAL)
        self._scope.cancel()

    def cancel(self) -> None:
        """Stop at once (the worker is gone: there is nobody to say goodbye to)."""
        self._closing = True
        self._scope.cancel()

    # ----------------------------------------------------------- running

    async def run(self) -> None:
        """Connect, serve and reconnect until closed, cancelled or stopped for good."""
        retries = Retries(self.options.backoff)
        untrusted = 0  # attempts in a row that a redirect took to a host no master named
        with self._scope:
            try:
                while True:
                    self._up_at = None
                    ended = await self._attempt()
                    if self._closing:
                        return
                    untrusted = untrusted + 1 if isinstance(ended, UntrustedRedirect) else 0
                    if untrusted:
                        log.warning("%s: %s", self.name, ended.reason)
                        if self._untrusted_limit is not None and untrusted >= self._untrusted_limit:
                            ended = given_up(ended, untrusted)
                    self.last_error = ended
                    if not ended.temporary:
                        if self.welcome is not None:  # else __aenter__ raises it anyway
                            log.warning("%s: %s; not reconnecting", self.name, ended.reason)
                        self.failure = ended
                        return
                    if not self._keep_trying():
                        return
                    lived = None if self._up_at is None else trio.current_time() - self._up_at
                    delay = retries.after(lived=lived, close_code=ended.close_code,
                                          retry_after=ended.retry_after)
                    log.info("%s: %s; reconnecting %s", self.name, ended.reason,
                             f"in {delay:.2f} s" if delay else "now")
                    self._changed_now()
                    await trio.sleep(delay)
            finally:
                self.finished = True
                self._changed_now()

    async def _attempt(self) -> McError:
        """One connection from handshake to close; returns why it ended."""
        try:
            async with AsyncExitStack() as stack:
                headers = None if self._headers is None else await self._headers()
                ws = await open_following(stack, self._url(), self._codec, self.options, headers,
                                          self._trust)
                return await self._serve(Conn(ws, self._codec, self.options))
        except McError as exc:
            return exc
        except (HandshakeError, DisconnectionTimeout, OSError) as exc:
            return _network_error(exc)

    async def _serve(self, conn: Conn) -> McError:
        """Welcome, restore (``on_open``), then serve until the connection ends."""
        welcome = await self._welcome(conn)
        if isinstance(welcome, McError):
            return welcome
        self.welcome, self.conn = welcome, conn
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, conn, nursery.cancel_scope)
                try:
                    if self._on_open is not None:
                        await self._on_open(conn, welcome)
                except McError as exc:
                    conn.ended = conn.ended or exc
                    nursery.cancel_scope.cancel()
                else:
                    self._live = conn
                    self._up_at = trio.current_time()
                    self._changed_now()
                    await trio.sleep_forever()
        finally:
            self._live = self.conn = None
            conn.ended = conn.ended or McError.unavailable("connection lost")
            conn.pending.fail_all(conn.ended)
        return conn.ended

    async def _welcome(self, conn: Conn) -> Welcome | McError:
        """The first frame, which must be ``welcome``."""
        timeout = self.options.connect_timeout
        with trio.move_on_after(timeout):
            try:
                frame = conn.decode(await conn.ws.get_message())
            except ConnectionClosed as exc:
                return McError.from_closed(exc)
            except ProtocolError as exc:
                return McError(exc.code, f"undecodable first frame: {exc.reason}")
            if isinstance(frame, Welcome):
                return frame
            if isinstance(frame, Error):
                return McError.from_frame(frame.code, frame.reason)
            return McError("bad_request", f"expected a welcome frame, got {frame.TYPE!r}")
        return McError.unavailable(f"no welcome frame within {timeout} s")

    async def _read(self, conn: Conn, scope: trio.CancelScope) -> None:
        """Dispatch every frame until the connection closes, then end ``_serve``."""
        try:
            while True:
                message = await conn.ws.get_message()
                try:
                    frame = conn.decode(message)
                except ProtocolError as exc:
                    log.warning("%s: skipping a frame: %s", self.name, exc.reason)
                    continue
                await self._dispatch(conn, frame)
        except ConnectionClosed as exc:
            conn.ended = McError.from_closed(exc)
        scope.cancel()

    async def _dispatch(self, conn: Conn, frame: Any) -> None:
        if isinstance(frame, (Ack, Error)):
            if not conn.pending.resolve(frame) and isinstance(frame, Error):
                log.warning("%s: server error %s: %s", self.name, frame.code, frame.reason)
        elif isinstance(frame, Ping):
            try:
                await conn.send(Pong(frame.id))
            except McError:
                pass  # closing: the reader sees it next
        elif not isinstance(frame, (Pong, Welcome)):
            self._on_frame(frame)
