"""What apps and chats share: one connection through the master, one event inbox.

Every (re)connection starts at the master's WebSocket entry point, which
sends the client (``307``) to a live worker, or, for a chat, to the worker
that owns the session; so after a worker dies the client lands on a
survivor without knowing any worker address.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

import trio

from mc.protocol import Ack, ProtocolError, Refresh, Welcome

from .errors import McError
from .inbox import Inbox
from .link import Link
from .options import Options
from .owner import Owner
from .tokens import TokenSource
from .transport import Conn, checked, codec_named
from .trust import Trust
from .urls import endpoint, split_masters

E = TypeVar("E")

log = logging.getLogger("mc.client")
#: never renew more often than this (a provider that hands out expired tokens)
MIN_RENEW = 0.5


def identity(parse: Any, *args: Any) -> Any:
    """Validate a handshake identity with the server's own rules (mc.protocol.identity)."""
    try:
        return parse(*args, {})
    except ProtocolError as exc:
        raise McError.from_protocol(exc) from None


def tags_query(tags: Any) -> str | None:
    if isinstance(tags, str):
        raise McError("bad_request", "tags must be a list of names, not a string")
    return ",".join(tags) or None


class Endpoint(Owner, Generic[E]):
    """An SDK object on one master-routed endpoint: a Link and an Inbox of ``E``."""

    def __init__(
        self, url: str, path: str, query: Mapping[str, str | None], *, token: TokenSource,
        codec: str, options: Options, what: str, name: str, table: Mapping[str, Any],
    ) -> None:
        self._options = options
        self._table = table
        # several masters (a comma list): stay on one while it works, the next after a failed attempt
        masters = split_masters(url)
        self._entries = [endpoint(u, path, query) for u in masters]
        self._entry = self._entries[0]
        self._at = 0
        self._tried = False
        self._welcomed = False
        self._inbox: Inbox[E] = Inbox(options.buffer, what)
        self._link = Link(
            self._entry_url, codec_named(codec), options, on_frame=self._on_frame,
            on_open=self._welcomed_then, headers=token.headers, trust=Trust.of(masters), name=name,
        )
        self._token = token

    # ------------------------------------------------------------- hooks

    def _entry_url(self) -> str:
        """Where the next (re)connection starts: the master's entry point."""
        return self._pick(self._entries)

    def _pick(self, entries: list[str]) -> str:
        """The same master as last time, unless that attempt never got a welcome: then the next."""
        if self._tried and not self._welcomed:
            self._at += 1
        self._tried, self._welcomed = True, False
        return entries[self._at % len(entries)]

    async def _welcomed_then(self, conn: Conn, welcome: Welcome) -> None:
        self._welcomed = True
        await self._on_open(conn, welcome)

    def _on_frame(self, frame: Any) -> None:
        raise NotImplementedError

    async def _on_open(self, conn: Conn, welcome: Welcome) -> None:
        return None

    # --------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        self._nursery.start_soon(self._run)
        if self._token.renews:
            self._nursery.start_soon(self._renew)
        await self._link.ready()

    async def _renew(self) -> None:
        """Before the token expires, get a new one and hand it to the open connection
        (``refresh``); while disconnected the next connection simply uses it."""
        while True:
            delay = self._token.renew_in()
            if delay == float("inf"):  # no token yet (still connecting), or one without exp
                await trio.sleep(MIN_RENEW)
                continue
            await trio.sleep(max(MIN_RENEW, delay))
            token = await self._token.renew()
            if self._link.live:
                try:
                    await self._request(Refresh(token))
                except McError as exc:
                    log.warning("%s: token refresh refused: %s", self._link.name, exc)

    async def _run(self) -> None:
        try:
            await self._link.run()
        finally:
            self._inbox.close(self._link.failure)

    async def _stop(self) -> None:
        self._inbox.close()
        await self._link.aclose()

    async def _request(self, frame: Any) -> Ack:
        return await self._link.request(checked(frame, self._table))

    # ------------------------------------------------------------ public

    @property
    def worker(self) -> str | None:
        """The id of the worker currently connected to, or None while reconnecting."""
        return self._link.welcome.worker if self._link.live and self._link.welcome else None

    @property
    def dropped(self) -> int:
        """Events discarded because the buffer was full (the oldest go first)."""
        return self._inbox.dropped

    async def receive(self) -> E:
        """The next event (waits); McError if the connection failed for good."""
        return await self._inbox.get()

    def __aiter__(self) -> AsyncIterator[E]:
        return self._inbox
