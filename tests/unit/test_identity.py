"""Handshake identity: the query string and Authorization header of each endpoint."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mc.protocol import ErrorCode, ProtocolError
from mc.protocol.frames import MAX_TAGS
from mc.protocol.identity import (
    MAX_TOKEN,
    AppIdentity,
    ChatIdentity,
    ConsumerIdentity,
    parse_app,
    parse_chat,
    parse_consumer,
)

NO_HEADERS: dict[str, str] = {}


def refused(fn: Any, *args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert info.value.close_code is None
    return info.value


# ------------------------------------------------------------------- app


def test_app_defaults() -> None:
    assert parse_app({"client": "alice"}, NO_HEADERS) == AppIdentity("alice", "default", (), None)


def test_app_full() -> None:
    ident = parse_app(
        {"client": "alice", "device": "phone", "tags": "driver,vip", "token": "t0k"}, NO_HEADERS
    )
    assert ident == AppIdentity("alice", "phone", ("driver", "vip"), "t0k")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("", ()),
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        ("b,a", ("b", "a")),
        ("a,,b,", ("a", "b")),  # empty items are ignored
        (",", ()),
        ("a,b,a", ("a", "b")),  # duplicates collapse, first order kept
    ],
)
def test_app_tags(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_app({"client": "c", "tags": raw}, NO_HEADERS).tags == expected


def test_app_tag_limit() -> None:
    tags = [f"t{i}" for i in range(MAX_TAGS)]
    assert parse_app({"client": "c", "tags": ",".join(tags)}, NO_HEADERS).tags == tuple(tags)
    # duplicates do not count against the limit
    assert len(parse_app({"client": "c", "tags": ",".join(tags + tags)}, NO_HEADERS).tags) == MAX_TAGS
    refused(parse_app, {"client": "c", "tags": ",".join([*tags, "one-more"])}, NO_HEADERS)


@pytest.mark.parametrize("raw", ["a b", "a,b c", "é", "a;b", "x" * 129], ids=repr)
def test_app_bad_tags(raw: str) -> None:
    refused(parse_app, {"client": "c", "tags": raw}, NO_HEADERS)


def test_app_client_required() -> None:
    exc = refused(parse_app, {}, NO_HEADERS)
    assert "client" in exc.reason
    refused(parse_app, {"device": "phone"}, NO_HEADERS)


@pytest.mark.parametrize("value", ["", "a b", "x" * 129, "a/b", "é", "a\n"], ids=repr)
def test_app_bad_names(value: str) -> None:
    exc = refused(parse_app, {"client": value}, NO_HEADERS)
    assert "client" in exc.reason
    exc = refused(parse_app, {"client": "ok", "device": value}, NO_HEADERS)
    assert "device" in exc.reason


def test_app_name_limits() -> None:
    ident = parse_app({"client": "x" * 128, "device": "y" * 128}, NO_HEADERS)
    assert ident.client == "x" * 128 and ident.device == "y" * 128


NAME_CHARS = string.ascii_letters + string.digits + "._-:@"
valid_names = st.text(NAME_CHARS, min_size=1, max_size=12)
# mostly valid names, else anything (empty, spaces, commas, non-ASCII, too long), so
# both outcomes are common (about 40% of the examples are accepted)
some_names = st.one_of(valid_names, valid_names, valid_names, st.text(max_size=10), st.just("x" * 129))
some_tags = st.one_of(
    st.lists(valid_names | st.just(""), max_size=MAX_TAGS + 2),  # empty items, too many
    st.lists(valid_names | st.text(max_size=4), max_size=3),  # bad characters
).map(",".join)


def _name_ok(value: str) -> bool:
    return 1 <= len(value) <= 128 and all(c in NAME_CHARS for c in value)


def expected_app(client: str, device: str | None, tags: str | None) -> AppIdentity | None:
    """What parse_app must make of the query, from the rules alone (None: refused)."""
    device = "default" if device is None else device
    listed = tuple(dict.fromkeys(t for t in (tags or "").split(",") if t))
    if not (_name_ok(client) and _name_ok(device)):
        return None
    if len(listed) > MAX_TAGS or not all(_name_ok(t) for t in listed):
        return None
    return AppIdentity(client, device, listed, None)


@settings(max_examples=300, deadline=None)
@given(client=some_names, device=st.none() | some_names, tags=st.none() | some_tags)
def test_app_parse_is_total(client: str, device: str | None, tags: str | None) -> None:
    """Any query parses to exactly what the rules say, or is refused with bad_request."""
    query = {"client": client}
    if device is not None:
        query["device"] = device
    if tags is not None:
        query["tags"] = tags
    want = expected_app(client, device, tags)
    event("accepted" if want is not None else "refused")
    if want is None:
        refused(parse_app, query, NO_HEADERS)
    else:
        assert parse_app(query, NO_HEADERS) == want


@settings(max_examples=100, deadline=None)
@given(client=valid_names, device=st.none() | valid_names,
       tags=st.lists(valid_names, max_size=MAX_TAGS).map(",".join))
def test_app_parse_accepts_every_valid_query(client: str, device: str | None, tags: str) -> None:
    """The accepting branch, on every example (valid names only)."""
    query = {"client": client, "tags": tags, **({"device": device} if device is not None else {})}
    ident = parse_app(query, NO_HEADERS)
    assert (ident.client, ident.device) == (client, device or "default")
    assert ident.tags == tuple(dict.fromkeys(t for t in tags.split(",") if t))


# ----------------------------------------------------------------- token


def test_token_from_query() -> None:
    assert parse_app({"client": "c", "token": "abc"}, NO_HEADERS).token == "abc"


@pytest.mark.parametrize(
    "header,token",
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("Bearer   abc  ", "abc"),
     ("Bearer a.b-c_d=", "a.b-c_d=")],
)
def test_token_from_bearer_header(header: str, token: str) -> None:
    assert parse_app({"client": "c"}, {"authorization": header}).token == token
    assert parse_consumer({"name": "n"}, {"authorization": header}).token == token


def test_query_token_wins_over_header() -> None:
    ident = parse_app({"client": "c", "token": "q"}, {"authorization": "Bearer h"})
    assert ident.token == "q"


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer ", "Bearer    ", "abc", "", "Token abc"])
def test_bad_authorization_header(header: str) -> None:
    exc = refused(parse_app, {"client": "c"}, {"authorization": header})
    assert "Bearer" in exc.reason
    refused(parse_consumer, {"name": "n"}, {"authorization": header})


def test_no_token() -> None:
    assert parse_app({"client": "c"}, NO_HEADERS).token is None
    assert parse_consumer({"name": "n"}, {"other": "x"}).token is None


def test_token_length() -> None:
    assert parse_app({"client": "c", "token": "t" * MAX_TOKEN}, NO_HEADERS).token == "t" * MAX_TOKEN
    refused(parse_app, {"client": "c", "token": "t" * (MAX_TOKEN + 1)}, NO_HEADERS)
    refused(parse_app, {"client": "c"}, {"authorization": "Bearer " + "t" * (MAX_TOKEN + 1)})
    refused(parse_consumer, {"name": "n", "token": "t" * (MAX_TOKEN + 1)}, NO_HEADERS)
    refused(parse_app, {"client": "c", "token": ""}, NO_HEADERS)


# -------------------------------------------------------------- consumer


def test_consumer() -> None:
    assert parse_consumer({"name": "billing"}, NO_HEADERS) == ConsumerIdentity("billing", None)
    assert parse_consumer({"name": "billing", "token": "k"}, NO_HEADERS) == ConsumerIdentity("billing", "k")
    exc = refused(parse_consumer, {}, NO_HEADERS)
    assert "name" in exc.reason
    refused(parse_consumer, {"name": ""}, NO_HEADERS)
    refused(parse_consumer, {"name": "a b"}, NO_HEADERS)
    refused(parse_consumer, {"name": "x" * 129}, NO_HEADERS)
    # a consumer is identified by name, not client
    refused(parse_consumer, {"client": "alice"}, NO_HEADERS)


# ------------------------------------------------------------------ chat


def test_chat_defaults() -> None:
    ident = parse_chat("room-1", {"client": "alice"}, NO_HEADERS)
    assert ident == ChatIdentity("room-1", AppIdentity("alice"), "open")


@pytest.mark.parametrize("mode", ["open", "join"])
def test_chat_modes(mode: str) -> None:
    ident = parse_chat("s", {"client": "a", "device": "d", "tags": "x", "mode": mode},
                       {"authorization": "Bearer t"})
    assert ident == ChatIdentity("s", AppIdentity("a", "d", ("x",), "t"), mode)


@pytest.mark.parametrize("mode", ["", "OPEN", "create", "joi", "open,join"])
def test_chat_bad_mode(mode: str) -> None:
    exc = refused(parse_chat, "s", {"client": "a", "mode": mode}, NO_HEADERS)
    assert "mode" in exc.reason


@pytest.mark.parametrize("session", ["", "a b", "x" * 129, "a/b", "é"], ids=repr)
def test_chat_bad_session(session: str) -> None:
    exc = refused(parse_chat, session, {"client": "a"}, NO_HEADERS)
    assert "session" in exc.reason


def test_chat_needs_app_identity() -> None:
    refused(parse_chat, "s", {}, NO_HEADERS)
    refused(parse_chat, "s", {"client": "a", "token": "t" * (MAX_TOKEN + 1)}, NO_HEADERS)
    refused(parse_chat, "s", {"client": "a"}, {"authorization": "Basic x"})
