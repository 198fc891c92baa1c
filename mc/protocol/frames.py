"""Every frame of PROTOCOL.md as an attrs class, and their validation.

Frames travel as maps (``dict``) produced by a codec; ``parse_*`` turn a map
into a frame or raise :class:`~mc.protocol.errors.ProtocolError`, and
``to_wire`` turns a frame back into a map. Validation lives here, once, so the
worker, the master and the SDKs agree on what is acceptable.

Decisions where PROTOCOL.md is silent (also in docs/protocol.md):

* a ``type`` that mc does not know at all is answered with ``error``
  ``bad_request`` and the connection stays open; a known type sent on the
  wrong endpoint (``subscribe`` on ``/v1/app``) is a protocol violation (4000);
* a frame with no ``type`` (or a non-string one) counts as an unknown type;
* ``trace`` is a string of at most 128 characters, ``key`` and tags are names;
* ``data`` is required (``null`` is a value) in publish, notify and send;
* ``to`` is strict (PROTOCOL.md): unknown keys and ``device`` without
  ``client`` are ``bad_request``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .errors import ErrorCode, ProtocolError, violation
from .names import is_name, is_pattern, is_topic

MAX_ID = 64
MAX_TRACE = 128
MAX_TAGS = 32
MAX_TOKEN = 4096
#: the only keys a notify's ``to`` may carry
TARGET_KEYS = frozenset({"client", "device", "tags"})


def _bad(reason: str, rid: str | None) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, reason, request_id=rid)


def _omit_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------
# the notify target


@attrs.frozen(slots=True)
class Target:
    """Which app connections a notify reaches; set keys combine with AND.

    All fields ``None`` is a broadcast. ``tags`` matches apps carrying any of
    the listed tags.
    """

    client: str | None = None
    device: str | None = None
    tags: tuple[str, ...] | None = None

    @property
    def is_broadcast(self) -> bool:
        return self.client is None and self.device is None and self.tags is None

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.client is not None:
            d["client"] = self.client
        if self.device is not None:
            d["device"] = self.device
        if self.tags is not None:
            d["tags"] = list(self.tags)
        return d

    @classmethod
    def parse(cls, value: Any, rid: str | None = None) -> Target:
        """Validate a ``to`` map (absent/``None``/``{}`` means everyone).

        Strict (PROTOCOL.md): a key other than ``client``, ``device`` and
        ``tags`` (a typo such as ``clinet``) or a ``device`` without a
        ``client`` is ``bad_request``, so a typo can never become a broadcast.
        A key set to ``null`` counts as absent, but an unknown key is refused
        whatever its value.
        """
        if value is None:
            return BROADCAST
        if type(value) is not dict:
            raise _bad("to must be an object", rid)
        unknown = [k for k in value if k not in TARGET_KEYS]
        if unknown:
            names = ", ".join(repr(k)[:40] for k in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
            raise _bad(f"to: unknown key {names} (allowed: client, device, tags)", rid)
        client = value.get("client")
        device = value.get("device")
        tags = value.get("tags")
        if client is not None and not is_name(client):
            raise _bad("to.client must be a name (1-128 of A-Za-z0-9._-:@)", rid)
        if device is not None and not is_name(device):
            raise _bad("to.device must be a name (1-128 of A-Za-z0-9._-:@)", rid)
        if tags is not None:
            if (
                type(tags) is not list
                or not 1 <= len(tags) <= MAX_TAGS
                or not all(is_name(t) for t in tags)
            ):
                raise _bad(f"to.tags must be a list of 1 to {MAX_TAGS} names", rid)
            tags = tuple(tags)
        if device is not None and client is None:
            raise _bad("to.device needs to.client (a device id means nothing without its client)", rid)
        return cls(client, device, tags)


BROADCAST = Target()


# --------------------------------------------------------------------------
# frames a client sends


@attrs.frozen(slots=True)
class Ping:
    TYPE = "ping"
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "ping", "id": self.id})


@attrs.frozen(slots=True)
class Pong:
    TYPE = "pong"
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "pong", "id": self.id})


@attrs.frozen(slots=True)
class Publish:
    TYPE = "publish"
    topic: str
    data: Any
    key: str | None = None
    id: str | None = None
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none(
            {"type": "publish", "topic": self.topic, "key": self.key, "id": self.id,
             "trace": self.trace}
        ) | {"data": self.data}


@attrs.frozen(slots=True)
class Subscribe:
    TYPE = "subscribe"
    topic: str
    group: str | None = None
    key: str = "*"
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none(
            {"type": "subscribe", "topic": self.topic, "group": self.group,
             "key": self.key, "id": self.id}
        )


@attrs.frozen(slots=True)
class Unsubscribe:
    TYPE = "unsubscribe"
    topic: str
    group: str | None = None
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none(
            {"type": "unsubscribe", "topic": self.topic, "group": self.group, "id": self.id}
        )


@attrs.frozen(slots=True)
class Pause:
    TYPE = "pause"
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "pause", "id": self.id})


@attrs.frozen(slots=True)
class Resume:
    TYPE = "resume"
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "resume", "id": self.id})


@attrs.frozen(slots=True)
class Notify:
    """Consumer -> server: deliver ``data`` to the apps ``to`` selects."""

    TYPE = "notify"
    to: Target
    data: Any
    id: str | None = None
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "notify", "to": self.to.to_wire(), "id": self.id,
                           "trace": self.trace}) | {"data": self.data}


@attrs.frozen(slots=True)
class Refresh:
    """App -> server: a new token for the same ``sub`` before the old one expires."""

    TYPE = "refresh"
    token: str
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "refresh", "token": self.token, "id": self.id})


@attrs.frozen(slots=True)
class Send:
    TYPE = "send"
    data: Any
    id: str | None = None
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none({"type": "send", "id": self.id, "trace": self.trace}) | {
            "data": self.data
        }


# --------------------------------------------------------------------------
# frames a server sends


@attrs.frozen(slots=True)
class Welcome:
    TYPE = "welcome"
    worker: str
    heartbeat: float
    client: str | None = None
    device: str | None = None
    name: str | None = None
    session: str | None = None
    members: tuple[str, ...] | None = None
    #: ``"local"`` when the master could not record the connection in time (PROTOCOL.md "Consistency")
    presence: str | None = None

    def to_wire(self) -> dict[str, Any]:
        d = _omit_none(
            {"type": "welcome", "worker": self.worker, "heartbeat": self.heartbeat,
             "client": self.client, "device": self.device, "name": self.name,
             "session": self.session, "presence": self.presence}
        )
        if self.members is not None:
            d["members"] = list(self.members)
        return d


@attrs.frozen(slots=True)
class Ack:
    TYPE = "ack"
    id: str
    delivered: int | None = None
    seq: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none(
            {"type": "ack", "id": self.id, "delivered": self.delivered, "seq": self.seq}
        )


@attrs.frozen(slots=True)
class Error:
    TYPE = "error"
    code: str
    reason: str
    id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _omit_none(
            {"type": "error", "code": self.code, "reason": self.reason, "id": self.id}
        )


@attrs.frozen(slots=True)
class Sender:
    """The app connection a topic message came from."""

    client: str
    device: str


def message_wire(
    topic: str, data: Any, sender: dict[str, str], worker: str, seq: int, ts: int,
    key: str | None, trace: str | None,
) -> dict[str, Any]:
    """The ``message`` frame as a map; the one place its wire form is written.

    A plain function beside the class so the worker's hot path builds the map
    without constructing a frozen object per publish.
    """
    d = {"type": "message", "topic": topic, "data": data, "from": sender, "worker": worker,
         "seq": seq, "ts": ts}
    if key is not None:
        d["key"] = key
    if trace is not None:
        d["trace"] = trace
    return d


def notification_wire(data: Any, sender: str, id: str, trace: str | None) -> dict[str, Any]:
    """The ``notify`` frame (server -> app) as a map."""
    d = {"type": "notify", "data": data, "from": sender, "id": id}
    if trace is not None:
        d["trace"] = trace
    return d


def chat_wire(sender: str, data: Any, seq: int, ts: int, trace: str | None) -> dict[str, Any]:
    """The ``chat`` frame as a map."""
    d = {"type": "chat", "from": sender, "data": data, "seq": seq, "ts": ts}
    if trace is not None:
        d["trace"] = trace
    return d


@attrs.frozen(slots=True)
class Message:
    """Server -> consumer: one published topic message."""

    TYPE = "message"
    topic: str
    data: Any
    sender: Sender
    worker: str
    seq: int
    ts: int
    key: str | None = None
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        sender = {"client": self.sender.client, "device": self.sender.device}
        return message_wire(self.topic, self.data, sender, self.worker, self.seq, self.ts,
                            self.key, self.trace)


@attrs.frozen(slots=True)
class Notification:
    """Server -> app: a notify from a consumer (``sender``) or the HTTP API (``"api"``)."""

    TYPE = "notify"
    data: Any
    sender: str
    id: str
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return notification_wire(self.data, self.sender, self.id, self.trace)


@attrs.frozen(slots=True)
class ChatMessage:
    TYPE = "chat"
    sender: str
    data: Any
    seq: int
    ts: int
    trace: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return chat_wire(self.sender, self.data, self.seq, self.ts, self.trace)


@attrs.frozen(slots=True)
class Joined:
    TYPE = "joined"
    client: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "joined", "client": self.client}


@attrs.frozen(slots=True)
class Left:
    TYPE = "left"
    client: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "left", "client": self.client}


# --------------------------------------------------------------------------
# parsing


def _request_id(obj: Mapping[str, Any]) -> str | None:
    rid = obj.get("id")
    if rid is None:
        return None
    if type(rid) is str and 1 <= len(rid) <= MAX_ID:
        return rid
    raise _bad(f"id must be a string of 1 to {MAX_ID} characters", None)


def _opt_name(obj: Mapping[str, Any], field: str, rid: str | None) -> str | None:
    v = obj.get(field)
    if v is None or is_name(v):
        return v
    raise _bad(f"{field} must be a name (1-128 of A-Za-z0-9._-:@)", rid)


def _trace(obj: Mapping[str, Any], rid: str | None) -> str | None:
    v = obj.get("trace")
    if v is None or (type(v) is str and 1 <= len(v) <= MAX_TRACE):
        return v
    raise _bad(f"trace must be a string of 1 to {MAX_TRACE} characters", rid)


def _data(obj: Mapping[str, Any], rid: str | None) -> Any:
    if "data" not in obj:
        raise _bad("data is required", rid)
    return obj["data"]


def _p_ping(o: Mapping[str, Any], rid: str | None) -> Ping:
    return Ping(rid)


def _p_pong(o: Mapping[str, Any], rid: str | None) -> Pong:
    return Pong(rid)


def _p_publish(o: Mapping[str, Any], rid: str | None) -> Publish:
    topic = o.get("topic")
    if not is_topic(topic):
        raise _bad("topic must be 1-128 of A-Za-z0-9._-:@ with non-empty segments", rid)
    return Publish(topic, _data(o, rid), _opt_name(o, "key", rid), rid, _trace(o, rid))


def _pattern(o: Mapping[str, Any], rid: str | None) -> str:
    topic = o.get("topic")
    if not is_pattern(topic):
        raise _bad("topic must be a topic pattern (segments, '*', a final '>')", rid)
    return topic


def _p_subscribe(o: Mapping[str, Any], rid: str | None) -> Subscribe:
    topic = _pattern(o, rid)
    key = o.get("key")
    if key is None:  # absent or null: the default, as for every optional field
        key = "*"
    elif key != "*" and not is_name(key):
        raise _bad("key must be '*' or a name", rid)
    return Subscribe(topic, _opt_name(o, "group", rid), key, rid)


def _p_unsubscribe(o: Mapping[str, Any], rid: str | None) -> Unsubscribe:
    return Unsubscribe(_pattern(o, rid), _opt_name(o, "group", rid), rid)


def _p_pause(o: Mapping[str, Any], rid: str | None) -> Pause:
    return Pause(rid)


def _p_resume(o: Mapping[str, Any], rid: str | None) -> Resume:
    return Resume(rid)


def _p_notify(o: Mapping[str, Any], rid: str | None) -> Notify:
    return Notify(Target.parse(o.get("to"), rid), _data(o, rid), rid, _trace(o, rid))


def _p_refresh(o: Mapping[str, Any], rid: str | None) -> Refresh:
    token = o.get("token")
    if type(token) is not str or not 1 <= len(token) <= MAX_TOKEN:
        raise _bad(f"token must be a string of 1 to {MAX_TOKEN} characters", rid)
    return Refresh(token, rid)


def _p_send(o: Mapping[str, Any], rid: str | None) -> Send:
    return Send(_data(o, rid), rid, _trace(o, rid))


def send_fields(o: Mapping[str, Any]) -> tuple[str | None, Any, str | None]:
    """A decoded ``send`` map's ``(id, data, trace)``, validated as :func:`parse_request`
    validates a :class:`Send`, without making one: the worker relays a chat message
    straight from the map (one frame object fewer per message on its hot path)."""
    rid = _request_id(o)
    return rid, _data(o, rid), _trace(o, rid)


Parser = Callable[[Mapping[str, Any], "str | None"], Any]

_COMMON: dict[str, Parser] = {"ping": _p_ping, "pong": _p_pong}
APP_FRAMES: dict[str, Parser] = {**_COMMON, "publish": _p_publish, "refresh": _p_refresh}
CONSUMER_FRAMES: dict[str, Parser] = {
    **_COMMON,
    "subscribe": _p_subscribe,
    "unsubscribe": _p_unsubscribe,
    "pause": _p_pause,
    "resume": _p_resume,
    "notify": _p_notify,
}
CHAT_FRAMES: dict[str, Parser] = {**_COMMON, "send": _p_send, "refresh": _p_refresh}

_CLIENT_TYPES = frozenset(APP_FRAMES) | frozenset(CONSUMER_FRAMES) | frozenset(CHAT_FRAMES)


def parse_request(obj: Any, allowed: Mapping[str, Parser]) -> Any:
    """Validate a decoded client frame against one endpoint's frame table.

    Raises ProtocolError: with ``close_code`` 4000 for a non-map or a frame
    of another endpoint, otherwise ``bad_request`` carrying the request id.
    """
    if type(obj) is not dict:
        raise violation("a frame must be a map")
    rid = _request_id(obj)
    kind = obj.get("type")
    parser = allowed.get(kind) if type(kind) is str else None
    if parser is None:
        if type(kind) is str and kind in _CLIENT_TYPES:
            raise violation(f"frame type {kind!r} is not allowed on this endpoint")
        raise _bad(f"unknown frame type {kind!r}", rid)
    return parser(obj, rid)


# --------------------------------------------------------------------------
# parsing what a server sends (the SDKs' side)


def _need(o: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    v = o.get(field)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise violation(f"server frame field {field!r} is missing or mistyped")
    return v


def _s_welcome(o: Mapping[str, Any]) -> Welcome:
    members = o.get("members")
    return Welcome(
        _need(o, "worker", str), _need(o, "heartbeat", (int, float)),
        o.get("client"), o.get("device"), o.get("name"), o.get("session"),
        tuple(members) if type(members) is list else None, o.get("presence"),
    )


def _s_message(o: Mapping[str, Any]) -> Message:
    frm = _need(o, "from", dict)
    return Message(
        _need(o, "topic", str), o.get("data"),
        Sender(str(frm.get("client")), str(frm.get("device"))),
        _need(o, "worker", str), _need(o, "seq", int), _need(o, "ts", int),
        o.get("key"), o.get("trace"),
    )


_SERVER_FRAMES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "welcome": _s_welcome,
    "ping": lambda o: Ping(o.get("id")),
    "pong": lambda o: Pong(o.get("id")),
    "ack": lambda o: Ack(_need(o, "id", str), o.get("delivered"), o.get("seq")),
    "error": lambda o: Error(_need(o, "code", str), str(o.get("reason", "")), o.get("id")),
    "message": _s_message,
    "notify": lambda o: Notification(
        o.get("data"), _need(o, "from", str), _need(o, "id", str), o.get("trace")
    ),
    "chat": lambda o: ChatMessage(
        _need(o, "from", str), o.get("data"), _need(o, "seq", int), _need(o, "ts", int),
        o.get("trace"),
    ),
    "joined": lambda o: Joined(_need(o, "client", str)),
    "left": lambda o: Left(_need(o, "client", str)),
}


def parse_server_frame(obj: Any) -> Any:
    """Turn a decoded server frame into its class (for clients).

    Unknown types raise ProtocolError so a client can log and skip them.
    """
    if type(obj) is not dict:
        raise violation("a frame must be a map")
    kind = obj.get("type")
    parser = _SERVER_FRAMES.get(kind) if type(kind) is str else None
    if parser is None:
        raise _bad(f"unknown server frame type {kind!r}", None)
    return parser(obj)
