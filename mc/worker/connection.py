"""One client connection as the shell sees it: the core's Peer plus a socket and a queue.

Outbound frames are complete pre-encoded bytes appended to ``out``; the
Flusher (mc/worker/flusher.py) writes them in batches. Nothing here decides
anything: reading is the server's loop, state belongs to the core.
"""

from __future__ import annotations

import socket
from typing import Any

from .peer import Peer


class Connection(Peer):
    __slots__ = ("sock", "out", "out_bytes", "dirty", "blocked", "partial")

    def __init__(self, sock: socket.socket, kind: str, **fields: Any) -> None:
        super().__init__(kind, **fields)
        self.sock = sock
        self.out: list[bytes] = []
        self.out_bytes = 0
        #: queued for the flusher's next pass
        self.dirty = False
        #: the socket buffer is full: a drain task owns the writing
        self.blocked = False
        #: out[0] is the unsent tail of a frame whose start is already on the wire
        self.partial = False
