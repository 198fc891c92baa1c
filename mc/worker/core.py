"""The worker as a sans-IO state machine: events in, bytes and decisions out.

The model is h11's ``Connection``: :class:`WorkerCore` owns the hub, the
chat rooms, ``seq``, the ids, the counters and every connection's state
(mc/worker/states.py), and answers each input with decisions. It has no
trio, no sockets and no clock of its own: every input carries ``now`` (the
shell's monotonic time) and wall-clock milliseconds come from an injected
function. Its outputs go through a narrow :class:`Sink`, so fan-out stays
encode-once: the core encodes a frame once per codec and hands the very same
``bytes`` to ``Sink.write`` for every recipient.

Inputs::

    handshake(request, now)         -> Accept | Respond | Locate
    located(locate, outcome, now)   -> Accept | Respond     (after a Locate)
    open(accept, now, make)         -> the new connection   (after the 101)
    received(conn, data, now)       bytes read from a connection
    closed(conn, now)               its socket is gone
    overflowed(conn, now)           its outbound queue hit the limit (Sink)
    tick(now)                       pings, idle closes, close timeouts, linger
    control(message, now)           a typed message from the master
    link_up() / link_down()         the control link's state
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from mc.identify import Refusal, identify
from mc.protocol import (
    APP_FRAMES,
    CHAT_FRAMES,
    CONSUMER_FRAMES,
    JSON,
    Ack,
    CloseCode,
    Codec,
    Error,
    ErrorCode,
    Joined,
    Left,
    Notify,
    Pause,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    Refresh,
    Resume,
    Subscribe,
    Target,
    Unsubscribe,
    Welcome,
    negotiate,
    parse_request,
)
from mc.protocol.control import (
    PRESENCE_CHUNK,
    Adopt,
    ControlMessage,
    Deliver,
    Delivered,
    Drain,
    Drained,
    ForwardNotify,
    HandedOff,
    HandOff,
    Heartbeat,
    Kick,
    Metrics,
    Notified,
    Presence,
    Recorded,
    Register,
    Registered,
    Release,
    Shed,
    Undrain,
)
from mc.protocol.frames import Notification, message_wire, notification_wire, send_fields
from mc.security import key_matches
from mc.tokens import TokenError, TokenVerifier
from mc.websocket import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WebSocketError, encode_frame
from mc.websocket.handshake import HandshakeRequest

from .answers import (
    RETRY_AFTER,
    Accept,
    Answer,
    Locate,
    LocateFailed,
    Owned,
    Respond,
    redirect,
    refuse,
    unavailable,
)
from .chat import Rooms
from .config import WorkerConfig
from .hub import Hub, SubscriptionLimit
from .limits import Bucket, PerAddress
from .pacing import Pacer
from .peer import APP, CHAT, CONSUMER, Peer
from .states import CLOSED, CLOSING, HANDSHAKING, OPEN, Event, advance
from .stats import Stats

log = logging.getLogger("mc.worker")

CHAT_PREFIX = "/v1/chat/"
ENDPOINTS = {"/v1/app": APP, "/v1/consumer": CONSUMER}
PING_FRAME = encode_frame(OP_PING, b"")
#: the group picks of a route without groups (shared, never mutated)
NO_PEERS: list[Peer] = []
#: seconds a drain waits for the master's ``handedoff`` before closing chat members anyway
HANDOFF_WAIT = 1.0
#: seconds a forwarded notify waits for the master's count before the ack goes out with the local one
NOTIFY_TIMEOUT = 6.0

P = TypeVar("P", bound=Peer)


class Sink(Protocol):
    """Where the core's decisions go: the shell's sockets and control link."""

    def write(self, conn: Peer, data: bytes) -> None:
        """Queue complete WebSocket frames for ``conn`` (never blocks)."""

    def write_many(self, conns: Sequence[Peer], data: bytes) -> None:
        """``write(conn, data)`` for every connection in ``conns``, in one call.

        The core hands a cached route's list as is (the same list object
        publish after publish, until the route changes): the Sink may keep it
        and must not mutate it.
        """

    def close(self, conn: Peer, code: int, reason: str) -> None:
        """Queue a close frame for ``conn``; nothing is written after it."""

    def drop(self, conn: Peer) -> None:
        """Stop reading ``conn``; its socket closes once the queue is written."""

    def send_control(self, message: ControlMessage) -> bool:
        """Send a message to the master; False when there is no link."""


class WorkerCore:
    """Every decision of one worker process (see the module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        sink: Sink,
        *,
        worker_id: str,
        instance: int,
        wall_ms: Callable[[], int],
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.config = config
        self.id = worker_id
        self.sink = sink
        self.hub = Hub(max_subscriptions=config.max_subscriptions)
        self.rooms = Rooms(max_members=config.chat_max_members, linger=config.chat_linger)
        self.stats = Stats()
        self.connections: set[Peer] = set()
        #: len(connections) by kind, kept as they come and go: each heartbeat reports it
        #: (counting 19,990 connections twice a second was a worker's largest idle cost)
        self.kind_counts: dict[str, int] = {}
        self.seq = 0
        self.draining = False
        self.clustered = bool(config.masters)
        self.linked = False
        self._wall_ms = wall_ms
        #: the wall clock (ms) of the read being handled, taken at its first message: every
        #: ``message`` and ``chat`` frame of one read carries the same ``ts`` (one clock read
        #: per read, not per message; they are relayed within microseconds of each other)
        self._read_ms = 0
        self._handshakes: PerAddress | None = None
        self._configure(config, tokens)
        self._write = sink.write
        self._write_many = sink.write_many
        self._instance = instance
        # short on purpose: a made-up trace rides in every fan-out frame (~20 bytes in all)
        self._trace_prefix = _base36(zlib.crc32(f"{worker_id}/{instance}".encode()))[:6] + "-"
        self._trace = _trace_ids(self._trace_prefix).__next__
        #: per-frame debug lines (with their trace ids) cost a check per frame, nothing more
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._ids = itertools.count(1)
        self._tables: dict[str, tuple[dict, dict[type, Callable[[Any, Any, float], None]]]] = {
            APP: (APP_FRAMES, {Publish: self._publish, Refresh: self._refresh, Ping: self._ping,
                               Pong: _ignore}),
            CONSUMER: (CONSUMER_FRAMES, {
                Subscribe: self._subscribe, Unsubscribe: self._unsubscribe, Pause: self._pause,
                Resume: self._resume, Notify: self._notify, Ping: self._ping, Pong: _ignore,
            }),
            # ``send`` never gets here: _frame relays it from the decoded map
            CHAT: (CHAT_FRAMES, {Refresh: self._refresh, Ping: self._ping, Pong: _ignore}),
        }
        # (when, tie-breaker, conn): CLOSING connections waiting for the client's reply
        self._closes: list[tuple[float, int, Peer]] = []
        self._order = itertools.count()
        # keep-alive: the connections are spread over ``_ping_slots`` slots (round-robin
        # as they open) and each scan pings one slot, so every connection is pinged once
        # per heartbeat and a mass connect never makes a burst of pings
        self._next_scan = 0.0
        self._ping_phase = 0
        self._next_slot = 0
        self._keepalive(config.heartbeat)
        # forwarded notifies: control id -> (consumer conn, request id, local count, deadline)
        self._forwarded: dict[int, tuple[Peer, str | None, int, float]] = {}
        # apps whose welcome waits for the master to record them: control id -> (conn, deadline)
        self._welcomes: dict[int, tuple[Peer, float]] = {}
        self._announced: set[tuple[str, str]] = set()
        self._pacer = Pacer(config.drain_rate)
        #: a drain waits for the master to hand the sessions over before closing chat members
        self._handoff_until: float | None = None
        self.drained = False
        self._members_sent: dict[str, int] = {}
        self._last_report: tuple[float, int, int] | None = None
        self.resync_needed = False

    def _configure(self, config: WorkerConfig, tokens: TokenVerifier | None) -> None:
        self.config = config
        self._tokens = tokens
        self._api_keys = config.api_keys
        self._publish_rate = config.publish_rate
        self._notify_rate = config.notify_rate
        rate = config.handshake_rate
        if not rate:
            self._handshakes = None
        elif self._handshakes is None or self._handshakes.rate != rate:
            self._handshakes = PerAddress(rate)

    def _keepalive(self, heartbeat: float) -> None:
        """The scan period (at most 1 s, a quarter heartbeat for short ones) and the
        ping slots: one slot is pinged per scan, the slots take one heartbeat."""
        self._ping_slots = max(4, math.ceil(heartbeat))
        self._scan_period = heartbeat / self._ping_slots

    def _ping_slot(self) -> int:
        """A new connection's slot: round-robin over the half of the slots that are
        pinged between half a heartbeat and one heartbeat from now (its welcome,
        which may wait for the master, comes before its first ping)."""
        slots = self._ping_slots
        half = slots // 2
        self._next_slot = (self._next_slot + 1) % (slots - half)
        return (self._ping_phase + half + self._next_slot) % slots

    def reload(self, config: WorkerConfig, tokens: TokenVerifier | None, now: float) -> None:
        """New keys, limits and token settings, without dropping a connection; a
        consumer whose API key was removed is closed with 4001 (revocation)."""
        if config.heartbeat != self.config.heartbeat:
            self._keepalive(config.heartbeat)
            slots = self._ping_slots
            self._ping_phase %= slots
            for conn in self.connections:
                conn.ping_slot %= slots
        self._configure(config, tokens)
        revoked = [c for c in self.connections
                   if c.key is not None and (not config.api_keys or not key_matches(c.key, config.api_keys))]
        for conn in revoked:
            self.close(conn, CloseCode.TOKEN_EXPIRED, "API key revoked", now)
        log.info("settings reloaded; %d consumers closed for a revoked key", len(revoked))

    # ============================================================ handshake

    def handshake(self, request: HandshakeRequest, now: float, remote: str = "") -> Answer:
        """Decide a request head: accept, answer in HTTP, or ask who owns a session.

        ``remote`` is the client's address, for ``handshake_rate``.
        """
        if self._handshakes is not None and not self._handshakes.allow(remote, now):
            self.stats.rate_limited += 1
            answer: Answer = refuse(429, ErrorCode.RATE_LIMITED, "too many handshakes from this address",
                                    (("Retry-After", RETRY_AFTER),))
        else:
            answer = self._admit(request)
        if isinstance(answer, Respond) and answer.status >= 300:
            self.stats.rejected += 1
            refused = self.stats.refused
            refused[answer.status] = refused.get(answer.status, 0) + 1
        return answer

    def malformed(self, status: int, reason: str) -> Respond:
        """A request head that could not be parsed (HandshakeReader): the answer."""
        self.stats.rejected += 1
        refused = self.stats.refused
        refused[status] = refused.get(status, 0) + 1
        return refuse(status, ErrorCode.BAD_REQUEST, reason)

    def _admit(self, req: HandshakeRequest) -> Answer:
        path = req.path
        kind = ENDPOINTS.get(path) or (CHAT if path.startswith(CHAT_PREFIX) else None)
        if kind is None:
            if path == "/healthz" and not req.is_websocket:
                return Respond(200, {"worker": self.id, "connections": len(self.connections)})
            return refuse(404, ErrorCode.NOT_FOUND, f"no endpoint at {path}")
        if req.refusal is not None:
            return refuse(req.refusal.status, ErrorCode.BAD_REQUEST, req.refusal.reason,
                          req.refusal.headers)
        origin, allowed = req.headers.get("origin"), self.config.allowed_origins
        if origin is not None and allowed and origin not in allowed and "*" not in allowed:
            return refuse(403, ErrorCode.FORBIDDEN, f"origin {origin[:200]!r} is not allowed")
        if self.draining:
            return unavailable("worker is draining")
        if len(self.connections) >= self.config.max_connections:
            return unavailable("worker is at its connection limit")
        codec = negotiate(req.subprotocols)
        if codec is None:
            return refuse(400, ErrorCode.BAD_REQUEST,
                          "unsupported subprotocol: offer mc.v1.json or mc.v1.msgpack")
        subprotocol = codec.name if req.subprotocols else None
        try:
            who = identify(kind, path[len(CHAT_PREFIX):] if kind == CHAT else None, req.query, req.headers,
                           tokens=self._tokens, api_keys=self._api_keys)
        except Refusal as exc:
            return refuse(exc.status, exc.code, exc.reason)
        accept = Accept(kind, codec, subprotocol, who.client, who.device, who.tags, who.name,
                        session=who.session, auth=who.claims, key=who.key)
        if kind != CHAT:
            return accept
        session = accept.session
        assert session is not None
        if session in self.rooms:
            return self._room_admits(accept)
        if not self.clustered:  # standalone: this worker owns every session it is asked to open
            if who.mode == "open":
                return accept
            return refuse(404, ErrorCode.NOT_FOUND, f"no chat session {session!r}")
        return Locate(session, who.mode == "open", req.raw_query, accept)

    def located(self, locate: Locate, outcome: Owned | str | LocateFailed, now: float) -> Accept | Respond:
        """Resume a Locate: Owned (this worker owns it), the owner's URL, or a failure."""
        answer: Answer
        if isinstance(outcome, LocateFailed):
            answer = (refuse(404, ErrorCode.NOT_FOUND, f"no chat session {locate.session!r}")
                      if outcome.not_found else unavailable(f"cannot locate the session: {outcome.reason}"))
        elif isinstance(outcome, str):
            query = f"?{locate.raw_query}" if locate.raw_query else ""
            answer = redirect(f"{outcome}{CHAT_PREFIX}{locate.session}{query}")
        else:
            answer = self._room_admits(attrs.evolve(locate.accept, seq=outcome.seq))
        if isinstance(answer, Respond):
            self.stats.rejected += 1
            refused = self.stats.refused
            refused[answer.status] = refused.get(answer.status, 0) + 1
        return answer

    def _room_admits(self, accept: Accept) -> Accept | Respond:
        room = self.rooms.get(accept.session)  # type: ignore[arg-type]
        if (
            room is not None
            and len(room) >= self.rooms.max_members
            and not room.holds(accept.client, accept.device)
        ):
            return refuse(409, ErrorCode.FORBIDDEN, "chat session is full")
        return accept

    # ========================================================= connections

    def open(self, accept: Accept, now: float, make: Callable[..., P]) -> P:
        """The handshake was answered with 101: build the connection (``make`` is
        the shell's class, given the core's fields) and send its ``welcome``."""
        cfg = self.config
        conn = make(
            accept.kind, client=accept.client, device=accept.device, tags=accept.tags,
            name=accept.name, codec=accept.codec, max_message=cfg.max_frame,
            max_fragments=cfg.max_fragments, now=now, state=HANDSHAKING,
        )
        conn.state = advance(conn.state, Event.ACCEPT)
        conn.auth = accept.auth
        conn.key = accept.key
        conn.ping_slot = self._ping_slot()
        self.connections.add(conn)
        kinds = self.kind_counts
        kinds[conn.kind] = kinds.get(conn.kind, 0) + 1
        opened = self.stats.opened
        opened[conn.kind] = opened.get(conn.kind, 0) + 1
        welcome: dict[str, Any] = {"worker": self.id, "heartbeat": cfg.heartbeat}
        if conn.kind == APP:
            old = self.hub.attach_app(conn)
            if old is not None:
                self.close(old, CloseCode.REPLACED, "replaced by a newer connection", now)
            self._announce(conn, now)
        elif conn.kind == CONSUMER:
            self.hub.attach_consumer(conn)
            self._reply(conn, Welcome(name=conn.name, **welcome))
        else:
            room, new_client, old = self.rooms.join(accept.session, conn, now)  # type: ignore[arg-type]
            room.seq = max(room.seq, accept.seq)
            self._reply(conn, Welcome(session=room.session, client=conn.client,
                                      members=tuple(room.members()), **welcome))
            if old is not None:
                self.close(old, CloseCode.REPLACED, "replaced by a newer connection", now)
            if new_client:
                self._fan_out(Joined(conn.client).to_wire(), room.others(conn))
        return conn

    def closed(self, conn: Peer, now: float) -> None:
        """The connection's socket is gone: forget it everywhere."""
        if conn.state is OPEN:  # gone without a close frame either way
            closes = self.stats.closes
            closes[1006] = closes.get(1006, 0) + 1
        conn.state = advance(conn.state, Event.LOST)
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.kind_counts[conn.kind] -= 1
        if conn.kind == CHAT:
            room = conn.room
            if room is not None and room.remove(conn, now):
                self._fan_out(Left(conn.client).to_wire(), room.peers())
        elif self.hub.detach(conn) and conn.kind == APP:
            self._presence_change(conn.client, conn.device, False)
        self._check_drained()

    def close(self, conn: Peer, code: int, reason: str, now: float) -> None:
        """Start the close handshake; the client has ``close_timeout`` to answer."""
        if conn.state is not OPEN:
            return
        closes = self.stats.closes
        closes[code] = closes.get(code, 0) + 1
        self.sink.close(conn, code, reason)
        conn.state = advance(conn.state, Event.SEND_CLOSE)
        self.hub.left_open(conn)
        conn.close_at = now + self.config.close_timeout
        heapq.heappush(self._closes, (conn.close_at, next(self._order), conn))
        if code != CloseCode.NORMAL:
            log.debug("closing %r with %d: %s", conn, code, reason)

    def _fail(self, conn: Peer, code: int, reason: str, now: float) -> None:
        """Close and stop reading at once (RFC 6455 7.1.7: fail the connection)."""
        if conn.state is OPEN:
            closes = self.stats.closes
            closes[code] = closes.get(code, 0) + 1
            self.sink.close(conn, code, reason)
        conn.state = advance(conn.state, Event.ABORT)
        self.hub.left_open(conn)
        self.sink.drop(conn)

    def overflowed(self, conn: Peer, now: float) -> None:
        """The Sink could not queue more for ``conn`` (PROTOCOL.md: 4029)."""
        if conn.state is OPEN:
            self.stats.overflows += 1
            log.info("slow consumer %r: outbound queue overflow, closing with 4029", conn)
            self.close(conn, CloseCode.SLOW, "outbound queue overflow", now)

    def close_all(self, code: int, reason: str, now: float) -> None:
        for conn in list(self.connections):
            self.close(conn, code, reason, now)

    def drain(self, now: float) -> None:
        """Refuse new connections (503), hand the chat sessions over, then close
        every connection with 4503 at ``drain_rate``, chat members first."""
        if self.draining:
            return
        self.draining = True
        self.drained = False
        log.info("draining: %d connections, %d chat sessions", len(self.connections), len(self.rooms))
        members = [c for c in self.connections if c.kind == CHAT]
        if members and self.linked and self.sink.send_control(
            HandOff({room.session: room.seq for room in self.rooms.all()})
        ):
            self._handoff_until = now + HANDOFF_WAIT  # the members wait for HandedOff
        else:
            self._pacer.add(members, "worker draining", now)
        self._pacer.add([c for c in self.connections if c.kind != CHAT], "worker draining", now)
        self._check_drained()

    def _handed_off(self, now: float) -> None:
        """The master gave the sessions new owners: the members may reconnect now."""
        if self._handoff_until is None:
            return
        self._handoff_until = None
        log.info("chat sessions handed over; closing their members")
        self._pacer.add([c for c in self.connections if c.kind == CHAT], "session moved", now, first=True)

    def undrain(self) -> None:
        """Back into service (DELETE /v1/workers/{id}/drain)."""
        if self.draining:
            log.info("undrained: taking connections again")
        self.draining = False
        self.drained = False
        self._handoff_until = None
        self._pacer.clear()

    def shed(self, count: int, now: float) -> None:
        """Rebalance: close ``count`` idle app connections (no chat, longest idle first)."""
        if self.draining:
            return  # everything goes anyway
        idle = sorted((c for c in self.connections if c.kind == APP and c.state is OPEN),
                      key=lambda c: c.last_seen)[:count]
        log.info("rebalancing: shedding %d app connections", len(idle))
        self._pacer.clear()  # a newer count replaces what an earlier one left to do
        self._pacer.add(idle, "rebalancing", now)

    def _check_drained(self) -> None:
        if self.draining and not self.drained and not self.connections:
            self.drained = True
            log.info("drained: the last connection is gone")
            self.sink.send_control(Drained())

    def drop_session(self, session: str, now: float) -> None:
        """Stop hosting ``session`` (another worker owns it): its members reconnect (4503)."""
        room = self.rooms.drop(session)
        if room is not None:
            self._members_sent.pop(session, None)
            for peer in list(room.peers()):
                self.close(peer, CloseCode.DRAINING, "session moved", now)

    # ============================================================ receiving

    def received(self, conn: Peer, data: bytes, now: float) -> None:
        """Bytes read from ``conn``: frames are parsed and acted on in order."""
        conn.last_seen = now
        self._read_ms = 0
        try:
            events = conn.parser.feed(data)
        except WebSocketError as exc:
            self._dispatch(conn, exc.events, now)
            self._fail(conn, exc.close_code, exc.reason, now)
            return
        self._dispatch(conn, events, now)

    def _dispatch(self, conn: Peer, events: list[tuple[int, Any]], now: float) -> None:
        for op, payload in events:
            if conn.state is CLOSED:
                return
            if op < OP_CLOSE:  # a data frame: OP_TEXT or OP_BINARY
                if conn.state is OPEN:
                    self._frame(conn, payload, now)
            elif op == OP_PING:
                if conn.state is OPEN:
                    self._write(conn, encode_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                if conn.state is OPEN:  # the client closes first: echo its code, then go
                    code = payload[0] or CloseCode.NORMAL
                    closes = self.stats.closes
                    closes[code] = closes.get(code, 0) + 1
                    self.sink.close(conn, code if code >= 3000 or code in (1000, 1001) else 1000, "")
                conn.state = advance(conn.state, Event.CLOSE_RECEIVED)
                self.hub.left_open(conn)
                self.sink.drop(conn)
            # OP_PONG: any frame counts as activity, nothing else to do

    def _frame(self, conn: Peer, payload: bytes, now: float) -> None:
        """One client frame: decode, validate, act; never raises.

        A chat ``send`` (the relay's hot path) is validated and relayed right
        here, straight from the decoded map (no typed object, no further call
        per message but the encode and the write); every other frame becomes
        its typed object first.
        """
        stats = self.stats
        stats.messages_in += 1
        frame: Any = None
        rid: str | None = None  # a validated send's id, for an error after validation
        try:
            obj = conn.codec.decode(payload)
            if conn.kind == CHAT and type(obj) is dict and obj.get("type") == "send":
                # the session's next seq to every other member
                if "id" in obj or "trace" in obj or "data" not in obj:
                    rid, data, trace = send_fields(obj)
                else:  # the bare send, the common case: send_fields would give (None, data, None)
                    data = obj["data"]
                    trace = None
                stats.received_chat += 1
                if self._publish_rate:
                    self._limit(conn, self._publish_rate, rid, now)
                room = conn.room
                assert room is not None  # a chat connection joins its room in open()
                seq = room.next_seq()
                if trace is None:
                    trace = self._trace()
                ts = self._read_ms
                if not ts:
                    ts = self._read_ms = self._wall_ms()
                # chat_wire's map, inlined (here the trace is always set)
                wire = {"type": "chat", "from": conn.client, "data": data, "seq": seq, "ts": ts,
                        "trace": trace}
                others = room.others(conn)
                if len(others) == 1:  # a room of two, the common chat: one encode, no codec table
                    peer = others[0]
                    codec = peer.codec  # _encode, inlined
                    op = OP_TEXT if codec is JSON else OP_BINARY
                    self._write(peer, encode_frame(op, codec.encode(wire)))
                    stats.messages_out += 1
                    stats.delivered_chat += 1
                else:
                    stats.delivered_chat += self._fan_out(wire, others)
                if self._debug:
                    log.debug("chat %s seq %d", room.session, seq,
                              extra={"trace": trace, "client": conn.client, "session": room.session})
                if rid is not None:
                    self._reply(conn, Ack(rid, seq=seq))
                return
            table, actions = self._tables[conn.kind]
            frame = parse_request(obj, table)
            actions[type(frame)](conn, frame, now)
        except ProtocolError as exc:
            if exc.close_code is not None:
                self.close(conn, exc.close_code, exc.reason, now)
            else:
                if exc.request_id is not None:
                    rid = exc.request_id
                elif frame is not None:
                    rid = getattr(frame, "id", None)
                self.stats.errors += 1
                self._reply(conn, Error(exc.code, exc.reason, rid))
        except Exception:
            log.exception("frame handling failed on %r", conn)
            self.stats.errors += 1
            self._reply(conn, Error(ErrorCode.INTERNAL, "internal error", getattr(frame, "id", rid)))

    def _reply(self, conn: Peer, frame: Any) -> None:
        """Encode one frame for one connection."""
        codec = conn.codec
        payload = codec.encode(frame.to_wire())
        self._write(conn, encode_frame(OP_TEXT if codec is JSON else OP_BINARY, payload))

    def _ack(self, conn: Peer, rid: str | None, **fields: Any) -> None:
        if rid is not None:
            self._reply(conn, Ack(rid, **fields))

    def _fan_out(self, obj: dict[str, Any], peers: Iterable[Peer]) -> int:
        """Write ``obj`` to every peer, encoding once per codec; returns the count.

        Per recipient only a codec check and one ``Sink.write`` call.
        """
        write = self._write
        frames: dict[Codec, bytes] = {}
        count = 0
        for peer in peers:
            codec = peer.codec
            frame = frames.get(codec)
            if frame is None:
                frame = frames[codec] = _encode(codec, obj)
            write(peer, frame)
            count += 1
        self.stats.messages_out += count
        return count

    # ------------------------------------------------------------ handlers

    def _ping(self, conn: Peer, frame: Ping, now: float) -> None:
        self._reply(conn, Pong(frame.id))

    def _refresh(self, conn: Peer, frame: Refresh, now: float) -> None:
        """A new token for the same client; a bad one leaves the old expiry in force."""
        if self._tokens is not None:
            try:
                claims = self._tokens.verify(frame.token)
            except TokenError as exc:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, exc.reason, request_id=frame.id) from None
            if claims.sub != conn.client:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "the new token is for another client",
                                    request_id=frame.id)
            conn.auth = claims
        self._ack(conn, frame.id)

    def _limit(self, conn: Peer, rate: float, rid: str | None, now: float) -> None:
        """Spend one of the connection's tokens; ``rate_limited`` (with the id) when none is left."""
        bucket = conn.bucket
        if bucket is None:
            bucket = conn.bucket = Bucket(rate, now)
        if not bucket.take(rate, now):
            self.stats.rate_limited += 1
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"at most {rate:g} per second", request_id=rid)

    def _publish(self, conn: Peer, frame: Publish, now: float) -> None:
        if conn.auth is not None and not conn.auth.may_publish(frame.topic):
            reason = f"the token does not allow publishing to {frame.topic!r}"
            raise ProtocolError(ErrorCode.FORBIDDEN, reason, request_id=frame.id)
        self.stats.received_publish += 1
        if self._publish_rate:
            self._limit(conn, self._publish_rate, frame.id, now)
        hub = self.hub
        route = hub.route(frame.topic, frame.key)
        picks = hub.pick(route) if route.groups else NO_PEERS
        count = route.size + len(picks)
        trace = frame.trace or self._trace()
        if count:
            self.stats.delivered_publish += count
            self.seq += 1
            ts = self._read_ms
            if not ts:
                ts = self._read_ms = self._wall_ms()
            obj = message_wire(frame.topic, frame.data, conn.sender, self.id, self.seq, ts, frame.key, trace)
            frames: dict[Codec, bytes] = {}
            write_many = self._write_many
            for codec, peers in route.plain:
                data = frames[codec] = _encode(codec, obj)
                write_many(peers, data)
            for peer in picks:
                data = frames.get(peer.codec)  # type: ignore[assignment]
                if data is None:
                    data = frames[peer.codec] = _encode(peer.codec, obj)
                self._write(peer, data)
            self.stats.messages_out += count
        if self._debug:
            log.debug("publish on %s delivered to %d", frame.topic, count,
                      extra={"trace": trace, "client": conn.client, "device": conn.device})
        if frame.id is not None:
            self._reply(conn, Ack(frame.id, delivered=count))

    def _subscribe(self, conn: Peer, frame: Subscribe, now: float) -> None:
        try:
            self.hub.subscribe(conn, frame.topic, frame.group, frame.key)
        except SubscriptionLimit as exc:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"a connection may hold at most {exc.args[0]} subscriptions",
                request_id=frame.id,
            ) from None
        self._ack(conn, frame.id)

    def _unsubscribe(self, conn: Peer, frame: Unsubscribe, now: float) -> None:
        self.hub.unsubscribe(conn, frame.topic, frame.group)
        self._ack(conn, frame.id)

    def _pause(self, conn: Peer, frame: Pause, now: float) -> None:
        self.hub.set_paused(conn, True)
        self._ack(conn, frame.id)

    def _resume(self, conn: Peer, frame: Resume, now: float) -> None:
        self.hub.set_paused(conn, False)
        self._ack(conn, frame.id)

    def _notify(self, conn: Peer, frame: Notify, now: float) -> None:
        self.stats.received_notify += 1
        if self._notify_rate:
            self._limit(conn, self._notify_rate, frame.id, now)
        note = Notification(frame.data, conn.name, frame.id if frame.id is not None else self._new_id(),
                            frame.trace or self._trace())
        local = self._deliver(frame.to, note)
        if not self.linked:
            self._ack(conn, frame.id, delivered=local)
            return
        cid = next(self._ids)
        if not self.sink.send_control(ForwardNotify(cid, frame.to, note)):
            self._ack(conn, frame.id, delivered=local)
        elif frame.id is not None:
            self._forwarded[cid] = (conn, frame.id, local, now + NOTIFY_TIMEOUT)

    def _deliver(self, target: Target, note: Notification) -> int:
        """Write a notify frame to the matching apps on this worker; the count."""
        if self._debug:
            log.debug("notify %s from %s for %s", note.id, note.sender, target.to_wire(),
                      extra={"trace": note.trace})
        count = self._fan_out(notification_wire(note.data, note.sender, note.id, note.trace),
                              self.hub.route_notify(target))
        self.stats.delivered_notify += count
        return count

    def _new_id(self) -> str:
        """A notify id for senders that gave none: unique per worker run."""
        return f"{self.id}-{self._instance:x}-{next(self._ids)}"

    # ================================================================ timers

    def next_timer(self) -> float:
        """When ``tick`` next has something to do."""
        when = self._next_scan
        if self._closes:
            when = min(when, self._closes[0][0])
        if self._forwarded:
            when = min(when, next(iter(self._forwarded.values()))[3])
        if self._welcomes:
            when = min(when, next(iter(self._welcomes.values()))[1])
        pace = self._pacer.next_step()
        if pace is not None:
            when = min(when, pace)
        if self._handoff_until is not None:
            when = min(when, self._handoff_until)
        return when

    def tick(self, now: float) -> None:
        """Close timeouts and notify waits when due; every scan period: pings, idle closes, linger."""
        closes = self._closes
        while closes and closes[0][0] <= now:
            conn = heapq.heappop(closes)[2]
            if conn.state is CLOSING and conn.close_at <= now:
                conn.state = advance(conn.state, Event.TIMEOUT)
                self.sink.drop(conn)
        forwarded = self._forwarded
        while forwarded:  # insertion order is deadline order (now + a constant)
            cid, (conn, rid, local, until) = next(iter(forwarded.items()))
            if until > now:
                break
            del forwarded[cid]
            self._ack(conn, rid, delivered=local)
        welcomes = self._welcomes
        while welcomes:  # insertion order is deadline order too
            cid, (conn, until) = next(iter(welcomes.items()))
            if until > now:
                break
            del welcomes[cid]
            self._welcome_app(conn, local=True)
        if self._handoff_until is not None and now >= self._handoff_until:
            log.warning("the master did not confirm the session hand-off; closing members anyway")
            self._handed_off(now)
        for conn, reason in self._pacer.due(now):
            self.close(conn, CloseCode.DRAINING, reason, now)
        if now < self._next_scan:
            return
        # the slots take one heartbeat: a late scan does not push the next ones back
        period = self._scan_period
        self._next_scan = self._next_scan + period if now < self._next_scan + period else now + period
        phase = self._ping_phase
        self._ping_phase = (phase + 1) % self._ping_slots
        deadline = now - 3 * self.config.heartbeat
        write = self._write
        wall = self._wall_ms() / 1000 if self._tokens is not None else 0.0
        for conn in list(self.connections):
            if conn.state is not OPEN:
                continue
            if conn.last_seen < deadline:
                self.stats.idle_closes += 1
                self.close(conn, CloseCode.IDLE, "idle timeout", now)
            elif conn.auth is not None and conn.auth.exp <= wall:
                self.stats.token_expiries += 1
                self.close(conn, CloseCode.TOKEN_EXPIRED, "token expired", now)
            elif conn.ping_slot == phase:
                write(conn, PING_FRAME)
        for session in self.rooms.expire(now):
            self._members_sent.pop(session, None)
            self.sink.send_control(Release(session))

    # ========================================================== control link

    def link_up(self) -> None:
        self.linked = True

    def link_down(self) -> None:
        """The control link dropped: waiting notifies are acked with their local counts."""
        self.linked = False
        forwarded, self._forwarded = self._forwarded, {}
        for conn, rid, local, _ in forwarded.values():
            self._ack(conn, rid, delivered=local)
        welcomes, self._welcomes = self._welcomes, {}
        for conn, _ in welcomes.values():
            self._welcome_app(conn, local=True)

    def registration(self, url: str) -> Register:
        """The full state to register with (also after a master restart)."""
        sessions = self.rooms.sessions()
        # the first PRESENCE_CHUNK apps ride in the registration, the rest follow
        # as presence once it is taken (``registered``): frames stay bounded
        first = sorted((p.client, p.device) for p in self.hub.apps())[:PRESENCE_CHUNK]
        self._announced = set(first)
        self._members_sent = sessions
        return Register(self.id, url, self.config.max_connections, sessions, tuple(first), self.draining)

    def registered(self, reply: Registered, now: float) -> None:
        """The master took the registration: drop the sessions it gave to others,
        and queue what changed while the registration was in flight."""
        for session in reply.conflicts:
            self.drop_session(session, now)
        current = {(p.client, p.device) for p in self.hub.apps()}
        self.resync_needed = False
        self.link_up()
        added = sorted(current - self._announced)
        removed = sorted(self._announced - current)
        for i in range(0, max(len(added), len(removed)), PRESENCE_CHUNK):
            self._send_presence(Presence(tuple(added[i:i + PRESENCE_CHUNK]),
                                         tuple(removed[i:i + PRESENCE_CHUNK])))

    def report(self, now: float, cpu_percent: float, rss_bytes: int) -> list[ControlMessage]:
        """What the periodic report sends: presence changes, then the heartbeat."""
        out: list[ControlMessage] = []
        current = self.rooms.sessions()
        members = {s: n for s, n in current.items() if self._members_sent.get(s) != n}
        self._members_sent = current
        if members:
            out.append(Presence(members=members))
        out.append(Heartbeat(self._metrics(now, cpu_percent, rss_bytes)))
        return out

    def _metrics(self, now: float, cpu_percent: float, rss_bytes: int) -> Metrics:
        s = self.stats
        last = self._last_report
        self._last_report = (now, s.messages_in, s.messages_out)
        in_rate = out_rate = 0.0
        if last is not None and now > last[0]:
            span = now - last[0]
            in_rate = max(0, s.messages_in - last[1]) / span
            out_rate = max(0, s.messages_out - last[2]) / span
        return Metrics(
            connections=len(self.connections), sessions=len(self.rooms),
            subscriptions=self.hub.subscription_count, msgs_in_rate=in_rate, msgs_out_rate=out_rate,
            cpu_percent=cpu_percent, rss_bytes=rss_bytes, overflows=s.overflows,
            idle_closes=s.idle_closes, rejected=s.rejected, errors=s.errors,
            messages_in=s.messages_in, messages_out=s.messages_out, rate_limited=s.rate_limited,
        )

    def _announce(self, conn: Peer, now: float) -> None:
        """Presence before welcome (PROTOCOL.md "Consistency"): the welcome waits
        until the master has recorded the connection, at most ``presence_wait``;
        the link's writer batches these with all other control traffic."""
        if not self.clustered:
            self._welcome_app(conn, local=False)
            return
        cid = next(self._ids)
        if self.linked and self._send_presence(Presence(((conn.client, conn.device),), id=cid)):
            self._welcomes[cid] = (conn, now + self.config.presence_wait)
        else:  # announced with the next registration
            self._welcome_app(conn, local=True)

    def _welcome_app(self, conn: Peer, *, local: bool) -> None:
        if conn.state is OPEN:
            self._reply(conn, Welcome(self.id, self.config.heartbeat, client=conn.client,
                                      device=conn.device, presence="local" if local else None))

    def _presence_change(self, client: str, device: str, up: bool) -> None:
        if self.linked:  # else the next registration carries the full list
            self._send_presence(Presence(removed=((client, device),)))

    def _send_presence(self, message: Presence) -> bool:
        if self.sink.send_control(message):
            return True
        self.resync_needed = True  # the change is lost: register again in full
        return False

    def control(self, message: ControlMessage, now: float) -> None:
        """A command or a reply from the master."""
        if isinstance(message, Deliver):
            count = self._deliver(message.to, message.frame)
            self.sink.send_control(Delivered(message.id, count))
        elif isinstance(message, Notified):
            waiting = self._forwarded.pop(message.id, None)
            if waiting is not None:
                conn, rid, local, _ = waiting
                self._ack(conn, rid, delivered=local + message.delivered)
        elif isinstance(message, Kick):
            self.kick(message.client, message.device, now)
        elif isinstance(message, Recorded):
            pending = self._welcomes.pop(message.id, None)
            if pending is not None:
                self._welcome_app(pending[0], local=False)
        elif isinstance(message, Drain):
            log.info("the master asked this worker to drain")
            self.drain(now)
        elif isinstance(message, HandedOff):
            self._handed_off(now)
        elif isinstance(message, Undrain):
            self.undrain()
        elif isinstance(message, Shed):
            self.shed(message.count, now)
        elif isinstance(message, Adopt):
            room = self.rooms.open(message.session, now)
            room.seq = max(room.seq, message.seq)
            log.info("adopted chat session %s at seq %d", message.session, message.seq)
        elif isinstance(message, Registered):
            self.registered(message, now)

    def kick(self, client: str, device: str, now: float) -> bool:
        """Close the app connection (client, device) with 4009 (it connected elsewhere)."""
        peer = self.hub.app(client, device)
        if peer is None:
            return False
        self.hub.detach(peer)
        self.close(peer, CloseCode.REPLACED, "replaced by a newer connection", now)
        return True


def _encode(codec: Codec, obj: dict[str, Any]) -> bytes:
    """One frame of ``obj`` for every connection using ``codec``."""
    return encode_frame(OP_TEXT if codec is JSON else OP_BINARY, codec.encode(obj))


def _ignore(conn: Peer, frame: Any, now: float) -> None:
    return None


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if not n:
            return out


# The counter's last two base-36 digits come from tables: one string concatenation
# per trace id instead of a divmod loop (a made-up trace rides in most chat frames).
_LOW_SHORT = [_base36(n) for n in range(36 * 36)]
_LOW_PADDED = [s.rjust(2, "0") for s in _LOW_SHORT]


def _trace_ids(prefix: str) -> Iterator[str]:
    """Trace ids for frames that came without one: a prefix per worker run (from its id
    and start) and a base-36 counter from 1; clients that need global uniqueness send
    their own."""
    for low in _LOW_SHORT[1:]:
        yield prefix + low
    for high in itertools.count(1):
        head = prefix + _base36(high)
        for low in _LOW_PADDED:
            yield head + low

