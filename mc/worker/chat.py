"""Chat rooms hosted on this worker: membership, sequence numbers, linger.

Pure (time comes in as ``now``). A room's members are client ids; a client
may be in a room from several devices, each its own connection, and is a
member while any of them is. ``joined``/``left`` are sent when a client
becomes or stops being a member, not per device.
"""

from __future__ import annotations

from collections.abc import Iterator

from .peer import Peer

#: A room of at most this many connections keeps each sender's list of the others
#: (at most n * (n - 1) references, ~2 KiB); a bigger room makes the list per message,
#: where the fan-out's n - 1 writes cost far more than making it.
CACHED_OTHERS = 16


class RoomFull(Exception):
    """The room already holds ``max_members`` connections (handshake 409)."""


class ChatRoom:
    """One session: its connections, the next ``seq`` and when it emptied."""

    __slots__ = ("session", "seq", "empty_since", "_conns", "_others")

    def __init__(self, session: str, now: float) -> None:
        self.session = session
        self.seq = 0
        self.empty_since: float | None = now
        self._conns: dict[str, dict[str, Peer]] = {}  # client -> device -> peer
        # sender -> everyone else (small rooms), made on a member's first send and
        # dropped on any join or leave: read once per message, membership rarely changes
        self._others: dict[Peer, list[Peer]] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._conns.values())

    def members(self) -> list[str]:
        return list(self._conns)

    def peers(self) -> Iterator[Peer]:
        for devices in self._conns.values():
            yield from devices.values()

    def holds(self, client: str, device: str) -> bool:
        return device in self._conns.get(client, {})

    def others(self, sender: Peer) -> list[Peer]:
        """Every connection but the sender's (its other devices included); do not modify it."""
        others = self._others.get(sender)
        if others is None:
            others = [p for p in self.peers() if p is not sender]
            if len(others) < CACHED_OTHERS:
                self._others[sender] = others
        return others

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def add(self, peer: Peer) -> tuple[bool, Peer | None]:
        """Add a connection: (is the client new to the room, the peer it replaces)."""
        devices = self._conns.setdefault(peer.client, {})
        new_client = not devices
        old = devices.get(peer.device)
        devices[peer.device] = peer
        peer.room = self
        self._others = {}
        self.empty_since = None
        if old is not None:
            old.room = None
        return new_client, old

    def remove(self, peer: Peer, now: float) -> bool:
        """Remove a connection; True if its client is no longer a member."""
        devices = self._conns.get(peer.client)
        if devices is None or devices.get(peer.device) is not peer:
            return False
        del devices[peer.device]
        peer.room = None
        self._others = {}
        if devices:
            return False
        del self._conns[peer.client]
        if not self._conns:
            self.empty_since = now
        return True


class Rooms:
    """The rooms this worker owns, the member limit and the linger."""

    def __init__(self, *, max_members: int = 1000, linger: float = 30.0) -> None:
        self.max_members = max_members
        self.linger = linger
        self._rooms: dict[str, ChatRoom] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, session: str) -> bool:
        return session in self._rooms

    def get(self, session: str) -> ChatRoom | None:
        return self._rooms.get(session)

    def all(self) -> list[ChatRoom]:
        return list(self._rooms.values())

    def sessions(self) -> dict[str, int]:
        """session -> member count (for reports to the master)."""
        return {s: len(r.members()) for s, r in self._rooms.items()}

    def open(self, session: str, now: float) -> ChatRoom:
        """The room for ``session``, created empty (lingering) if absent."""
        room = self._rooms.get(session)
        if room is None:
            room = self._rooms[session] = ChatRoom(session, now)
        return room

    def join(self, session: str, peer: Peer, now: float) -> tuple[ChatRoom, bool, Peer | None]:
        """Add a connection, enforcing the limit; see ChatRoom.add for the result.

        A connection replacing the same (client, device) never counts as extra.
        """
        room = self.open(session, now)
        if len(room) >= self.max_members and not room.holds(peer.client, peer.device):
            raise RoomFull(self.max_members)
        new_client, old = room.add(peer)
        return room, new_client, old

    def expire(self, now: float) -> list[str]:
        """End rooms empty for the linger time; returns their sessions."""
        ended = [
            s for s, r in self._rooms.items()
            if r.empty_since is not None and now - r.empty_since >= self.linger
        ]
        for s in ended:
            del self._rooms[s]
        return ended

    def drop(self, session: str) -> ChatRoom | None:
        """Forget a room at once (its owner changed or the worker is leaving)."""
        return self._rooms.pop(session, None)
