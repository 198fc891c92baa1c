"""What the worker core knows about one connection.

The shell's connection class subclasses :class:`Peer`, so the core and the
hub read and write these fields directly on the live connection object: no
lookup table and no indirection on the hot path, while the core itself stays
free of I/O (its tests use bare ``Peer`` objects). The shell adds only the
socket and the outbound queue.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Protocol

from mc.identify import APP, CHAT, CONSUMER
from mc.protocol import JSON, Codec
from mc.tokens import Claims
from mc.websocket import FrameParser

from .limits import Bucket
from .states import OPEN, ConnState

__all__ = ["APP", "CHAT", "CONSUMER", "NO_SUBS", "Peer", "Room"]

#: the subscriptions of a peer that has none (shared, immutable)
NO_SUBS: Mapping[tuple[str, str | None, str], object] = MappingProxyType({})


class Room(Protocol):
    """The chat room a member is in, as its connection sees it (mc/worker/chat.py)."""

    session: str

    def next_seq(self) -> int: ...
    def others(self, sender: Peer) -> list[Peer]: ...
    def peers(self) -> Iterator[Peer]: ...
    def remove(self, peer: Peer, now: float) -> bool: ...


class Peer:
    """Identity, state, subscriptions and load of one app, consumer or chat connection.

    ``state`` follows mc/worker/states.py; only ``OPEN`` peers are routed to
    (a closing one is neither counted as delivered nor chosen for a group).
    ``queued`` is the number of frames waiting to be written; the hub picks
    the group member with the fewest ("the least busy").
    """

    __slots__ = (
        "kind", "client", "device", "tags", "name", "paused", "state", "subs", "queued", "room",
        "codec", "parser", "last_seen", "close_at", "auth", "key", "bucket", "_sender",
        "ping_slot",
    )

    def __init__(
        self,
        kind: str,
        *,
        client: str = "",
        device: str = "default",
        tags: tuple[str, ...] = (),
        name: str = "",
        codec: Codec = JSON,
        max_message: int = 65536,
        max_fragments: int = 1024,
        now: float = 0.0,
        state: ConnState = OPEN,
    ) -> None:
        self.kind = kind
        self.client = client
        self.device = device
        self.tags = tags
        self.name = name
        self.paused = False
        self.state = state
        # A consumer gets its own dict on its first subscription (Hub.subscribe);
        # apps and chat members share this empty read-only one (memory).
        self.subs: Mapping[tuple[str, str | None, str], object] = NO_SUBS
        self.queued = 0
        self.room: Room | None = None
        self.codec = codec
        self.parser = FrameParser(max_message, max_fragments=max_fragments)
        self.last_seen = now
        #: when a CLOSING connection stops waiting for the client's close reply
        self.close_at = 0.0
        #: the app's token claims (None: auth off), and its rate-limit bucket (made on first use)
        self.auth: Claims | None = None
        #: the API key a consumer presented (a reload that removes it closes the consumer with 4001)
        self.key: str | None = None
        self.bucket: Bucket | None = None
        self._sender: dict[str, str] | None = None
        #: which of the core's keep-alive scans pings this connection (WorkerCore.open)
        self.ping_slot = 0

    @property
    def sender(self) -> dict[str, str]:
        """The ``from`` of this app's messages, built on its first publish (memory)."""
        sender = self._sender
        if sender is None:
            sender = self._sender = {"client": self.client, "device": self.device}
        return sender

    def __repr__(self) -> str:
        who = self.name if self.kind == CONSUMER else f"{self.client}/{self.device}"
        return f"<{type(self).__name__} {self.kind} {who} {self.state.value}>"

