"""The chat SDK: one chat session (``/v1/chat/{session}``) with its member list.

A session lives on one worker, its owner; the master sends every opener
there. When the connection is lost the chat re-opens the session through
the master, which may now place it on another worker (the old owner died),
and reconciles ``members`` with the new ``welcome``: members who came or
went meanwhile are reported as Joined / Left events, so a program that
follows the events stays consistent with ``members``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, TypeAlias

from mc.protocol import CHAT_FRAMES, ChatMessage, Joined, Left, Send, Welcome
from mc.protocol.identity import parse_chat

from .backoff import Backoff
from .endpoint import Endpoint, identity, tags_query
from .options import Options
from .tokens import TokenProvider, TokenSource
from .transport import Conn
from .urls import endpoint, split_masters

ChatEvent: TypeAlias = ChatMessage | Joined | Left


class Chat(Endpoint[ChatEvent]):
    """A member's connection to a chat session; see :func:`open_chat`.

    Iterating yields :class:`~mc.protocol.ChatMessage` (others' messages;
    never your own), :class:`~mc.protocol.Joined` and
    :class:`~mc.protocol.Left`. Events wait in a buffer of ``buffer``; when
    it is full the OLDEST are dropped (counted in ``dropped``); ``members``
    stays exact either way, it is updated as events arrive, not as they are
    read.
    """

    def __init__(self, url: str, session: str, *, client: str, device: str,
                 tags: Iterable[str], mode: str, token: TokenSource, codec: str,
                 options: Options) -> None:
        query = {"client": client, "device": device, "tags": tags_query(tags), "mode": mode}
        identity(parse_chat, session, query)
        super().__init__(
            url, f"/v1/chat/{session}", query, token=token, codec=codec, options=options,
            what="chat event", name=f"chat {session} as {client}/{device}", table=CHAT_FRAMES,
        )
        self.session = session
        self.client = client
        self._members: dict[str, None] = {}  # insertion-ordered set
        self._opened = False
        # Once in, come back with mode=open: if the owner died the session is
        # forgotten, and the first member back must be able to re-create it.
        self._reopen = [endpoint(u, f"/v1/chat/{session}", {**query, "mode": "open"})
                        for u in split_masters(url)]

    def _entry_url(self) -> str:
        return self._pick(self._reopen if self._opened else self._entries)

    @property
    def members(self) -> tuple[str, ...]:
        """The client ids in the session, this one included, in order of arrival."""
        return tuple(self._members)

    async def _on_open(self, conn: Conn, welcome: Welcome) -> None:
        now = dict.fromkeys(welcome.members or (self.client,))
        if self._opened:  # a re-open: report what changed while we were away
            for client in self._members.keys() - now.keys():
                self._inbox.put(Left(client))
            for client in now.keys() - self._members.keys():
                self._inbox.put(Joined(client))
        self._members = now
        self._opened = True

    def _on_frame(self, frame: Any) -> None:
        if isinstance(frame, Joined):
            self._members[frame.client] = None
        elif isinstance(frame, Left):
            self._members.pop(frame.client, None)
        elif not isinstance(frame, ChatMessage):
            return
        self._inbox.put(frame)

    async def send(self, data: Any, *, trace: str | None = None) -> int:
        """Send ``data`` to every other member; returns its ``seq`` in the session.

        Example::

            seq = await chat.send("hi")
        """
        ack = await self._request(Send(data, trace=trace))
        return ack.seq or 0


def open_chat(
    url: str,
    session: str,
    *,
    client: str,
    device: str = "default",
    tags: Iterable[str] = (),
    mode: str = "open",
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    codec: str = "json",
    timeout: float = 10.0,
    connect_timeout: float = 10.0,
    buffer: int = 1000,
    max_pending: int = 1000,
    backoff: Backoff | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Chat:
    """Join chat ``session`` through the master at ``url`` (use with ``async with``).

    ``mode="open"`` joins or creates the session; ``mode="join"`` raises
    McError ``not_found`` when nobody has opened it. Leaving the
    ``async with`` block leaves the session (the others get ``Left``). The
    other parameters are as for :func:`connect_app`.

    Example::

        async with mc.open_chat("http://127.0.0.1:7100", "room-1", client="alice") as chat:
            print(chat.members)
            seq = await chat.send("hi")
            async for event in chat:
                if isinstance(event, mc.ChatMessage):
                    print(event.sender, event.data)
    """
    options = Options(timeout=timeout, connect_timeout=connect_timeout, buffer=buffer,
                      max_pending=max_pending, backoff=backoff or Backoff(), ssl_context=ssl_context)
    return Chat(url, session, client=client, device=device, tags=tags, mode=mode,
                token=TokenSource(token, token_provider),
                codec=codec, options=options)
