"""mc.protocol frames and codecs: round trips, robustness and validation.

Every frame class gets a hypothesis strategy producing valid values; each is
encoded with both codecs, decoded and parsed back (``parse_request`` with its
endpoint table for client frames, ``parse_server_frame`` for server frames)
and must come back equal, with the same Python types inside ``data``.
Undecodable or malformed input must surface as ``ProtocolError`` only.
"""

from __future__ import annotations

import base64
import math
import string
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mc.protocol import (
    APP_FRAMES,
    BROADCAST,
    CHAT_FRAMES,
    CODECS,
    CONSUMER_FRAMES,
    JSON,
    MSGPACK,
    Ack,
    ChatMessage,
    CloseCode,
    Error,
    ErrorCode,
    Joined,
    Left,
    Message,
    Notification,
    Notify,
    Pause,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    Resume,
    Send,
    Sender,
    Subscribe,
    Target,
    Unsubscribe,
    Welcome,
    negotiate,
    parse_request,
    parse_server_frame,
)
from mc.protocol.errors import ERROR_CODES
from mc.protocol.frames import MAX_ID, MAX_TAGS, MAX_TRACE

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TABLES = {"app": APP_FRAMES, "consumer": CONSUMER_FRAMES, "chat": CHAT_FRAMES}
BOTH = pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])

# --------------------------------------------------------------------------
# strategies: valid field values

NAME_CHARS = string.ascii_letters + string.digits + "._-:@"
SEGMENT_CHARS = string.ascii_letters + string.digits + "_-:@"

names = st.text(NAME_CHARS, min_size=1, max_size=128)
short_names = st.text(NAME_CHARS, min_size=1, max_size=12)
segments = st.text(SEGMENT_CHARS, min_size=1, max_size=10)
topics = st.lists(segments, min_size=1, max_size=6).map(".".join).filter(lambda t: len(t) <= 128)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.one_of(segments, st.just("*")), min_size=0, max_size=5))
    if draw(st.booleans()) or not segs:
        segs.append(">")
    pattern = ".".join(segs)
    return pattern if len(pattern) <= 128 else ">"


ids = st.text(min_size=1, max_size=MAX_ID)
opt_ids = st.none() | ids
traces = st.none() | st.text(min_size=1, max_size=MAX_TRACE)
keys = st.none() | short_names

# Integers both codecs carry exactly (orjson: i64 / u64; msgpack: the same).
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
counts = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)

json_scalars = st.none() | st.booleans() | ints | finite | st.text(max_size=20)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)


json_data = st.recursive(json_scalars, _containers, max_leaves=12)
msgpack_data = st.recursive(json_scalars | st.binary(max_size=20), _containers, max_leaves=12)

targets = st.builds(
    Target,
    client=st.none() | short_names,
    device=st.none() | short_names,
    tags=st.none() | st.lists(short_names, min_size=1, max_size=MAX_TAGS).map(tuple),
).filter(lambda t: t.device is None or t.client is not None)  # strict `to`: no device alone


def client_frames(data: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, dict]]:
    """(frame, the endpoint table it belongs to) for every client frame class."""
    common = st.sampled_from(list(TABLES.values()))
    return st.one_of(
        st.tuples(st.builds(Ping, opt_ids), common),
        st.tuples(st.builds(Pong, opt_ids), common),
        st.tuples(
            st.builds(Publish, topics, data, key=keys, id=opt_ids, trace=traces),
            st.just(APP_FRAMES),
        ),
        st.tuples(
            st.builds(
                Subscribe, patterns(), group=st.none() | short_names,
                key=st.just("*") | short_names, id=opt_ids,
            ),
            st.just(CONSUMER_FRAMES),
        ),
        st.tuples(
            st.builds(Unsubscribe, patterns(), group=st.none() | short_names, id=opt_ids),
            st.just(CONSUMER_FRAMES),
        ),
        st.tuples(st.builds(Pause, opt_ids), st.just(CONSUMER_FRAMES)),
        st.tuples(st.builds(Resume, opt_ids), st.just(CONSUMER_FRAMES)),
        st.tuples(st.builds(Notify, targets, data, id=opt_ids), st.just(CONSUMER_FRAMES)),
        st.tuples(st.builds(Send, data, id=opt_ids, trace=traces), st.just(CHAT_FRAMES)),
    )


def server_frames(data: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(
            Welcome,
            worker=short_names,
            heartbeat=st.integers(1, 3600) | st.floats(0.001, 3600.0),
            client=st.none() | short_names,
            device=st.none() | short_names,
            name=st.none() | short_names,
            session=st.none() | short_names,
            members=st.none() | st.lists(short_names, max_size=5).map(tuple),
        ),
        st.builds(Ping, opt_ids),
        st.builds(Pong, opt_ids),
        st.builds(Ack, ids, delivered=st.none() | counts, seq=st.none() | counts),
        st.builds(Error, st.sampled_from(sorted(ERROR_CODES)), st.text(max_size=40), id=opt_ids),
        st.builds(
            Message,
            topic=topics,
            data=data,
            sender=st.builds(Sender, short_names, short_names),
            worker=short_names,
            seq=counts,
            ts=counts,
            key=keys,
            trace=traces,
        ),
        st.builds(
            Notification, data, sender=short_names | st.just("api"), id=ids, trace=traces
        ),
        st.builds(ChatMessage, short_names, data, seq=counts, ts=counts, trace=traces),
        st.builds(Joined, short_names),
        st.builds(Left, short_names),
    )


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def roundtrip_request(codec: Any, frame: Any, table: dict) -> Any:
    return parse_request(codec.decode(codec.encode(frame.to_wire())), table)


def roundtrip_server(codec: Any, frame: Any) -> Any:
    return parse_server_frame(codec.decode(codec.encode(frame.to_wire())))


# --------------------------------------------------------------------------
# round trips


@BOTH
@FUZZ
@given(item=client_frames(json_data))
def test_client_frames_roundtrip(codec: Any, item: tuple[Any, dict]) -> None:
    frame, table = item
    back = roundtrip_request(codec, frame, table)
    assert back == frame
    assert type(back) is type(frame)
    if hasattr(frame, "data"):
        assert same(back.data, frame.data)


@BOTH
@FUZZ
@given(frame=server_frames(json_data))
def test_server_frames_roundtrip(codec: Any, frame: Any) -> None:
    back = roundtrip_server(codec, frame)
    assert back == frame
    assert type(back) is type(frame)
    if hasattr(frame, "data"):
        assert same(back.data, frame.data)


@FAST
@given(item=client_frames(msgpack_data))
def test_msgpack_carries_bytes_in_client_frames(item: tuple[Any, dict]) -> None:
    frame, table = item
    back = roundtrip_request(MSGPACK, frame, table)
    assert back == frame
    if hasattr(frame, "data"):
        assert same(back.data, frame.data)


@FAST
@given(frame=server_frames(msgpack_data))
def test_msgpack_carries_bytes_in_server_frames(frame: Any) -> None:
    back = roundtrip_server(MSGPACK, frame)
    assert back == frame
    if hasattr(frame, "data"):
        assert same(back.data, frame.data)


def _b64(value: Any) -> Any:
    """What JSON makes of msgpack data: every bytes value becomes a base64 string."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_b64(v) for v in value]
    if isinstance(value, dict):
        return {k: _b64(v) for k, v in value.items()}
    return value


@FAST
@given(topic=topics, data=msgpack_data)
def test_json_turns_bytes_into_base64(topic: str, data: Any) -> None:
    back = roundtrip_request(JSON, Publish(topic, data), APP_FRAMES)
    assert same(back.data, _b64(data))
    msg = Message(topic, data, Sender("a", "b"), "w1", 1, 2)
    assert same(roundtrip_server(JSON, msg).data, _b64(data))


def test_json_bytes_example() -> None:
    wire = JSON.encode(Publish("t", {"raw": b"\x00\xff", "list": [b"hi"]}).to_wire())
    assert orjson.loads(wire)["data"] == {"raw": "AP8=", "list": ["aGk="]}
    assert MSGPACK.decode(MSGPACK.encode({"data": b"\x00\xff"})) == {"data": b"\x00\xff"}


def test_target_forms_roundtrip() -> None:
    forms = [
        BROADCAST,
        Target(client="alice"),
        Target(client="alice", device="phone"),
        Target(tags=("driver",)),
        Target(tags=("driver", "rider")),
        Target(client="alice", tags=("driver",)),
        Target(client="alice", device="phone", tags=("a", "b")),
    ]
    for codec in (JSON, MSGPACK):
        for target in forms:
            frame = Notify(target, {"x": 1}, "n1")
            assert roundtrip_request(codec, frame, CONSUMER_FRAMES) == frame
    assert BROADCAST.is_broadcast and BROADCAST.to_wire() == {}
    assert not Target(tags=("a",)).is_broadcast
    # absent, null and {} all mean broadcast
    for wire in ({"type": "notify", "data": 1}, {"type": "notify", "to": None, "data": 1},
                 {"type": "notify", "to": {}, "data": 1}):
        assert parse_request(wire, CONSUMER_FRAMES).to == BROADCAST


def test_data_null_is_a_value() -> None:
    for frame, table in [(Publish("t", None), APP_FRAMES), (Send(None), CHAT_FRAMES),
                         (Notify(BROADCAST, None), CONSUMER_FRAMES)]:
        for codec in (JSON, MSGPACK):
            assert roundtrip_request(codec, frame, table) == frame


def test_null_optional_fields_mean_absent() -> None:
    assert parse_request(
        {"type": "publish", "topic": "t", "data": 1, "key": None, "id": None, "trace": None},
        APP_FRAMES,
    ) == Publish("t", 1)
    assert parse_request(
        {"type": "subscribe", "topic": "t.>", "group": None, "key": None, "id": None},
        CONSUMER_FRAMES,
    ) == Subscribe("t.>")
    assert parse_request(
        {"type": "unsubscribe", "topic": "t", "group": None}, CONSUMER_FRAMES
    ) == Unsubscribe("t")
    assert parse_request(
        {"type": "notify", "to": {"client": None, "device": None, "tags": None}, "data": 1},
        CONSUMER_FRAMES,
    ) == Notify(BROADCAST, 1)
    assert parse_request({"type": "send", "data": 1, "trace": None}, CHAT_FRAMES) == Send(1)


def test_unknown_fields_are_ignored() -> None:
    wire = {"type": "publish", "topic": "a.b", "data": 1, "extra": [1, 2], "x": {"y": None}}
    assert parse_request(wire, APP_FRAMES) == Publish("a.b", 1)
    wire = {"type": "ack", "id": "1", "delivered": 3, "whatever": True}
    assert parse_server_frame(wire) == Ack("1", 3)


# --------------------------------------------------------------------------
# robustness: nothing but ProtocolError, ever


def _only_protocol_errors(codec: Any, payload: bytes) -> None:
    try:
        obj = codec.decode(payload)
    except ProtocolError as exc:
        # undecodable: a violation; a msgpack map with a non-string key: bad_request
        if exc.close_code is None:
            assert codec is MSGPACK and exc.code == ErrorCode.BAD_REQUEST, exc
            assert "key" in exc.reason
        else:
            assert exc.close_code == CloseCode.VIOLATION
        return
    _parse_everywhere(obj)


FRAME_CLASSES = {"ping": Ping, "pong": Pong, "publish": Publish, "subscribe": Subscribe,
                 "unsubscribe": Unsubscribe, "pause": Pause, "resume": Resume, "notify": Notify,
                 "send": Send}
SERVER_CLASSES = {"welcome": Welcome, "ping": Ping, "pong": Pong, "ack": Ack, "error": Error,
                  "message": Message, "notify": Notification, "chat": ChatMessage,
                  "joined": Joined, "left": Left}
ALL_REQUEST_TYPES = set(APP_FRAMES) | set(CONSUMER_FRAMES) | set(CHAT_FRAMES)


def _valid_id(value: Any) -> bool:
    return type(value) is str and 1 <= len(value) <= MAX_ID


def _parse_everywhere(obj: Any) -> None:
    """Parse ``obj`` as every endpoint's request and as a server frame, and check
    each outcome against what the protocol says it must be (not just "no crash")."""
    for table in TABLES.values():
        _check_request(obj, table)
    _check_server_frame(obj)


def _check_request(obj: Any, table: dict) -> None:
    try:
        frame = parse_request(obj, table)
    except ProtocolError as exc:
        _check_refusal(obj, table, exc)
        return
    # accepted: a map with a valid (or no) id and a type of this endpoint, parsed
    # into that type's class, which survives its own round trip unchanged
    assert type(obj) is dict and obj.get("type") in table, obj
    assert obj.get("id") is None or _valid_id(obj["id"]), obj
    assert type(frame) is FRAME_CLASSES[obj["type"]] and frame.id == obj.get("id")
    assert parse_request(frame.to_wire(), table) == frame


def _check_refusal(obj: Any, table: dict, exc: ProtocolError) -> None:
    if type(obj) is not dict:
        assert exc.close_code == CloseCode.VIOLATION
        return
    rid, kind = obj.get("id"), obj.get("type")
    if rid is not None and not _valid_id(rid):
        assert (exc.code, exc.close_code, exc.request_id) == (ErrorCode.BAD_REQUEST, None, None)
    elif type(kind) is str and kind in ALL_REQUEST_TYPES - set(table):
        assert exc.close_code == CloseCode.VIOLATION, (obj, exc)  # another endpoint's frame
    else:  # unknown type, or a bad field of a known one: answered, with the id
        assert (exc.code, exc.close_code, exc.request_id) == (ErrorCode.BAD_REQUEST, None, rid), (obj, exc)
    assert exc.reason


def _check_server_frame(obj: Any) -> None:
    try:
        frame = parse_server_frame(obj)
    except ProtocolError as exc:
        assert exc.reason
        kind = obj.get("type") if type(obj) is dict else None
        if type(obj) is dict and (type(kind) is not str or kind not in SERVER_CLASSES):
            assert (exc.code, exc.close_code) == (ErrorCode.BAD_REQUEST, None)  # unknown: skipped
        else:
            assert exc.close_code == CloseCode.VIOLATION
        return
    assert type(frame) is SERVER_CLASSES[obj["type"]], (obj, frame)


@BOTH
@FUZZ
@given(payload=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(codec: Any, payload: bytes) -> None:
    _only_protocol_errors(codec, payload)


@st.composite
def mutated(draw: st.DrawFn, codec: Any) -> bytes:
    frame, _ = draw(client_frames(msgpack_data if codec is MSGPACK else json_data))
    buf = bytearray(codec.encode(frame.to_wire()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and buf:
            del buf[pos]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


@FUZZ
@given(payload=mutated(JSON))
def test_mutated_json_frames_raise_only_protocol_error(payload: bytes) -> None:
    _only_protocol_errors(JSON, payload)


@FUZZ
@given(payload=mutated(MSGPACK))
def test_mutated_msgpack_frames_raise_only_protocol_error(payload: bytes) -> None:
    _only_protocol_errors(MSGPACK, payload)


FIELDS = ["type", "id", "topic", "data", "key", "group", "trace", "to", "client", "device",
          "tags", "from", "worker", "heartbeat", "seq", "ts", "members", "code", "reason"]
TYPES = ["ping", "pong", "publish", "subscribe", "unsubscribe", "pause", "resume", "notify",
         "send", "welcome", "ack", "error", "message", "chat", "joined", "left", "nope"]
any_value = st.recursive(
    st.none() | st.booleans() | ints | st.floats() | st.text(max_size=10) | st.binary(max_size=5),
    lambda c: st.lists(c, max_size=3)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    kind=st.sampled_from(TYPES) | any_value,
    fields=st.dictionaries(st.sampled_from(FIELDS[1:]), any_value, max_size=6),
)
def test_mistyped_fields_raise_only_protocol_error(kind: Any, fields: dict) -> None:
    _parse_everywhere({"type": kind, **fields})


TIMESTAMP_EXT = b"\xd6\xff\x00\x00\x00\x01"  # fixext4, type -1: the msgpack timestamp


@pytest.mark.parametrize(
    "ext",
    [msgpack.packb(msgpack.ExtType(5, b"x")), TIMESTAMP_EXT, msgpack.packb(msgpack.Timestamp(1, 0)),
     b"\xd7\xff" + b"\x00" * 8, b"\xc7\x0c\xff" + b"\x00" * 12],
    ids=["ext5", "ts32", "timestamp", "ts64", "ts96"],
)
def test_msgpack_extension_types_are_violations(ext: bytes) -> None:
    # b"\x81\xa4data" + ext: {"data": ext}; b"\x91" + ext: [ext]
    for payload in (ext, b"\x81\xa4data" + ext, b"\x82\xa4type\xa4send\xa4data\x91" + ext):
        with pytest.raises(ProtocolError) as info:
            MSGPACK.decode(payload)
        assert info.value.close_code == CloseCode.VIOLATION


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b'{"type": "ping"} x',
        b"[" * 5000 + b"]" * 5000,
        b'"\\ud800"',
        b"NaN",
    ],
)
def test_bad_json_is_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        JSON.decode(payload)
    assert info.value.close_code == CloseCode.VIOLATION


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never-used byte
        msgpack.packb({"type": "ping"}) + b"\x00",  # trailing data
        b"\x81\x01",  # a map whose int key has no value
        b"\x81\xa1a",  # truncated map
        b"\xa2\xff\xfe",  # bad UTF-8 str
        b"\xdd\xff\xff\xff\xff",  # array of 4 G elements, no bytes
        b"\x91" * 5000 + b"\xc0",  # too deep
    ],
)
def test_bad_msgpack_is_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode(payload)
    assert info.value.close_code == CloseCode.VIOLATION


# Map keys that are not strings: the frame decodes (it is a map), so it is a
# request mc can answer: ``bad_request`` with the request's ``id``, not a close.
NON_STRING_KEYS = [
    ({"type": "publish", "topic": "t", "data": {1: "x"}, "id": "r1"}, "r1"),
    ({"type": "send", "data": [{"k": {True: 1}}], "id": "r2"}, "r2"),
    ({"type": "notify", "to": {}, "data": {None: 1}, "id": "r3"}, "r3"),
    ({"type": "ping", "id": "r4", 5: 1}, "r4"),
    ({"type": "publish", "topic": "t", "data": {1.5: 1}}, None),
    ({1: "ping"}, None),
    ({"type": "ping", "id": 7, "data": {2: 2}}, None),  # an id that is no id is not echoed
    ({"type": "ping", "id": "", "data": {2: 2}}, None),
]


@pytest.mark.parametrize(("obj", "rid"), NON_STRING_KEYS, ids=repr)
def test_msgpack_non_string_keys_are_bad_request_with_the_id(obj: dict, rid: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode(msgpack.packb(obj, use_bin_type=True, strict_types=False))
    exc = info.value
    assert (exc.code, exc.close_code, exc.request_id) == (ErrorCode.BAD_REQUEST, None, rid)
    assert "key" in exc.reason


@pytest.mark.parametrize(
    ("payload", "rid"),
    [
        (b"\x82\xa2id\xa2r5\x91\x01\x02", "r5"),  # {"id": "r5", [1]: 2}: an array key
        (b"\x82\xa2id\xa2r6\x81\xa1a\x01\x02", "r6"),  # {"id": "r6", {"a": 1}: 2}: a map key
    ],
    ids=["array-key", "map-key"],
)
def test_msgpack_unhashable_keys_are_bad_request_with_the_id(payload: bytes, rid: str) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode(payload)
    assert (info.value.code, info.value.close_code, info.value.request_id) == (
        ErrorCode.BAD_REQUEST, None, rid)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb([{1: 2}]),  # not a map at the top: still a violation
        msgpack.packb({1: 2}) + b"\x00",  # trailing bytes win over the key
        b"\x82\xa2id\xa1x\x01" + msgpack.packb(msgpack.ExtType(5, b"x")),  # an extension type
        b"\x82\xa2id\xa1x\x01\xd6\xff\x00\x00\x00\x01",  # a timestamp beside an int key
    ],
    ids=["array", "trailing", "ext", "timestamp"],
)
def test_msgpack_non_string_keys_do_not_hide_violations(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode(payload)
    assert info.value.close_code == CloseCode.VIOLATION


def test_msgpack_bytes_keys_stay_data() -> None:
    # bytes keys are msgpack data a msgpack recipient can carry (a JSON one cannot: the
    # worker refuses the publish then, see tests/integration/test_worker_bad_input.py)
    obj = {"type": "publish", "topic": "t", "data": {b"k": 1}, "id": "r"}
    assert MSGPACK.decode(msgpack.packb(obj, use_bin_type=True)) == obj


def test_unencodable_data_is_bad_request_not_a_crash() -> None:
    with pytest.raises(ProtocolError) as info:
        JSON.encode({"type": "message", "data": {b"k": 1}})
    assert info.value.code == ErrorCode.BAD_REQUEST and info.value.close_code is None
    with pytest.raises(ProtocolError):
        JSON.encode({"data": 2**70})
    with pytest.raises(ProtocolError):
        MSGPACK.encode({"data": 2**70})
    with pytest.raises(ProtocolError):
        MSGPACK.encode({"data": object()})


def test_negotiate() -> None:
    assert negotiate([]) is JSON
    assert negotiate(["mc.v1.msgpack"]) is MSGPACK
    assert negotiate(["x", "mc.v1.json", "mc.v1.msgpack"]) is JSON
    assert negotiate(["x"]) is None
    assert CODECS == {"mc.v1.json": JSON, "mc.v1.msgpack": MSGPACK}
    assert JSON.binary is False and MSGPACK.binary is True


# --------------------------------------------------------------------------
# validation


def bad(obj: Any, table: dict, *, rid: str | None = None) -> ProtocolError:
    """The obj is refused with bad_request (connection stays open), echoing ``rid``."""
    with pytest.raises(ProtocolError) as info:
        parse_request(obj, table)
    exc = info.value
    assert exc.code == ErrorCode.BAD_REQUEST
    assert exc.close_code is None
    assert exc.request_id == rid
    return exc


def violates(obj: Any, table: dict) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(obj, table)
    assert info.value.close_code == CloseCode.VIOLATION


BAD_TOPICS = ["", "a..b", ".a", "a.", ".", "a b", "a*", "a.*", "a.>", ">", "é", "a/b",
              "x" * 129, 5, None, ["a"], {"a": 1}, b"a", True]


@pytest.mark.parametrize("topic", BAD_TOPICS, ids=repr)
def test_publish_bad_topic(topic: Any) -> None:
    bad({"type": "publish", "topic": topic, "data": 1, "id": "r1"}, APP_FRAMES, rid="r1")


def test_publish_missing_topic() -> None:
    bad({"type": "publish", "data": 1, "id": "r1"}, APP_FRAMES, rid="r1")


def test_publish_topic_limits() -> None:
    for topic in ("x" * 128, "a:b@c-d_e.F9", "a." * 63 + "b"):
        assert parse_request({"type": "publish", "topic": topic, "data": 1}, APP_FRAMES) == Publish(topic, 1)
    bad({"type": "publish", "topic": "a." * 64 + "b", "data": 1}, APP_FRAMES)  # 129 characters


BAD_PATTERNS = ["", "a..b", ".a", "a.", "a.>.b", ">.a", "a>", "a.b>", "**", "a*", "*a",
                "x" * 129, "a b", 1, None, ["a"]]


@pytest.mark.parametrize("pattern", BAD_PATTERNS, ids=repr)
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_bad_pattern(kind: str, pattern: Any) -> None:
    bad({"type": kind, "topic": pattern, "id": "r2"}, CONSUMER_FRAMES, rid="r2")


@pytest.mark.parametrize("pattern", ["a", "*", ">", "a.*", "a.>", "*.>", "*.*.b", "a.*.c.>"])
def test_good_patterns(pattern: str) -> None:
    assert parse_request({"type": "subscribe", "topic": pattern}, CONSUMER_FRAMES) == Subscribe(pattern)


@pytest.mark.parametrize("rid", [5, "", "x" * (MAX_ID + 1), ["a"], True, 1.5, {"a": 1}], ids=repr)
@pytest.mark.parametrize(
    "obj,table",
    [
        ({"type": "ping"}, APP_FRAMES),
        ({"type": "publish", "topic": "t", "data": 1}, APP_FRAMES),
        ({"type": "pause"}, CONSUMER_FRAMES),
        ({"type": "send", "data": 1}, CHAT_FRAMES),
        ({"type": "nope"}, CHAT_FRAMES),
    ],
)
def test_bad_id(obj: dict, table: dict, rid: Any) -> None:
    bad({**obj, "id": rid}, table, rid=None)


def test_id_limits() -> None:
    assert parse_request({"type": "ping", "id": "x" * MAX_ID}, APP_FRAMES) == Ping("x" * MAX_ID)
    assert parse_request({"type": "ping", "id": "é"}, APP_FRAMES) == Ping("é")


@pytest.mark.parametrize(
    "obj,table",
    [
        ({"type": "publish", "topic": "t"}, APP_FRAMES),
        ({"type": "notify", "to": {}}, CONSUMER_FRAMES),
        ({"type": "send"}, CHAT_FRAMES),
    ],
)
def test_missing_data(obj: dict, table: dict) -> None:
    exc = bad({**obj, "id": "r3"}, table, rid="r3")
    assert "data" in exc.reason


BAD_TO = [
    [], "alice", 1, True,
    {"client": ""}, {"client": "a b"}, {"client": 5}, {"client": "x" * 129},
    {"device": ""}, {"device": ["phone"]},
    {"tags": "driver"}, {"tags": []}, {"tags": ["ok", "no way"]}, {"tags": [1]},
    {"tags": ["t"] * (MAX_TAGS + 1)}, {"tags": {"a": 1}},
]


@pytest.mark.parametrize("to", BAD_TO, ids=repr)
def test_bad_to(to: Any) -> None:
    bad({"type": "notify", "to": to, "data": 1, "id": "r4"}, CONSUMER_FRAMES, rid="r4")


# Strict `to` (PROTOCOL.md): a typo must never turn into a broadcast.
STRICT_TO = [
    {"clinet": "alice"}, {"clients": "alice"}, {"Client": "alice"}, {"tag": ["driver"]},
    {"client": "alice", "devcie": "phone"}, {"client": "alice", "extra": None},
    {"clinet": None}, {"": 1}, {"device": "phone"}, {"device": "phone", "tags": ["driver"]},
    {"device": "phone", "client": None},
]


@pytest.mark.parametrize("to", STRICT_TO, ids=repr)
@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_strict_to_is_bad_request(to: Any, codec: Any) -> None:
    wire = codec.encode({"type": "notify", "to": to, "data": 1, "id": "r5"})
    exc = bad(codec.decode(wire), CONSUMER_FRAMES, rid="r5")
    assert "to" in exc.reason
    with pytest.raises(ProtocolError) as direct:
        Target.parse(to)
    assert direct.value.code == ErrorCode.BAD_REQUEST


def test_strict_to_names_the_unknown_key() -> None:
    with pytest.raises(ProtocolError) as exc:
        Target.parse({"clinet": "alice"})
    assert "'clinet'" in exc.value.reason and "client, device, tags" in exc.value.reason
    with pytest.raises(ProtocolError) as exc:
        Target.parse({"device": "phone"})
    assert "to.client" in exc.value.reason
    with pytest.raises(ProtocolError) as exc:
        Target.parse({1: "x"})  # msgpack maps may have non-string keys
    assert "unknown key 1" in exc.value.reason


def test_strict_to_accepts_every_valid_form() -> None:
    assert Target.parse({"client": "a", "device": "d", "tags": ["t"]}) == Target("a", "d", ("t",))
    assert Target.parse({"client": "a", "device": None}) == Target("a")
    assert Target.parse({"client": None, "device": None, "tags": None}) == BROADCAST


def test_to_tag_limit() -> None:
    frame = parse_request(
        {"type": "notify", "to": {"tags": ["t"] * MAX_TAGS}, "data": 1}, CONSUMER_FRAMES
    )
    assert frame.to == Target(tags=("t",) * MAX_TAGS)


@pytest.mark.parametrize("trace", ["", "x" * (MAX_TRACE + 1), 5, ["t"], {"t": 1}, True], ids=repr)
@pytest.mark.parametrize(
    "obj,table",
    [({"type": "publish", "topic": "t", "data": 1}, APP_FRAMES), ({"type": "send", "data": 1}, CHAT_FRAMES)],
)
def test_bad_trace(obj: dict, table: dict, trace: Any) -> None:
    bad({**obj, "trace": trace, "id": "r5"}, table, rid="r5")


def test_trace_limit() -> None:
    trace = "x" * MAX_TRACE
    assert parse_request({"type": "send", "data": 1, "trace": trace}, CHAT_FRAMES) == Send(1, trace=trace)
    assert parse_request({"type": "publish", "topic": "t", "data": 1, "trace": "é"}, APP_FRAMES) == \
        Publish("t", 1, trace="é")


@pytest.mark.parametrize("key", ["", "a b", "*", "**", 5, ["k"], "x" * 129], ids=repr)
def test_publish_bad_key(key: Any) -> None:
    # a publish key is a concrete name: '*' is only a subscription wildcard
    bad({"type": "publish", "topic": "t", "data": 1, "key": key, "id": "r6"}, APP_FRAMES, rid="r6")


@pytest.mark.parametrize("key", ["", "a b", "**", "*a", 5, ["k"], "x" * 129], ids=repr)
def test_subscribe_bad_key(key: Any) -> None:
    bad({"type": "subscribe", "topic": "t", "key": key, "id": "r7"}, CONSUMER_FRAMES, rid="r7")


@pytest.mark.parametrize("group", ["", "a b", 5, ["g"], "x" * 129], ids=repr)
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_bad_group(kind: str, group: Any) -> None:
    bad({"type": kind, "topic": "t", "group": group, "id": "r8"}, CONSUMER_FRAMES, rid="r8")


def test_subscribe_defaults() -> None:
    frame = parse_request({"type": "subscribe", "topic": "a.*"}, CONSUMER_FRAMES)
    assert frame == Subscribe("a.*", None, "*", None)


ALL_CLIENT_FRAMES = [
    Ping("1"), Pong(), Publish("t", 1), Subscribe("t"), Unsubscribe("t"), Pause(), Resume(),
    Notify(BROADCAST, 1), Send(1),
]


@pytest.mark.parametrize("frame", ALL_CLIENT_FRAMES, ids=lambda f: f.TYPE)
@pytest.mark.parametrize("endpoint", sorted(TABLES))
def test_endpoint_tables(frame: Any, endpoint: str) -> None:
    table = TABLES[endpoint]
    wire = {**frame.to_wire(), "id": "r9"}
    if frame.TYPE in table:
        assert parse_request(wire, table).id == "r9"
    else:
        violates(wire, table)


def test_endpoint_tables_contents() -> None:
    assert set(APP_FRAMES) == {"ping", "pong", "publish", "refresh"}
    assert set(CONSUMER_FRAMES) == {"ping", "pong", "subscribe", "unsubscribe", "pause", "resume", "notify"}
    assert set(CHAT_FRAMES) == {"ping", "pong", "send", "refresh"}


@pytest.mark.parametrize("kind", ["nope", "welcome", "ack", "message", "chat", "PING", "", 5, None, ["ping"]],
                         ids=repr)
@pytest.mark.parametrize("endpoint", sorted(TABLES))
def test_unknown_type_is_bad_request_echoing_id(endpoint: str, kind: Any) -> None:
    table = TABLES[endpoint]
    exc = bad({"type": kind, "id": "r10"}, table, rid="r10")
    assert "unknown" in exc.reason
    bad({"type": kind}, table, rid=None)


def test_missing_type_is_unknown() -> None:
    bad({"id": "r11"}, APP_FRAMES, rid="r11")


@pytest.mark.parametrize("obj", [[], ["ping"], "ping", 1, 1.5, None, True, b"x"], ids=repr)
@pytest.mark.parametrize("endpoint", sorted(TABLES))
def test_non_map_is_violation(endpoint: str, obj: Any) -> None:
    violates(obj, TABLES[endpoint])


@pytest.mark.parametrize(
    "obj",
    [
        [], "x", None,
        {"type": "nope"}, {"type": ["welcome"]}, {"type": {"a": 1}}, {},
        {"type": "welcome", "heartbeat": 1}, {"type": "welcome", "worker": "w", "heartbeat": True},
        {"type": "ack"}, {"type": "ack", "id": 1},
        {"type": "error", "reason": "x"},
        {"type": "message", "topic": "t", "worker": "w", "seq": 1, "ts": 1},
        {"type": "message", "topic": "t", "from": {}, "worker": "w", "seq": 1.5, "ts": 1},
        {"type": "notify", "data": 1, "id": "x"},
        {"type": "chat", "from": "a", "seq": True, "ts": 1},
        {"type": "joined"}, {"type": "left", "client": 5},
    ],
    ids=repr,
)
def test_bad_server_frames(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_server_frame(obj)


def test_timestamp_bytes_inside_data_are_not_an_extension() -> None:
    # the byte scan only gates the walk: the same bytes inside a str or bin are data
    for data in (b"\xd6\xff\x00\x00\x00\x01", "\u00d6\u00ff", [b"\xc7\x0c\xff" * 3, {"k": b"\xd7\xff"}]):
        frame = Publish("t", data)
        assert roundtrip_request(MSGPACK, frame, APP_FRAMES) == frame
