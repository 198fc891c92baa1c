"""Requests awaiting their reply, matched by ``id`` (PROTOCOL.md "Frames").

One table per open connection: the reader task resolves an entry when the
``ack`` or ``error`` with its id arrives, and a lost connection fails every
entry at once (a request may or may not have been acted on; delivery is
at-most-once, so it is not silently resent). The number of entries is
bounded by the caller (``Options.max_pending``).
"""

from __future__ import annotations

import itertools
import secrets

import trio

from mc.protocol import Ack, Error

from .errors import McError


class Slot:
    """One request's place in the table: its reply, once it comes."""

    __slots__ = ("_done", "_ack", "_error")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._ack: Ack | None = None
        self._error: McError | None = None

    def settle(self, ack: Ack | None, error: McError | None) -> None:
        if not self._done.is_set():
            self._ack, self._error = ack, error
            self._done.set()

    async def wait(self) -> Ack:
        """The ``ack``; an ``error`` reply (or a lost connection) raises McError."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._ack is not None
        return self._ack


class Pending:
    """Request id -> Slot for one connection."""

    def __init__(self) -> None:
        self._slots: dict[str, Slot] = {}
        self._ids = itertools.count(1)
        # A consumer's notify id becomes the id apps see (PROTOCOL.md), so ids
        # must not repeat across connections: a random prefix per table.
        self._prefix = secrets.token_hex(4)

    def __len__(self) -> int:
        return len(self._slots)

    def add(self) -> tuple[str, Slot]:
        """A fresh id and the slot its reply will land in."""
        rid = f"{self._prefix}-{next(self._ids)}"
        slot = self._slots[rid] = Slot()
        return rid, slot

    def discard(self, rid: str) -> None:
        self._slots.pop(rid, None)

    def resolve(self, frame: Ack | Error) -> bool:
        """Hand a reply to its request; False when no request has that id."""
        slot = self._slots.pop(frame.id, None) if frame.id is not None else None
        if slot is None:
            return False
        if isinstance(frame, Ack):
            slot.settle(frame, None)
        else:
            slot.settle(None, McError.from_frame(frame.code, frame.reason))
        return True

    def fail_all(self, error: McError) -> None:
        """The connection is gone: every waiting request gets ``error``."""
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.settle(None, error)
