"""The control link between a worker and the master: every message as an attrs class.

A worker opens ``ws://MASTER/v1/control`` and keeps it open. Each message is
a map with a ``type``; ``id`` pairs a request with its reply. A frame carries
one message or a batch (a list of up to MAX_BATCH): each side's writer sends
everything queued at once, which keeps the per-frame cost of the ASGI stack
off the claim path. Workers send msgpack in binary frames (notify ``data``
may hold bytes); the master also accepts JSON text frames (tools,
benchmarks) and answers in the codec of the link's first message.

As for client frames (mc/protocol/frames.py), messages are parsed once, at
the edge, through one table per direction: :data:`TO_MASTER` is what a
master accepts, :data:`TO_WORKER` what a worker accepts. A message that
does not validate raises ProtocolError (close code 4000); each side logs and
counts it, and neither ever crashes on one.

worker -> master
  register   {worker, url, capacity, sessions: {session: members}, presence: [[client, device]],
              draining}            (draining: a drain survives a master restart)
  heartbeat  {metrics: {connections, sessions, subscriptions, msgs_in_rate, msgs_out_rate,
              cpu_percent, rss_bytes, overflows, idle_closes, rejected, errors}}
  presence   {added: [[client, device]], removed: [[client, device]], members: {session: n}, id?}
                                      -> recorded {id}   (with an id: the welcome waits for it)
  claim      {id, session}            -> owner {id, worker, url}
  lookup     {id, session}            -> owner {id, worker|null, url|null}
  release    {session}
  notify     {id, to, frame}          -> notified {id, delivered}   (to the other workers)
  delivered  {id, count}              (the reply to ``deliver``)
  leave      {id}                     -> left {id}   (orderly shutdown: forget me now)
  handoff    {sessions: {session: seq}} -> handedoff {}  (draining: give my sessions new owners)
  drained    {}                       (a draining worker's last connection is gone)

master -> worker
  registered {lease, interval, conflicts: [session]}   (close those sessions with 4503)
  reregister {}                        (the master forgot this worker: register again)
  deliver    {id, to, frame}           (write ``frame`` to the matching local apps)
  kick       {client, device}          (close that app connection with 4009)
  drain      {}                        (refuse new connections, hand sessions off, close the rest with 4503)
  undrain    {}                        (back into service)
  adopt      {session, seq}            (you own this session now; its seq goes on from here)
  shed       {count}                   (rebalance: close that many idle app connections with 4503)
  owner      {id, worker, url, seq}    (the reply to claim and lookup; seq: where a handed-off session is)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from .errors import ProtocolError, violation
from .frames import Notification, Target, notification_wire, parse_server_frame
from .names import is_name

CONTROL_PATH = "/v1/control"
#: messages in one frame: a frame holds a map, or a list of up to this many maps
MAX_BATCH = 256
#: longest worker URL accepted at registration
MAX_URL = 2048
#: largest control frame either end reads (both directions; the HTTP body limit
#: ``max_body`` is for clients). A worker's ``register`` carries all its chat
#: sessions: up to 19,990 of 128-character names is ~3 MiB, so a 64 KiB limit
#: closed it with 1009 at every attempt and the worker never came back after a
#: master restart (``mc bench million`` found it).
MAX_CONTROL_FRAME = 16 * 1024 * 1024
#: a writer splits a batch whose frame would pass this (one message is sent whole)
SPLIT_FRAME = 1024 * 1024
#: [client, device] pairs in one ``register`` or ``presence``: a worker with more
#: apps registers with the first ones and sends the rest as presence messages
PRESENCE_CHUNK = 1000


# --------------------------------------------------------------- validators


def _check(ok: Callable[[Any], bool], what: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not ok(value):
            raise ValueError(f"{attribute.name} must be {what}")

    return validate


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_rate(v: Any) -> bool:
    return type(v) in (int, float) and v >= 0


def _is_url(v: Any) -> bool:
    """A ws(s):// URL with a host, printable ASCII only (it ends up in Location headers)."""
    if type(v) is not str or len(v) > MAX_URL or not v.isascii() or not v.isprintable() or " " in v:
        return False
    scheme, sep, rest = v.partition("://")
    host = rest.split("/", 1)[0]
    return sep == "://" and scheme in ("ws", "wss") and bool(host) and not host.startswith(":")


def _is_sessions(v: Any) -> bool:
    return type(v) is dict and all(is_name(k) and _is_count(n) for k, n in v.items())


def _is_pairs(v: Any) -> bool:
    return type(v) is tuple and all(
        type(p) is tuple and len(p) == 2 and is_name(p[0]) and is_name(p[1]) for p in v
    )


def _is_names(v: Any) -> bool:
    return type(v) is tuple and all(is_name(x) for x in v)


NAME = _check(is_name, "a name")
ID = _check(_is_int, "an integer request id")
COUNT = _check(_is_count, "a non-negative integer")
#: labelled counters in a heartbeat: "family.label" -> count, e.g. "closed.4009"
MAX_COUNTERS = 256
COUNTERS = _check(lambda v: type(v) is dict and len(v) <= MAX_COUNTERS and all(
    type(k) is str and 0 < len(k) <= 64 and _is_count(n) for k, n in v.items()),
    f"a map of at most {MAX_COUNTERS} counter names -> non-negative integers")
RATE = _check(_is_rate, "a non-negative number")
URL = _check(_is_url, "a ws:// or wss:// URL without control characters")
SESSIONS = _check(_is_sessions, "a map of session name -> member count")
PAIRS = _check(_is_pairs, "a list of [client, device] names")
NAMES = _check(_is_names, "a list of names")
FLAG = _check(lambda v: type(v) is bool, "true or false")
OPT_NAME = _check(lambda v: v is None or is_name(v), "a name or null")
OPT_URL = _check(lambda v: v is None or _is_url(v), "a ws:// URL or null")
OPT_ID = _check(lambda v: v is None or _is_int(v), "an integer request id or null")


def _pairs_in(v: Any) -> Any:
    """[[client, device], ...] from the wire as a tuple of tuples (else left for the validator)."""
    if type(v) is list and all(type(p) is list for p in v):
        return tuple(tuple(p) for p in v)
    return v


def _names_in(v: Any) -> Any:
    return tuple(v) if type(v) is list else v


def _pairs_out(v: tuple[tuple[str, str], ...]) -> list[list[str]]:
    return [list(p) for p in v]


def _wire(value: Any) -> Any:
    return value.to_wire() if hasattr(value, "to_wire") else value


# --------------------------------------------------------------- messages


class ControlMessage:
    """Base of every control message: ``to_wire`` and ``parse`` derived from the fields.

    A field's ``metadata`` may carry ``wire_in`` (wire value -> field value,
    before validation) and ``wire_out`` (field value -> wire value).
    """

    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in attrs.fields(type(self)):  # type: ignore[arg-type]
            convert = f.metadata.get("wire_out", _wire)
            out[f.name] = convert(getattr(self, f.name))
        return out

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ControlMessage:
        kwargs: dict[str, Any] = {}
        try:  # a field's converter validates too (e.g. the heartbeat's metrics): same error
            for f in attrs.fields(cls):  # type: ignore[arg-type]
                if f.name in obj:
                    convert = f.metadata.get("wire_in")
                    kwargs[f.name] = convert(obj[f.name]) if convert else obj[f.name]
            return cls(**kwargs)
        except (TypeError, ValueError, ProtocolError) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            raise violation(f"control message {cls.TYPE!r}: {reason}") from None


def _pairs_field(default: tuple = ()) -> Any:
    return attrs.field(default=default, validator=PAIRS,
                       metadata={"wire_in": _pairs_in, "wire_out": _pairs_out})


def _target_in(v: Any) -> Target:
    return Target.parse(v)


def _frame_in(v: Any) -> Notification:
    frame = parse_server_frame(v)
    if not isinstance(frame, Notification):
        raise ValueError("frame must be a notify frame")
    return frame


def _frame_out(v: Notification) -> dict[str, Any]:
    return notification_wire(v.data, v.sender, v.id, v.trace)


TARGET_WIRE = {"wire_in": _target_in}
FRAME_WIRE = {"wire_in": _frame_in, "wire_out": _frame_out}


@attrs.frozen
class Metrics:
    """A worker's load figures and counters, as its heartbeat reports them."""

    connections: int = attrs.field(default=0, validator=COUNT)
    sessions: int = attrs.field(default=0, validator=COUNT)
    subscriptions: int = attrs.field(default=0, validator=COUNT)
    msgs_in_rate: float = attrs.field(default=0.0, validator=RATE)
    msgs_out_rate: float = attrs.field(default=0.0, validator=RATE)
    cpu_percent: float = attrs.field(default=0.0, validator=RATE)
    rss_bytes: int = attrs.field(default=0, validator=COUNT)
    #: counters since the worker started: 4029 closes, 4008 closes,
    #: handshakes answered with an HTTP error, ``error`` frames sent
    overflows: int = attrs.field(default=0, validator=COUNT)
    idle_closes: int = attrs.field(default=0, validator=COUNT)
    rejected: int = attrs.field(default=0, validator=COUNT)
    errors: int = attrs.field(default=0, validator=COUNT)
    #: frames received from clients and frames queued for them, since the worker started
    messages_in: int = attrs.field(default=0, validator=COUNT)
    messages_out: int = attrs.field(default=0, validator=COUNT)
    rate_limited: int = attrs.field(default=0, validator=COUNT)
    #: labelled counters since the worker started ("received.publish", "closed.4009",
    #: "refused.503", "opened.app", "delivered.chat", ...); a newer worker may send more
    counters: dict[str, int] = attrs.field(factory=dict, validator=COUNTERS)

    def to_wire(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _metrics_in(v: Any) -> Metrics:
    if type(v) is not dict:
        raise ValueError("metrics must be a map")
    known = {f.name for f in attrs.fields(Metrics)}
    return Metrics(**{k: x for k, x in v.items() if k in known})


# ---- worker -> master


@attrs.frozen
class Register(ControlMessage):
    TYPE = "register"
    worker: str = attrs.field(validator=NAME)
    url: str = attrs.field(validator=URL)
    capacity: int = attrs.field(validator=_check(lambda v: type(v) is int and v >= 1, "at least 1"))
    sessions: dict[str, int] = attrs.field(factory=dict, validator=SESSIONS)
    presence: tuple[tuple[str, str], ...] = _pairs_field()
    draining: bool = attrs.field(default=False, validator=FLAG)


@attrs.frozen
class Heartbeat(ControlMessage):
    TYPE = "heartbeat"
    metrics: Metrics = attrs.field(validator=attrs.validators.instance_of(Metrics),
                                   metadata={"wire_in": _metrics_in})


@attrs.frozen
class Presence(ControlMessage):
    TYPE = "presence"
    added: tuple[tuple[str, str], ...] = _pairs_field()
    removed: tuple[tuple[str, str], ...] = _pairs_field()
    members: dict[str, int] = attrs.field(factory=dict, validator=SESSIONS)
    #: set when the worker waits for ``recorded`` before sending an app its welcome
    id: int | None = attrs.field(default=None, validator=OPT_ID)


@attrs.frozen
class HandOff(ControlMessage):
    """A draining worker's sessions and their last ``seq``, for new owners."""

    TYPE = "handoff"
    sessions: dict[str, int] = attrs.field(factory=dict, validator=SESSIONS)


@attrs.frozen
class Drained(ControlMessage):
    TYPE = "drained"


@attrs.frozen
class Claim(ControlMessage):
    TYPE = "claim"
    id: int = attrs.field(validator=ID)
    session: str = attrs.field(validator=NAME)


@attrs.frozen
class Lookup(ControlMessage):
    TYPE = "lookup"
    id: int = attrs.field(validator=ID)
    session: str = attrs.field(validator=NAME)


@attrs.frozen
class Release(ControlMessage):
    TYPE = "release"
    session: str = attrs.field(validator=NAME)


@attrs.frozen
class _Routed(ControlMessage):
    """A notify on its way to the apps ``to`` selects (its fields, shared by both directions)."""

    id: int = attrs.field(validator=ID)
    to: Target = attrs.field(validator=attrs.validators.instance_of(Target), metadata=TARGET_WIRE)
    frame: Notification = attrs.field(validator=attrs.validators.instance_of(Notification),
                                      metadata=FRAME_WIRE)


@attrs.frozen
class ForwardNotify(_Routed):
    """A consumer's notify, for the matching apps on the other workers."""

    TYPE = "notify"


@attrs.frozen
class Delivered(ControlMessage):
    TYPE = "delivered"
    id: int = attrs.field(validator=ID)
    count: int = attrs.field(validator=COUNT)


@attrs.frozen
class Leave(ControlMessage):
    TYPE = "leave"
    id: int = attrs.field(validator=ID)


# ---- master -> worker


@attrs.frozen
class Registered(ControlMessage):
    TYPE = "registered"
    lease: float = attrs.field(validator=RATE)
    interval: float = attrs.field(validator=_check(lambda v: type(v) in (int, float) and v > 0, "positive"))
    conflicts: tuple[str, ...] = attrs.field(default=(), validator=NAMES,
                                             metadata={"wire_in": _names_in, "wire_out": list})


@attrs.frozen
class Reregister(ControlMessage):
    TYPE = "reregister"


@attrs.frozen
class Owner(ControlMessage):
    """The reply to claim and lookup: the owner, or nulls (no owner / claim refused)."""

    TYPE = "owner"
    id: int = attrs.field(validator=ID)
    worker: str | None = attrs.field(default=None, validator=OPT_NAME)
    url: str | None = attrs.field(default=None, validator=OPT_URL)
    #: the last seq of a session handed over from a draining owner (0: none)
    seq: int = attrs.field(default=0, validator=COUNT)


@attrs.frozen
class Recorded(ControlMessage):
    """The master recorded the connections of a ``presence`` with this id."""

    TYPE = "recorded"
    id: int = attrs.field(validator=ID)


@attrs.frozen
class HandedOff(ControlMessage):
    """Every session of the draining worker has a new owner (or none): close its members."""

    TYPE = "handedoff"


@attrs.frozen
class Adopt(ControlMessage):
    TYPE = "adopt"
    session: str = attrs.field(validator=NAME)
    seq: int = attrs.field(validator=COUNT)


@attrs.frozen
class Undrain(ControlMessage):
    TYPE = "undrain"


@attrs.frozen
class Shed(ControlMessage):
    TYPE = "shed"
    count: int = attrs.field(validator=COUNT)


@attrs.frozen
class Notified(ControlMessage):
    TYPE = "notified"
    id: int = attrs.field(validator=ID)
    delivered: int = attrs.field(validator=COUNT)


@attrs.frozen
class Left(ControlMessage):
    TYPE = "left"
    id: int = attrs.field(validator=ID)


@attrs.frozen
class Deliver(_Routed):
    """Write ``frame`` to the matching apps on this worker, and answer ``delivered``."""

    TYPE = "deliver"


@attrs.frozen
class Kick(ControlMessage):
    TYPE = "kick"
    client: str = attrs.field(validator=NAME)
    device: str = attrs.field(validator=NAME)


@attrs.frozen
class Drain(ControlMessage):
    TYPE = "drain"


def _table(*classes: type[ControlMessage]) -> dict[str, type[ControlMessage]]:
    return {cls.TYPE: cls for cls in classes}


TO_MASTER = _table(Register, Heartbeat, Presence, Claim, Lookup, Release, ForwardNotify, Delivered, Leave,
                   HandOff, Drained)
TO_WORKER = _table(Registered, Reregister, Owner, Notified, Left, Deliver, Kick, Drain, Recorded, HandedOff,
                   Adopt, Undrain, Shed)


def parse_control(obj: Any, table: Mapping[str, type[ControlMessage]]) -> ControlMessage:
    """One decoded control message, validated against one direction's table."""
    if type(obj) is not dict:
        raise violation("a control message must be a map")
    kind = obj.get("type")
    cls = table.get(kind) if type(kind) is str else None
    if cls is None:
        raise violation(f"unknown control message {kind!r}")
    return cls.parse(obj)


def parse_batch(
    decoded: Any, table: Mapping[str, type[ControlMessage]]
) -> tuple[list[ControlMessage], list[ProtocolError]]:
    """The valid messages of one control frame (a map, or a list of 1 to MAX_BATCH
    maps), and the errors of the invalid ones, which the caller logs and counts:
    one bad message costs only itself, never the link."""
    batch = decoded if type(decoded) is list else [decoded]
    if not 1 <= len(batch) <= MAX_BATCH:
        return [], [violation(f"a control frame holds a map or a list of 1 to {MAX_BATCH} maps")]
    messages: list[ControlMessage] = []
    errors: list[ProtocolError] = []
    for obj in batch:
        try:
            messages.append(parse_control(obj, table))
        except ProtocolError as exc:
            errors.append(exc)
    return messages, errors


def http_to_ws(url: str) -> str:
    """The WebSocket URL of a master given by its http(s) base URL."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url
