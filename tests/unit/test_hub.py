"""The worker's routing core (mc.worker.hub) against a simple reference model.

The model keeps plain sets and dicts and decides delivery by brute force with
``pattern_matches``; the hub must agree after any sequence of connects,
subscriptions, pauses, load changes and disconnects.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mc.protocol import BROADCAST, Target, pattern_matches
from mc.worker.hub import Hub, SubscriptionLimit
from mc.worker.peer import APP, CHAT, CONSUMER, Peer
from mc.worker.states import CLOSING, OPEN

CLIENTS = ["alice", "bob", "carol"]
DEVICES = ["phone", "web"]
TAGS = ["x", "y", "z"]
GROUPS = [None, "g1", "g2"]
KEYS = ["*", "k1", "k2"]
MAX_SUBS = 6

topics = st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=3))
    if not segs or draw(st.booleans()):
        segs.append(">")
    return ".".join(segs)


def app(client: str, device: str = "default", tags: tuple[str, ...] = ()) -> Peer:
    return Peer(APP, client=client, device=device, tags=tags)


def consumer(name: str) -> Peer:
    return Peer(CONSUMER, name=name)


def selects(target: Target, peer: Peer) -> bool:
    """The model of a notify target: set keys combine with AND, tags match any."""
    return (
        (target.client is None or peer.client == target.client)
        and (target.device is None or peer.device == target.device)
        and (target.tags is None or bool(set(target.tags) & set(peer.tags)))
    )


SHORT_TOPICS = ["a", "b", "a.a", "a.b", "b.a", "b.b"]
SOME_TARGETS = [
    BROADCAST,
    Target(client="alice"),
    Target(client="bob", device="phone"),
    Target(client="nobody"),
    Target(device="web"),
    Target(tags=("x",)),
    Target(tags=("y", "z")),
    Target(client="carol", tags=("x", "z")),
    Target(client="alice", device="web", tags=("y",)),
    Target(device="phone", tags=("z",)),
]


class HubMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub(max_subscriptions=MAX_SUBS)
        self.apps: dict[tuple[str, str], Peer] = {}  # (client, device) -> live peer
        self.replaced: list[Peer] = []  # apps replaced or detached: no longer attached
        self.consumers: list[Peer] = []
        self.subs: dict[Peer, set[tuple[str, str | None, str]]] = {}
        self.gone: list[Peer] = []  # detached consumers
        self.paused: set[Peer] = set()
        self.n = 0

    @initialize()
    def some_consumers(self) -> None:
        """Start with consumers of distinct load, so subscriptions and groups happen early."""
        for load in (2, 0, 1):
            self.connect_consumer()
            self.consumers[-1].queued = load

    # -------------------------------------------------------------- apps

    @rule(
        client=st.sampled_from(CLIENTS),
        device=st.sampled_from(DEVICES),
        tags=st.lists(st.sampled_from(TAGS), unique=True, max_size=3).map(tuple),
    )
    def connect_app(self, client: str, device: str, tags: tuple[str, ...]) -> None:
        peer = app(client, device, tags)
        expected_old = self.apps.get((client, device))
        old = self.hub.attach_app(peer)
        assert old is expected_old
        if old is not None:
            self.replaced.append(old)
        self.apps[(client, device)] = peer
        assert self.hub.app(client, device) is peer

    @precondition(lambda self: self.apps)
    @rule(data=st.data())
    def disconnect_app(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.apps)))
        peer = self.apps.pop(key)
        assert self.hub.detach(peer)
        assert self.hub.app(*key) is None
        self.replaced.append(peer)

    @precondition(lambda self: self.replaced)
    @rule(data=st.data())
    def disconnect_stale_app(self, data: st.DataObject) -> None:
        """A replaced (or already gone) connection closing later changes nothing."""
        peer = data.draw(st.sampled_from(self.replaced))
        assert not self.hub.detach(peer)

    # --------------------------------------------------------- consumers

    @rule()
    def connect_consumer(self) -> None:
        self.n += 1
        peer = consumer(f"c{self.n}")
        self.hub.attach_consumer(peer)
        self.consumers.append(peer)
        self.subs[peer] = set()

    def _consumer(self, data: st.DataObject) -> Peer:
        return data.draw(st.sampled_from(self.consumers))

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def disconnect_consumer(self, data: st.DataObject) -> None:
        peer = self._consumer(data)
        assert self.hub.detach(peer)
        assert not self.hub.detach(peer)
        assert not peer.subs
        self.consumers.remove(peer)
        del self.subs[peer]
        self.gone.append(peer)

    @precondition(lambda self: self.consumers)
    @rule(
        data=st.data(),
        batch=st.lists(
            st.tuples(patterns(), st.sampled_from(GROUPS), st.sampled_from(KEYS)),
            min_size=1, max_size=4,
        ),
    )
    def subscribe(self, data: st.DataObject, batch: list[tuple[str, str | None, str]]) -> None:
        """A few subscriptions at once, so groups with several members are common."""
        for pattern, group, key in batch:
            self._subscribe(self._consumer(data), pattern, group, key)

    def _subscribe(self, peer: Peer, pattern: str, group: str | None, key: str) -> None:
        mine = self.subs[peer]
        ident = (pattern, group, key)
        if ident in mine:
            assert self.hub.subscribe(peer, pattern, group, key) is False
        elif len(mine) >= MAX_SUBS:
            with pytest.raises(SubscriptionLimit):
                self.hub.subscribe(peer, pattern, group, key)
        else:
            assert self.hub.subscribe(peer, pattern, group, key) is True
            mine.add(ident)

    @precondition(lambda self: any(self.subs.values()))
    @rule(data=st.data())
    def unsubscribe_existing(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from([p for p in self.consumers if self.subs[p]]))
        pattern, group, _ = data.draw(st.sampled_from(sorted(self.subs[peer], key=repr)))
        self._unsubscribe(peer, pattern, group)

    @precondition(lambda self: self.consumers)
    @rule(data=st.data(), pattern=patterns(), group=st.sampled_from(GROUPS))
    def unsubscribe_any(self, data: st.DataObject, pattern: str, group: str | None) -> None:
        self._unsubscribe(self._consumer(data), pattern, group)

    def _unsubscribe(self, peer: Peer, pattern: str, group: str | None) -> None:
        gone = {s for s in self.subs[peer] if s[0] == pattern and s[1] == group}
        assert self.hub.unsubscribe(peer, pattern, group) == len(gone)
        self.subs[peer] -= gone

    @precondition(lambda self: self.consumers)
    @rule(data=st.data(), paused=st.booleans())
    def pause_or_resume(self, data: st.DataObject, paused: bool) -> None:
        peer = self._consumer(data)
        self.hub.set_paused(peer, paused)
        if paused:
            self.paused.add(peer)
        else:
            self.paused.discard(peer)

    @precondition(lambda self: self.consumers)
    @rule(data=st.data(), queued=st.integers(0, 3))
    def set_queued(self, data: st.DataObject, queued: int) -> None:
        self._consumer(data).queued = queued

    @precondition(lambda self: len(self.consumers) > 1)
    @rule(data=st.data())
    def shuffle_load(self, data: st.DataObject) -> None:
        """Every consumer gets a different load, so 'least busy' is one member."""
        loads = data.draw(st.permutations(range(len(self.consumers))))
        for peer, load in zip(self.consumers, loads, strict=True):
            peer.queued = load

    @precondition(lambda self: self.consumers or self.apps)
    @rule(data=st.data())
    def start_closing(self, data: st.DataObject) -> None:
        """A connection whose close has begun (e.g. after 4029) is skipped until detached."""
        peers = self.consumers + [self.apps[k] for k in sorted(self.apps)]
        peer = data.draw(st.sampled_from(peers))
        peer.state = CLOSING
        self.hub.left_open(peer)  # as the core does after every transition out of OPEN

    # ----------------------------------------------------------- routing

    @rule(topic=topics, key=st.sampled_from([None, "k1", "k2"]))
    def publish(self, topic: str, key: str | None) -> None:
        self.check_publish(topic, key)

    def check_publish(self, topic: str, key: str | None) -> None:
        got = self.hub.route_publish(topic, key)
        assert len(got) == len(set(got)), "a connection appears twice"
        received = set(got)

        plain: set[Peer] = set()
        eligible: dict[str, set[Peer]] = {}
        for peer in self.consumers:
            if peer in self.paused or peer.state is not OPEN:
                continue
            for pattern, group, sub_key in self.subs[peer]:
                if not pattern_matches(pattern, topic) or sub_key not in ("*", key):
                    continue
                if group is None:
                    plain.add(peer)
                else:
                    eligible.setdefault(group, set()).add(peer)

        # every unpaused consumer with a matching plain subscription receives it
        assert plain <= received
        # each group with an eligible member is served by exactly one member
        # of least load; nobody else receives it.  (A member may also be a
        # plain recipient, or serve two groups: it still gets one frame.)
        least = {
            g: {p for p in members if p.queued == min(m.queued for m in members)}
            for g, members in eligible.items()
        }
        choices = [sorted(least[g] & received, key=id) for g in sorted(least)]
        assert all(choices), "a group with eligible members got nothing (or not its least busy)"
        assert any(
            plain | set(pick) == received for pick in itertools.product(*choices)
        ), "recipients are not the plain subscribers plus one least-busy member per group"

    @rule(
        client=st.sampled_from([None, *CLIENTS, "nobody"]),
        device=st.sampled_from([None, *DEVICES, "tv"]),
        tags=st.none() | st.lists(st.sampled_from([*TAGS, "w"]), min_size=1, max_size=3).map(tuple),
    )
    def notify(self, client: str | None, device: str | None, tags: tuple[str, ...] | None) -> None:
        self.check_notify(Target(client, device, tags))

    def check_notify(self, target: Target) -> None:
        got = self.hub.route_notify(target)
        assert len(got) == len(set(got))
        assert set(got) == {p for p in self.apps.values() if selects(target, p) and p.state is OPEN}

    # -------------------------------------------------------- invariants

    @invariant()
    def counts(self) -> None:
        assert self.hub.app_count == len(self.apps)
        assert self.hub.consumer_count == len(self.consumers)
        assert self.hub.subscription_count == sum(len(s) for s in self.subs.values())
        assert set(self.hub.apps()) == set(self.apps.values())
        for peer in self.consumers:
            assert set(peer.subs) == self.subs[peer]

    @invariant()
    def routing(self) -> None:
        """Every short topic and key, and a spread of notify targets, after every step."""
        for topic in SHORT_TOPICS:
            for key in (None, "k1", "k2"):
                self.check_publish(topic, key)
        for target in SOME_TARGETS:
            self.check_notify(target)


HubMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestHubMachine = HubMachine.TestCase


# ------------------------------------------------------------------ examples


def test_subscription_limit() -> None:
    hub = Hub(max_subscriptions=2)
    c = consumer("c")
    hub.attach_consumer(c)
    assert hub.subscribe(c, "a", None)
    assert hub.subscribe(c, "b", None)
    with pytest.raises(SubscriptionLimit):
        hub.subscribe(c, "c", None)
    # an identical subscription is not a new one, so it is not refused
    assert hub.subscribe(c, "a", None) is False
    assert hub.subscription_count == 2
    # freeing one makes room again; the limit is per connection
    assert hub.unsubscribe(c, "a", None) == 1
    assert hub.subscribe(c, "c", None)
    other = consumer("d")
    hub.attach_consumer(other)
    assert hub.subscribe(other, "a", None)


def test_subscribe_is_idempotent() -> None:
    hub = Hub()
    c = consumer("c")
    hub.attach_consumer(c)
    assert hub.subscribe(c, "a.*", "g", "k") is True
    assert hub.subscribe(c, "a.*", "g", "k") is False
    assert hub.subscription_count == 1
    assert hub.route_publish("a.b", "k") == [c]
    # another key or group or pattern is another subscription
    assert hub.subscribe(c, "a.*", "g", "*") is True
    assert hub.subscribe(c, "a.*", None, "k") is True
    assert hub.subscribe(c, "a.>", "g", "k") is True
    assert hub.subscription_count == 4
    assert hub.route_publish("a.b", "k") == [c]  # still once


def test_unsubscribe_counts() -> None:
    hub = Hub()
    c = consumer("c")
    hub.attach_consumer(c)
    for key in ("*", "k1", "k2"):
        hub.subscribe(c, "a", "g", key)
    hub.subscribe(c, "a", None)
    hub.subscribe(c, "a", "h")
    hub.subscribe(c, "b", "g")
    assert hub.unsubscribe(c, "a", "g") == 3  # every key of (a, g)
    assert hub.unsubscribe(c, "a", "g") == 0
    assert hub.unsubscribe(c, "zzz", None) == 0
    assert hub.subscription_count == 3
    assert hub.unsubscribe(c, "a", None) == 1
    assert hub.route_publish("a", None) == [c]  # through group h
    assert hub.unsubscribe(c, "a", "h") == 1
    assert hub.route_publish("a", None) == []
    assert hub.detach(c)
    assert hub.subscription_count == 0
    assert hub.route_publish("b", None) == []


def test_key_filter() -> None:
    hub = Hub()
    anyk, k1 = consumer("any"), consumer("k1")
    for p in (anyk, k1):
        hub.attach_consumer(p)
    hub.subscribe(anyk, "t", None)
    hub.subscribe(k1, "t", None, "k1")
    assert hub.route_publish("t", None) == [anyk]
    assert set(hub.route_publish("t", "k1")) == {anyk, k1}
    assert hub.route_publish("t", "k2") == [anyk]


def test_pause_skips_and_groups_fall_over() -> None:
    hub = Hub()
    a, b = consumer("a"), consumer("b")
    for p in (a, b):
        hub.attach_consumer(p)
        hub.subscribe(p, "t", "g")
    hub.set_paused(a, True)
    assert all(hub.route_publish("t", None) == [b] for _ in range(5))
    hub.set_paused(b, True)
    assert hub.route_publish("t", None) == []
    hub.set_paused(a, False)
    assert hub.route_publish("t", None) == [a]


def test_group_picks_least_busy_and_rotates_ties() -> None:
    hub = Hub()
    members = [consumer(f"m{i}") for i in range(3)]
    for p in members:
        hub.attach_consumer(p)
        hub.subscribe(p, "t.>", "g")
    members[0].queued, members[1].queued, members[2].queued = 5, 1, 3
    assert all(hub.route_publish("t.x", None) == [members[1]] for _ in range(6))
    for p in members:
        p.queued = 0
    seen = Counter(hub.route_publish("t.x", None)[0] for _ in range(30))
    assert set(seen) == set(members)  # ties rotate: nobody is starved


def test_group_spans_patterns() -> None:
    hub = Hub()
    a, b = consumer("a"), consumer("b")
    for p in (a, b):
        hub.attach_consumer(p)
    hub.subscribe(a, "orders.*", "g")
    hub.subscribe(b, "orders.>", "g")
    for _ in range(10):
        assert len(hub.route_publish("orders.new", None)) == 1
    assert hub.route_publish("orders.new.eu", None) == [b]


def test_notify_target_forms() -> None:
    hub = Hub()
    ap = app("alice", "phone", ("driver",))
    aw = app("alice", "web")
    bp = app("bob", "phone", ("driver", "vip"))
    cw = app("carol", "web", ("vip",))
    for p in (ap, aw, bp, cw):
        assert hub.attach_app(p) is None

    def route(**kw: object) -> set[Peer]:
        got = hub.route_notify(Target(**kw))  # type: ignore[arg-type]
        assert len(got) == len(set(got))
        return set(got)

    assert route() == {ap, aw, bp, cw}
    assert route(client="alice") == {ap, aw}
    assert route(client="alice", device="phone") == {ap}
    assert route(client="alice", device="tv") == set()
    assert route(client="nobody") == set()
    assert route(tags=("driver",)) == {ap, bp}
    assert route(tags=("driver", "vip")) == {ap, bp, cw}
    assert route(tags=("nope",)) == set()
    assert route(client="alice", tags=("driver",)) == {ap}
    assert route(client="carol", tags=("driver",)) == set()
    assert route(device="phone") == {ap, bp}
    assert route(device="phone", tags=("vip",)) == {bp}
    assert route(client="bob", device="phone", tags=("vip",)) == {bp}


def test_app_replacement() -> None:
    hub = Hub()
    first = app("alice", "phone", ("x",))
    other_device = app("alice", "web")
    assert hub.attach_app(first) is None
    assert hub.attach_app(other_device) is None
    second = app("alice", "phone", ("y",))
    assert hub.attach_app(second) is first
    assert hub.app_count == 2
    assert hub.app("alice", "phone") is second
    # the replaced connection's tags are gone, the new one's are live
    assert hub.route_notify(Target(tags=("x",))) == []
    assert hub.route_notify(Target(tags=("y",))) == [second]
    # the replaced connection closing later does not remove its successor
    assert hub.detach(first) is False
    assert hub.app("alice", "phone") is second
    assert hub.app_count == 2
    assert hub.detach(second) and hub.detach(other_device)
    assert hub.app_count == 0 and list(hub.apps()) == []


def test_detach_unknown_peers() -> None:
    hub = Hub()
    assert hub.detach(app("ghost")) is False
    assert hub.detach(consumer("ghost")) is False
    assert hub.detach(Peer(CHAT, client="c")) is False
    # an app with the same identity as an attached one, but not attached itself
    real = app("a", "d")
    hub.attach_app(real)
    assert hub.detach(app("a", "d")) is False
    assert hub.app("a", "d") is real


def test_closing_connections_are_skipped() -> None:
    hub = Hub()
    a, b, plain = consumer("a"), consumer("b"), consumer("plain")
    for p in (a, b, plain):
        hub.attach_consumer(p)
    hub.subscribe(a, "t", "g")
    hub.subscribe(b, "t", "g")
    hub.subscribe(plain, "t", None)
    a.queued, b.queued = 0, 9
    assert set(hub.route_publish("t", None)) == {a, plain}
    a.state = plain.state = CLOSING
    hub.left_open(a)
    hub.left_open(plain)
    assert hub.route_publish("t", None) == [b]  # the group falls over to b
    phone = app("alice", "phone")
    hub.attach_app(phone)
    phone.state = CLOSING
    assert hub.route_notify(BROADCAST) == []
    assert hub.route_notify(Target(client="alice")) == []


def test_nothing_subscribed() -> None:
    hub = Hub()
    assert hub.route_publish("a.b", None) == []
    assert hub.route_notify(BROADCAST) == []
    assert hub.route_notify(Target(client="x")) == []
