"""The worker's routing core: who receives a publish or a notify.

Pure and synchronous (no trio, no sockets, no clock): the I/O layer calls it
and writes to the peers it returns. Kept separate so the socket layer can be
rewritten for speed without touching delivery semantics, and so delivery is
tested exhaustively (tests/unit/test_hub*.py).

A publish's recipients are cached per topic (:class:`Route`) and the cache is
dropped by every change that could alter them: subscribe, unsubscribe,
pause, resume, detach, and a connection leaving ``OPEN`` (the core calls
:meth:`Hub.left_open`; state is a field the core moves, so the hub cannot see
it change by itself). Group members are picked per message, never cached.

Delivery rules (PROTOCOL.md "/v1/consumer", plus decisions in docs/protocol.md):

* a publish reaches every subscription whose pattern matches the topic and
  whose key is ``*`` or equal to the message key;
* subscriptions sharing a non-empty group name (across patterns) form one
  group: each message goes to exactly one live, unpaused member, the one with
  the fewest queued frames, ties rotating;
* a connection receives one message at most once, however many of its
  subscriptions match;
* paused connections receive nothing and are skipped by groups;
* connections that are not ``OPEN`` (a close frame is queued, e.g. after a
  4029 overflow) are skipped by everything: nothing can be written to them.
"""

from __future__ import annotations

from collections.abc import Iterable

from mc.protocol import Codec, SubscriptionIndex, Target

from .peer import APP, CONSUMER, NO_SUBS, Peer
from .states import OPEN

ANY_KEY = "*"
#: at most this many topics' routes are cached (then the cache starts over)
ROUTE_CACHE_SIZE = 4096


class Sub:
    """One subscription: a peer, its group (or None) and its key filter."""

    __slots__ = ("peer", "group", "key")

    def __init__(self, peer: Peer, group: str | None, key: str) -> None:
        self.peer = peer
        self.group = group
        self.key = key


class Route:
    """Who a publish on one topic (and key) goes to, as of the last change.

    ``plain`` holds the recipients of every ungrouped subscription, once
    each, split by codec (the core encodes once per codec and hands each list
    to ``Sink.write_many`` whole); ``groups`` the eligible members of each
    group, in which :meth:`Hub.pick` chooses per message (load changes with
    every write, so the choice is never cached). Only unpaused ``OPEN``
    connections are in it. Never mutated once built: a change builds new
    routes, and lists already handed to a Sink stay valid.
    """

    __slots__ = ("plain", "members", "groups", "size", "filters", "keyed")

    def __init__(self, plain: dict[Codec, list[Peer]], groups: list[list[Peer]]) -> None:
        self.plain = tuple(plain.items())
        self.members = frozenset(peer for peers in plain.values() for peer in peers)
        self.groups = tuple(groups)
        #: the number of plain recipients
        self.size = len(self.members)
        #: the keys some matching subscription filters on (others route like no key)
        self.filters: frozenset[str] = frozenset()
        #: key -> the route for a message with that key (one per key in ``filters`` at most)
        self.keyed: dict[str, Route] = {}


def _build(subs: list[Sub], key: str) -> Route:
    """The route of a message with ``key`` (ANY_KEY: one no filter selects) through ``subs``."""
    plain: dict[Codec, dict[Peer, None]] = {}
    groups: dict[str, list[Peer]] = {}
    for sub in subs:
        peer = sub.peer
        if peer.paused or peer.state is not OPEN or (sub.key != ANY_KEY and sub.key != key):
            continue
        if sub.group is None:
            plain.setdefault(peer.codec, {})[peer] = None
        else:
            groups.setdefault(sub.group, []).append(peer)
    return Route({codec: list(peers) for codec, peers in plain.items()}, list(groups.values()))


class SubscriptionLimit(Exception):
    """The peer already holds the maximum number of subscriptions."""


class Hub:
    """Connections, subscriptions and routing for one worker."""

    def __init__(self, *, max_subscriptions: int = 1000) -> None:
        self.max_subscriptions = max_subscriptions
        self._index: SubscriptionIndex[Sub] = SubscriptionIndex()
        self._apps: dict[str, dict[str, Peer]] = {}  # client -> device -> peer
        self._tags: dict[str, dict[Peer, None]] = {}  # tag -> ordered set of peers
        self._consumers: dict[Peer, None] = {}
        self._app_count = 0
        self._rotate = 0
        #: topic -> its cached Route (bounded: cleared when ROUTE_CACHE_SIZE topics are cached)
        self._routes: dict[str, Route] = {}

    # ---------------------------------------------------------------- apps

    @property
    def app_count(self) -> int:
        return self._app_count

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def subscription_count(self) -> int:
        return len(self._index)

    def app(self, client: str, device: str) -> Peer | None:
        return self._apps.get(client, {}).get(device)

    def attach_app(self, peer: Peer) -> Peer | None:
        """Register an app connection; returns the one it replaces (to close with 4009)."""
        devices = self._apps.setdefault(peer.client, {})
        old = devices.get(peer.device)
        if old is not None:
            self.detach(old)
            devices = self._apps.setdefault(peer.client, {})
        devices[peer.device] = peer
        for tag in peer.tags:
            self._tags.setdefault(tag, {})[peer] = None
        self._app_count += 1
        return old

    def attach_consumer(self, peer: Peer) -> None:
        self._consumers[peer] = None

    def detach(self, peer: Peer) -> bool:
        """Forget a peer and its subscriptions; False if it was not attached."""
        if peer.kind == APP:
            devices = self._apps.get(peer.client)
            if devices is None or devices.get(peer.device) is not peer:
                return False
            del devices[peer.device]
            if not devices:
                del self._apps[peer.client]
            for tag in peer.tags:
                members = self._tags[tag]
                del members[peer]
                if not members:
                    del self._tags[tag]
            self._app_count -= 1
            return True
        if peer.kind == CONSUMER:
            if self._consumers.pop(peer, False) is False:
                return False
            if peer.subs:
                for (pattern, _, _), sub in peer.subs.items():
                    self._index.remove(pattern, sub)  # type: ignore[arg-type]
                self._stale()
            peer.subs = NO_SUBS
            return True
        return False

    # ------------------------------------------------------- subscriptions

    def subscribe(self, peer: Peer, pattern: str, group: str | None, key: str = ANY_KEY) -> bool:
        """Add a subscription; False if the identical one already exists (idempotent).

        Raises SubscriptionLimit when the peer holds ``max_subscriptions``.
        """
        ident = (pattern, group, key)
        if ident in peer.subs:
            return False
        if len(peer.subs) >= self.max_subscriptions:
            raise SubscriptionLimit(self.max_subscriptions)
        sub = Sub(peer, group, key)
        if peer.subs is NO_SUBS:
            peer.subs = {}
        peer.subs[ident] = sub  # type: ignore[index]
        self._index.add(pattern, sub)
        self._stale()
        return True

    def unsubscribe(self, peer: Peer, pattern: str, group: str | None) -> int:
        """Remove the peer's subscriptions on ``pattern`` in ``group`` (any key)."""
        gone = [ident for ident in peer.subs if ident[0] == pattern and ident[1] == group]
        for ident in gone:
            self._index.remove(pattern, peer.subs.pop(ident))  # type: ignore[attr-defined]
        if gone:
            self._stale()
        return len(gone)

    def set_paused(self, peer: Peer, paused: bool) -> None:
        if peer.paused is not paused:
            peer.paused = paused
            self.left_open(peer)

    # ------------------------------------------------------------- routing

    def route(self, topic: str, key: str | None) -> Route:
        """Who a message on ``topic`` with ``key`` goes to: the cached :class:`Route`.

        Building one walks every matching subscription; publishing reuses it
        until something that changes the answer happens (see ``_stale``).
        Groups are not resolved here: call :meth:`pick` once per message.
        """
        route = self._routes.get(topic)
        if route is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            subs = self._index.match(topic)
            route = self._routes[topic] = _build(subs, ANY_KEY)
            route.filters = frozenset(s.key for s in subs if s.key != ANY_KEY)
        if key is not None and key in route.filters:
            keyed = route.keyed.get(key)
            if keyed is None:
                keyed = route.keyed[key] = _build(self._index.match(topic), key)
            return keyed
        return route

    def pick(self, route: Route) -> list[Peer]:
        """One member per group of ``route`` for one message, minus the plain recipients
        (a connection receives a message once): the least busy, ties rotating."""
        picks: list[Peer] = []
        for members in route.groups:
            peer = self._least_busy(members)
            if peer not in route.members and peer not in picks:
                picks.append(peer)
        return picks

    def route_publish(self, topic: str, key: str | None) -> list[Peer]:
        """The consumer connections one message on ``topic`` with ``key`` goes to."""
        route = self.route(topic, key)
        out = [peer for _, peers in route.plain for peer in peers]
        if route.groups:
            out += self.pick(route)
        return out

    def left_open(self, peer: Peer) -> None:
        """``peer`` is no longer ``OPEN`` (the core moved its state): routes through it are stale."""
        if peer.subs:
            self._stale()

    def _stale(self) -> None:
        """Subscriptions, a pause or a connection's state changed: rebuild routes on next use."""
        self._routes.clear()

    def _least_busy(self, members: list[Peer]) -> Peer:
        n = len(members)
        if n == 1:
            return members[0]
        self._rotate += 1
        start = self._rotate % n
        best = members[start]
        for i in range(1, n):
            peer = members[(start + i) % n]
            if peer.queued < best.queued:
                best = peer
        return best

    def route_notify(self, target: Target) -> list[Peer]:
        """The app connections on this worker that ``target`` selects."""
        if target.client is not None:
            devices = self._apps.get(target.client)
            if not devices:
                return []
            if target.device is not None:
                peer = devices.get(target.device)
                candidates: Iterable[Peer] = () if peer is None else (peer,)
            else:
                candidates = devices.values()
        elif target.tags is not None:
            seen: dict[Peer, None] = {}
            for tag in target.tags:
                seen.update(self._tags.get(tag, {}))
            candidates = seen
        else:
            candidates = (p for devices in self._apps.values() for p in devices.values())
        return [p for p in candidates if p.state is OPEN and _selects(target, p)]

    def apps(self) -> Iterable[Peer]:
        for devices in self._apps.values():
            yield from devices.values()


def _selects(target: Target, peer: Peer) -> bool:
    if target.client is not None and peer.client != target.client:
        return False
    if target.device is not None and peer.device != target.device:
        return False
    return target.tags is None or any(t in peer.tags for t in target.tags)
