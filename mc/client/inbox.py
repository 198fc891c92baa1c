"""The bounded buffer between a connection's reader task and the user.

Policy when the user does not keep up: the OLDEST buffered event is dropped
and counted (``dropped``), never the connection's reader blocked. Blocking
the reader instead would also hold back the ``ack`` frames on the same
connection, so a user who publishes from inside the loop that reads events
would wait on itself. Dropping matches the protocol's at-most-once delivery;
a consumer that must not lose messages keeps up or raises ``buffer``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TypeVar

import trio

from .errors import McError

T = TypeVar("T")

log = logging.getLogger("mc.client")


class Inbox(AsyncIterator[T]):
    """A drop-oldest queue of events; ``async for`` reads it.

    Iteration ends when the owner closes normally, and raises McError when
    the connection failed for good (after the events already received).
    """

    def __init__(self, size: int, what: str = "events") -> None:
        self._send, self._recv = trio.open_memory_channel[T](size)
        self._size = size
        self._what = what
        self._error: McError | None = None
        #: events thrown away because the buffer was full
        self.dropped = 0

    def put(self, item: T) -> None:
        """Buffer ``item`` without blocking, evicting the oldest when full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._recv.receive_nowait()
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: log, but not every time
                log.warning("%s buffer full (%d): dropped %d oldest so far; read faster or raise buffer=",
                            self._what, self._size, self.dropped)
            self._send.send_nowait(item)
        except trio.ClosedResourceError:
            pass

    def close(self, error: McError | None = None) -> None:
        """No more events; readers get the buffered ones, then ``error`` or the end."""
        if self._error is None:
            self._error = error
        self._send.close()

    async def get(self) -> T:
        """The next event; raises McError after a failure, trio.EndOfChannel after a close."""
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise

    def __aiter__(self) -> Inbox[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
