"""mc.websocket.handshake, checked against a real wsproto client."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from mc.websocket import (
    OP_TEXT,
    FrameParser,
    HandshakeError,
    HandshakeReader,
    HandshakeRequest,
    accept_response,
    reject_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3


def client_request(
    target: str = "/v1/app?client=a", subprotocols: list[str] | None = None
) -> tuple[WSConnection, bytes]:
    """A wsproto client and the upgrade request it sends."""
    client = WSConnection(ConnectionType.CLIENT)
    request = Request(host="example.com", target=target, subprotocols=subprotocols or [])
    return client, client.send(request)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade(
    target: str = "/", *extra: str, key: str = KEY, method: str = "GET", version: str = "1.1"
) -> bytes:
    """A valid upgrade request unless the arguments spoil it."""
    return head(
        f"{method} {target} HTTP/{version}",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {key}",
        *extra,
    )


def read(data: bytes, max_bytes: int = 16384) -> HandshakeRequest:
    request = HandshakeReader(max_bytes).feed(data)
    assert request is not None
    return request


# --- accepting ----------------------------------------------------------------


def test_wsproto_client_accepts_our_101_and_negotiates_the_subprotocol() -> None:
    client, data = client_request("/v1/app?client=c1", ["mc.v1.msgpack", "mc.v1.json"])
    request = read(data)
    assert request.is_websocket
    assert (request.method, request.path, request.query) == ("GET", "/v1/app", {"client": "c1"})
    assert request.subprotocols == ["mc.v1.msgpack", "mc.v1.json"]
    client.receive_data(accept_response(request, "mc.v1.json"))
    [event] = client.events()
    assert isinstance(event, AcceptConnection)
    assert event.subprotocol == "mc.v1.json"


def test_no_subprotocol_then_frames_flow_both_ways() -> None:
    client, data = client_request()
    request = read(data)
    client.receive_data(accept_response(request, None))
    assert [type(e) for e in client.events()] == [AcceptConnection]
    assert FrameParser().feed(client.send(TextMessage("hi"))) == [(OP_TEXT, b"hi")]


def test_the_rfc_example_accept_key() -> None:
    response = accept_response(read(upgrade()), None)
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Protocol" not in response


def test_accept_refuses_non_upgrades_and_unoffered_subprotocols() -> None:
    with pytest.raises(ValueError):
        accept_response(read(head("GET / HTTP/1.1", "Host: x")), None)
    with pytest.raises(ValueError):
        accept_response(read(upgrade()), "mc.v1.json")


def test_byte_by_byte_feeding_and_trailing_frames() -> None:
    _client, data = client_request()
    frames = FrameProtocol(client=True, extensions=[]).send_data("early")
    reader = HandshakeReader()
    stream = data + bytes(frames)
    results = [reader.feed(stream[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] is not None and results[-1].is_websocket
    assert reader.trailing == b""

    reader = HandshakeReader()
    assert reader.feed(stream) is not None
    assert reader.trailing == bytes(frames)
    assert FrameParser().feed(reader.trailing) == [(OP_TEXT, b"early")]


def test_feeding_a_finished_reader_is_a_bug() -> None:
    reader = HandshakeReader()
    reader.feed(upgrade())
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


# --- parsing ----------------------------------------------------------------


def test_query_and_path_are_percent_decoded() -> None:
    query = "client=caf%C3%A9&tags=a%2Cb&x=1&x=2&blank=&plus=a+b&flag"
    request = read(upgrade(f"/v1/chat/room%201?{query}"))
    assert request.path == "/v1/chat/room 1"
    assert request.raw_target == f"/v1/chat/room%201?{query}"
    assert request.raw_query == query
    assert request.query == {
        "client": "café",
        "tags": "a,b",
        "x": "2",  # the last one wins
        "blank": "",
        "plus": "a b",
        "flag": "",
    }


def test_headers_are_lower_cased_and_duplicates_joined() -> None:
    request = read(
        upgrade(
            "/",
            "Authorization: Bearer t0k",
            "Sec-WebSocket-Protocol: mc.v1.json, ,x",
            "sec-websocket-protocol: mc.v1.msgpack",
        )
    )
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["sec-websocket-protocol"] == "mc.v1.json, ,x, mc.v1.msgpack"
    assert request.subprotocols == ["mc.v1.json", "x", "mc.v1.msgpack"]
    assert request.is_websocket


@pytest.mark.parametrize(
    "data",
    [
        upgrade(method="POST"),
        upgrade(version="1.0"),
        upgrade(key="not base64!"),
        upgrade(key="AAAA"),  # 3 bytes
        upgrade().replace(b"Sec-WebSocket-Version: 13\r\n", b""),
        upgrade().replace(b"Upgrade: websocket\r\n", b""),
        upgrade().replace(b"keep-alive, Upgrade", b"keep-alive"),
        upgrade().replace(b"Version: 13", b"Version: 8"),
        upgrade().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        head("GET / HTTP/1.1", "Host: x"),
    ],
)
def test_invalid_upgrades_parse_but_are_not_websocket(data: bytes) -> None:
    assert not read(data).is_websocket


def test_case_insensitive_tokens_make_a_valid_upgrade() -> None:
    data = head(
        "GET / HTTP/1.1",
        "Host: x",
        "upgrade: WebSocket",
        "connection: UPGRADE",
        "sec-websocket-version: 13",
        f"sec-websocket-key: {KEY}",
    )
    assert read(data).is_websocket


# --- failing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS hello
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        upgrade("/", "Content-Length: 5") + b"hello",
        upgrade("/", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
        upgrade("/", "Content-Length: 1", "Content-Length: 2"),
    ],
)
def test_malformed_requests_are_400(data: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        HandshakeReader().feed(data)
    assert info.value.status == 400


def test_end_of_stream_before_the_head_is_400() -> None:
    reader = HandshakeReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(HandshakeError) as info:
        reader.feed(b"")
    assert info.value.status == 400


@pytest.mark.parametrize("chunk", [1, 1000, 100_000])
def test_oversize_heads_are_431_however_they_arrive(chunk: int) -> None:
    data = upgrade("/", *[f"X-Pad-{i}: {'p' * 90}" for i in range(40)])
    assert len(data) > 4000
    reader = HandshakeReader(max_bytes=4000)
    with pytest.raises(HandshakeError) as info:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
    assert info.value.status == 431
    with pytest.raises(HandshakeError):  # stays failed
        reader.feed(b"\r\n")


def test_a_head_of_exactly_max_bytes_passes() -> None:
    data = upgrade()
    assert read(data, max_bytes=len(data)).is_websocket
    with pytest.raises(HandshakeError) as info:
        HandshakeReader(max_bytes=len(data) - 1).feed(data)
    assert info.value.status == 431


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=300)
        | st.sampled_from([b"\r\n", b": ", b"GET / HTTP/1.1\r\n", b"Host: x\r\n"]),
        max_size=12,
    )
)
def test_garbage_raises_only_handshake_errors(chunks: list[bytes]) -> None:
    reader = HandshakeReader(max_bytes=1024)
    try:
        for chunk in chunks:
            if reader.feed(chunk) is not None:
                return
    except HandshakeError as exc:
        assert exc.status in (400, 431)


# --- rejecting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (307, b"", [("Location", "ws://127.0.0.1:7102/v1/app?client=a")]),
        (400, b'{"error":"bad_request","reason":"client"}', [("Content-Type", "application/json")]),
        (401, b"", []),
        (404, b"no such session", [("Content-Type", "text/plain")]),
        (409, b"", []),
        (431, b"", []),
        (503, b"", [("Retry-After", "5")]),
    ],
)
def test_rejections_as_a_wsproto_client_sees_them(status: int, body: bytes, headers: list) -> None:
    client, _ = client_request()
    response = reject_response(status, body, headers)
    client.receive_data(response)
    events = list(client.events())
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == status
    received = {name.decode().lower(): value.decode() for name, value in events[0].headers}
    assert received["content-length"] == str(len(body))
    assert received["connection"] == "close"
    for name, value in headers:
        assert received[name.lower()] == value
    assert b"".join(e.data for e in events[1:] if isinstance(e, RejectData)) == body


def test_reason_phrases() -> None:
    assert reject_response(503).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert reject_response(431).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert reject_response(307).startswith(b"HTTP/1.1 307 Temporary Redirect\r\n")


@pytest.mark.parametrize(
    "headers",
    [[("Location", "/x\r\nSet-Cookie: a=b")], [("Bad Name", "v")], [("X", "a\nb")]],
)
def test_reject_refuses_response_splitting(headers: list) -> None:
    with pytest.raises(ValueError):
        reject_response(307, b"", headers)
