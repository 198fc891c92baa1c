"""Chat rooms (mc.worker.chat): membership per client, replacement, limit, seq, linger."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mc.worker.chat import ChatRoom, RoomFull, Rooms
from mc.worker.peer import CHAT, Peer


def conn(client: str, device: str = "default") -> Peer:
    return Peer(CHAT, client=client, device=device)


def test_join_and_leave() -> None:
    rooms = Rooms()
    a, b = conn("alice"), conn("bob")
    room, new, old = rooms.join("s", a, now=0.0)
    assert (new, old) == (True, None)
    assert a.room is room and room.session == "s"
    assert room.members() == ["alice"] and len(room) == 1
    assert room.empty_since is None
    room2, new, old = rooms.join("s", b, now=1.0)
    assert room2 is room and (new, old) == (True, None)
    assert room.members() == ["alice", "bob"]
    assert room.others(a) == [b] and room.others(b) == [a]
    assert set(room.peers()) == {a, b}
    assert room.holds("alice", "default") and not room.holds("alice", "phone")
    assert rooms.sessions() == {"s": 2}
    assert room.remove(a, now=2.0) is True
    assert a.room is None
    assert room.members() == ["bob"] and room.empty_since is None
    assert room.remove(a, now=2.0) is False  # already gone
    assert room.remove(b, now=3.0) is True
    assert room.members() == [] and len(room) == 0
    assert room.empty_since == 3.0
    assert "s" in rooms and len(rooms) == 1  # lingering


def test_client_with_two_devices() -> None:
    """joined/left are per client: the second device is not news, the last one leaving is."""
    rooms = Rooms()
    phone, web, bob = conn("alice", "phone"), conn("alice", "web"), conn("bob")
    room, new, _ = rooms.join("s", phone, 0.0)
    assert new is True
    _, new, old = rooms.join("s", web, 0.0)
    assert (new, old) == (False, None)
    rooms.join("s", bob, 0.0)
    assert room.members() == ["alice", "bob"]
    assert len(room) == 3
    assert rooms.sessions() == {"s": 2}  # members are clients, not connections
    # a sender's other devices receive its messages; the sender does not
    assert set(room.others(phone)) == {web, bob}
    assert room.remove(phone, 1.0) is False  # alice still here on web
    assert room.members() == ["alice", "bob"]
    assert room.remove(web, 2.0) is True  # now alice left
    assert room.members() == ["bob"]


def test_replacement_of_same_client_and_device() -> None:
    rooms = Rooms()
    first, second = conn("alice", "phone"), conn("alice", "phone")
    room, _, _ = rooms.join("s", first, 0.0)
    _, new, old = rooms.join("s", second, 1.0)
    assert new is False  # alice was already a member: no 'joined'
    assert old is first  # to be closed with 4009
    assert first.room is None and second.room is room
    assert len(room) == 1 and list(room.peers()) == [second]
    # the replaced connection closing later does not remove its successor
    assert room.remove(first, 2.0) is False
    assert room.members() == ["alice"] and room.empty_since is None
    assert room.remove(second, 3.0) is True


def test_member_limit() -> None:
    rooms = Rooms(max_members=2)
    a, b = conn("a"), conn("b")
    rooms.join("s", a, 0.0)
    rooms.join("s", b, 0.0)
    with pytest.raises(RoomFull):
        rooms.join("s", conn("c"), 0.0)
    # another device of a member is another connection: also refused
    with pytest.raises(RoomFull):
        rooms.join("s", conn("a", "web"), 0.0)
    # replacing an existing (client, device) never counts as extra
    room, new, old = rooms.join("s", conn("a"), 0.0)
    assert old is a and new is False and len(room) == 2
    # a refused join leaves the room as it was
    assert room.members() == ["a", "b"]
    # room for one more once somebody leaves; other rooms are independent
    room.remove(b, 1.0)
    rooms.join("s", conn("c"), 1.0)
    rooms.join("t", conn("x"), 1.0)
    rooms.join("t", conn("y"), 1.0)


def test_seq_increases_per_room() -> None:
    rooms = Rooms()
    s, _, _ = rooms.join("s", conn("a"), 0.0)
    t, _, _ = rooms.join("t", conn("a"), 0.0)
    assert [s.next_seq() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert t.next_seq() == 1
    assert s.seq == 5 and t.seq == 1


def test_linger_expiry_at_the_boundary() -> None:
    rooms = Rooms(linger=30.0)
    a = conn("a")
    room, _, _ = rooms.join("s", a, 100.0)
    assert rooms.expire(10_000.0) == []  # occupied rooms never expire
    room.remove(a, 200.0)
    assert rooms.expire(229.0) == []
    assert rooms.expire(229.999) == []
    assert "s" in rooms
    assert rooms.expire(230.0) == ["s"]  # gone exactly at empty_since + linger
    assert "s" not in rooms and rooms.get("s") is None and len(rooms) == 0
    assert rooms.expire(1_000.0) == []


def test_opened_but_never_joined_room_lingers() -> None:
    rooms = Rooms(linger=5.0)
    room = rooms.open("s", 0.0)
    assert rooms.open("s", 1.0) is room
    assert room.empty_since == 0.0 and rooms.sessions() == {"s": 0}
    assert rooms.expire(4.0) == []
    assert rooms.expire(5.0) == ["s"]


def test_rejoin_during_linger_keeps_room_and_seq() -> None:
    rooms = Rooms(linger=30.0)
    a = conn("a")
    room, _, _ = rooms.join("s", a, 0.0)
    room.next_seq()
    room.next_seq()
    room.remove(a, 10.0)
    assert rooms.expire(39.0) == []
    again, new, old = rooms.join("s", conn("a"), 39.0)
    assert again is room and new is True and old is None
    assert room.empty_since is None
    assert rooms.expire(1_000.0) == []  # occupied again
    assert room.next_seq() == 3
    # leaving again restarts the linger from the new time
    room.remove(next(room.peers()), 500.0)
    assert rooms.expire(529.0) == []
    assert rooms.expire(530.0) == ["s"]
    # a new room with the same session starts over
    fresh, _, _ = rooms.join("s", conn("a"), 600.0)
    assert fresh is not room and fresh.next_seq() == 1


def test_drop() -> None:
    rooms = Rooms()
    room, _, _ = rooms.join("s", conn("a"), 0.0)
    assert rooms.drop("s") is room
    assert rooms.drop("s") is None
    assert "s" not in rooms


def test_chat_room_alone() -> None:
    room = ChatRoom("s", now=5.0)
    assert room.empty_since == 5.0 and room.members() == [] and room.seq == 0
    p = conn("a")
    assert room.add(p) == (True, None)
    assert room.others(p) == []


# --------------------------------------------------- a model of one room

CLIENTS = ["a", "b", "c"]
DEVICES = ["d1", "d2"]
MAX = 4


class RoomMachine(RuleBasedStateMachine):
    """Rooms.join / ChatRoom.remove against {(client, device): conn}."""

    def __init__(self) -> None:
        super().__init__()
        self.rooms = Rooms(max_members=MAX, linger=10.0)
        self.now = 0.0
        self.conns: dict[tuple[str, str], Peer] = {}
        self.stale: list[Peer] = []
        self.seq = 0
        self.emptied_at: float | None = None  # None while occupied or before any join

    @rule(client=st.sampled_from(CLIENTS), device=st.sampled_from(DEVICES))
    def join(self, client: str, device: str) -> None:
        peer = conn(client, device)
        key = (client, device)
        if len(self.conns) >= MAX and key not in self.conns:
            with pytest.raises(RoomFull):
                self.rooms.join("s", peer, self.now)
            return
        was_member = any(c == client for c, _ in self.conns)
        room, new, old = self.rooms.join("s", peer, self.now)
        assert new is not was_member
        assert old is self.conns.get(key)
        if old is not None:
            assert old.room is None
            self.stale.append(old)
        assert peer.room is room
        self.conns[key] = peer
        self.emptied_at = None

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.conns)))
        peer = self.conns.pop(key)
        room = self.rooms.get("s")
        assert room is not None
        still = any(c == key[0] for c, _ in self.conns)
        assert room.remove(peer, self.now) is not still
        if not self.conns:
            self.emptied_at = self.now

    @precondition(lambda self: self.stale and "s" in self.rooms)
    @rule(data=st.data())
    def stale_leave(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(self.stale))
        room = self.rooms.get("s")
        assert room is not None
        assert room.remove(peer, self.now) is False  # a replaced connection is no member

    @precondition(lambda self: "s" in self.rooms and self.conns)
    @rule()
    def send(self) -> None:
        room = self.rooms.get("s")
        self.seq += 1
        assert room.next_seq() == self.seq  # type: ignore[union-attr]

    @rule(dt=st.sampled_from([0.0, 1.0, 5.0, 9.0, 10.0, 11.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        ended = self.rooms.expire(self.now)
        if self.emptied_at is not None and self.now - self.emptied_at >= 10.0:
            assert ended == ["s"]
            self.emptied_at = None
            self.seq = 0  # a later join makes a fresh room
        else:
            assert ended == []

    @invariant()
    def agrees(self) -> None:
        room = self.rooms.get("s")
        if room is None:
            assert not self.conns
            return
        assert len(room) == len(self.conns)
        assert set(room.peers()) == set(self.conns.values())
        assert sorted(room.members()) == sorted({c for c, _ in self.conns})
        assert room.seq == self.seq
        assert room.empty_since == (None if self.conns else self.emptied_at)
        for peer in self.conns.values():
            assert peer.room is room
            assert set(room.others(peer)) == set(self.conns.values()) - {peer}


RoomMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestRoomMachine = RoomMachine.TestCase
