"""What the routing core knows about one connection.

The worker's connection class subclasses :class:`Peer`, so the hub reads and
writes these fields directly on the live connection object: no lookup table
and no indirection on the hot path, while the hub itself stays free of I/O
(its tests use bare ``Peer`` objects).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

APP = "app"
CONSUMER = "consumer"
CHAT = "chat"

#: the subscriptions of a peer that has none (shared, immutable)
NO_SUBS: Mapping[tuple[str, str | None, str], object] = MappingProxyType({})


class Peer:
    """Identity, subscriptions and load of one app, consumer or chat connection.

    ``queued`` is the number of frames waiting to be written; the hub picks
    the group member with the fewest ("the least busy"). ``closing`` is set
    once the connection's close has begun: nothing more can be written to it,
    so routing skips it (it is neither counted as delivered nor chosen for a
    group) until it is detached.
    """

    __slots__ = (
        "kind", "client", "device", "tags", "name", "paused", "closing", "subs", "queued", "room",
    )

    def __init__(
        self,
        kind: str,
        *,
        client: str = "",
        device: str = "default",
        tags: tuple[str, ...] = (),
        name: str = "",
    ) -> None:
        self.kind = kind
        self.client = client
        self.device = device
        self.tags = tags
        self.name = name
        self.paused = False
        self.closing = False
        # A consumer gets its own dict on its first subscription (Hub.subscribe);
        # apps and chat members share this empty read-only one (memory).
        self.subs: Mapping[tuple[str, str | None, str], object] = NO_SUBS
        self.queued = 0
        self.room: object | None = None

    def __repr__(self) -> str:
        who = self.name if self.kind == CONSUMER else f"{self.client}/{self.device}"
        return f"<{type(self).__name__} {self.kind} {who}>"
