"""mc.master.h11_shortcut: whatever bytes arrive, the same answers and events as h11 gives.

Hypercorn's real ``H11Protocol`` (patched by mc.master.hypercorn_patches),
its ``HTTPStream``, task group and h11, with the connection's socket replaced
by a list of what the protocol sends. Each case is fed twice, to a protocol
whose ``handle`` may take the shortcut and to one that always goes through
h11; everything sent must be the same, and h11 must end in the same state.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import h11
import orjson
import pytest
import trio
import trio.testing
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypothesis import given, settings
from hypothesis import strategies as st
from trio._core import _run as trio_run

from mc.master import hypercorn_patches
from tests.asgi import request_body

INLINE = "/inline"
_DATE = re.compile(rb"date: [^\r]*")


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Echoes what it was given (the scope's request and the body); some bodies pick another answer."""
    body = await request_body(receive)
    if body == b"boom":
        raise RuntimeError("a failing app: Hypercorn answers 500")
    headers_seen = [[n.decode(), v.decode("latin1")] for n, v in scope["headers"]]
    echo = orjson.dumps([scope["method"], scope["path"], scope["query_string"].decode(), headers_seen,
                         body.decode("latin1")])
    headers = [(b"content-type", b"application/json")]
    if body == b"unframed":  # no Content-Length: h11 chunks it
        pass
    elif body == b"wrong length":
        headers.append((b"content-length", b"%d" % (len(echo) + 1)))
    else:
        headers.append((b"content-length", b"%d" % len(echo)))
    if body == b"close":
        headers.append((b"connection", b"close"))
    status = 204 if body == b"204" else 200
    if body == b"parts":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": echo[:5], "more_body": True})
        await send({"type": "http.response.body", "body": echo[5:]})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if status == 204 else echo})


async def _run(feeds: list[bytes], shortcut: bool, max_requests: int) -> tuple[list[Any], Any, int]:
    """What a protocol sends for ``feeds`` (one read each), its h11 states and its request count."""
    assert hypercorn_patches.install(frozenset({INLINE}))
    config = Config()
    config.accesslog = None
    config.keep_alive_max_requests = max_requests
    sent: list[Any] = []

    async def send(event: Any) -> None:
        if type(event) is RawData:
            sent.append(_DATE.sub(b"date: -", event.data))
        elif type(event) is Updated:
            sent.append(("updated", event.idle))
        elif type(event) is Closed:
            sent.append("closed")

    async with TaskGroup() as group:
        protocol = H11Protocol(ASGIWrapper(app), config, WorkerContext(None), group, {},  # type: ignore[arg-type]
                               False, ("127.0.0.1", 5000), ("127.0.0.1", 80), send)
        handle = protocol.handle if shortcut else hypercorn_patches._original_handle.__get__(protocol)
        for data in feeds:
            if "closed" in sent:
                break
            try:
                await handle(RawData(data=data))
            except Exception as exc:  # an h2c upgrade: Hypercorn's wrapper switches protocol on it
                sent.append(type(exc).__name__)
                break
            await trio.testing.wait_all_tasks_blocked()
        conn = protocol.connection
        states = (conn.our_state, conn.their_state) if type(conn) is h11.Connection else type(conn).__name__
        group._nursery.cancel_scope.cancel()  # type: ignore[union-attr]
    return sent, states, protocol.keep_alive_requests


def _both(feeds: list[bytes], max_requests: int = 1000) -> list[Any]:
    # trio orders ready tasks at random; a request whose app runs in a task of its own can then be
    # answered before or after h11 reads the bytes behind it. Both runs get the same order.
    order = trio_run._r.getstate()
    taken = trio.run(_run, feeds, True, max_requests)
    trio_run._r.setstate(order)
    through_h11 = trio.run(_run, feeds, False, max_requests)
    assert taken == through_h11
    return taken[0]


def _request(body: bytes = b"{}", headers: tuple[str, ...] = ("host: t",), target: str = INLINE,
             method: str = "POST", version: str = "1.1", length: int | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", *headers]
    if length is not None or method == "POST":
        lines.append(f"content-length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_header = st.sampled_from([
    "host: t", "host: t", "host: other", "x-a: b", "Content-Type: application/json",
    "connection: keep-alive", "connection: close", "Connection: Keep-Alive, Close", "connection: upgrade",
    "upgrade: h2c", "upgrade: websocket", "expect: 100-continue", "transfer-encoding: chunked",
    "content-length: 2", "content-length: 2, 2", "content-length: +2",
    "content-length: 9999999999999999999999",
    "x-folded: a\r\n b", "x-bare: lf\nx-next: 1", "bad header: x", "x-nul: a\x00b", "x-high: \xe9",
    "x-empty:", "  leading: space", ":", "x-cr: a\rb",
])
_body = st.one_of(st.sampled_from([b"{}", b"boom", b"unframed", b"wrong length", b"close", b"204", b"parts",
                                   b"", b"0\r\n\r\n"]), st.binary(max_size=12))


@st.composite
def _requests(draw: Any) -> bytes:
    body = draw(_body)
    headers = tuple(draw(st.lists(_header, max_size=5)))
    length = draw(st.one_of(st.none(), st.integers(0, len(body) + 2)))
    target = draw(st.sampled_from([INLINE, INLINE, INLINE + "?q=1", "/other", "*"]))
    return _request(body, headers, target=target,
                    method=draw(st.sampled_from(["POST", "POST", "POST", "GET", "PRI", "post"])),
                    version=draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0", "2.0"])), length=length)


_stray = st.sampled_from([b"xyz", b"\r\n", b"\n", b"POST /inline HTTP/1.1\r\n", b"PO"])


@st.composite
def _feeds(draw: Any) -> list[bytes]:
    """Reads of whole requests, several in one read, a request cut anywhere, stray bytes between."""
    items = draw(st.lists(st.one_of(_requests(), _requests(), _stray), min_size=1, max_size=4))
    stream = b"".join(items)
    bounds = {0, len(stream)}
    at = 0
    for item in items:  # a read often ends where a request (or stray bytes) ends
        at += len(item)
        if draw(st.booleans()):
            bounds.add(at)
    bounds.update(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=1)))
    cuts = sorted(bounds)
    return [stream[a:b] for a, b in itertools.pairwise(cuts)]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ``h11.Connection.next_event`` call: whether h11 read anything."""
    calls: list[int] = []
    original = h11.Connection.next_event
    monkeypatch.setattr(h11.Connection, "next_event", lambda self: calls.append(1) or original(self))
    return calls


@settings(max_examples=1000, deadline=None)
@given(feeds=_feeds(), max_requests=st.sampled_from([1000, 1000, 2]))
def test_any_bytes_get_what_h11_gives(feeds: list[bytes], max_requests: int) -> None:
    _both(feeds, max_requests)


@pytest.mark.parametrize("feeds", [
    [_request()],
    [_request(b'{"to": {"client": "c"}, "data": 1}', ("Host: t", "Content-Type: application/json",
                                                      "connection: keep-alive"))],
    [_request(b"", length=0)],
    [_request(), _request(b"[1]"), _request(b"")],
])
def test_plain_inline_requests_take_the_shortcut(feeds: list[bytes], reads: list[int]) -> None:
    sent = trio.run(_run, feeds, True, 1000)[0]
    assert not reads  # h11 never read a thing
    answers = [event for event in sent if type(event) is bytes]
    assert len(answers) == len(feeds) and all(a.startswith(b"HTTP/1.1 200 \r\n") for a in answers)
    assert sent[-1] == ("updated", True)


@pytest.mark.parametrize(("feeds", "writes"), [
    ([_request(b"boom")], 1),  # the app fails: Hypercorn's 500, written by h11
    ([_request(b"parts")], 2),  # a streamed answer: its head with the first part, then the rest
    ([_request(b"unframed")], 1),  # chunked by h11
    ([_request(b"close")], 1),  # the answer closes the connection
    ([_request(b"wrong length")], 0),  # h11 refuses to write it (the app's error is logged)
    ([_request(b"204")], 1),
    ([_request(), _request()], 2),  # the second answer ends the keep-alive request limit of 2
])
def test_answers_h11_frames_itself_are_written_by_h11(feeds: list[bytes], writes: int,
                                                      reads: list[int]) -> None:
    sent = _both(feeds, max_requests=2)
    assert reads  # h11 was told the request
    assert sum(type(event) is bytes for event in sent) == writes


@pytest.mark.parametrize("feeds", [
    [_request() + _request()],  # pipelined
    [_request()[:-1], _request()[-1:]],  # in parts
    [_request(headers=("host: t", "expect: 100-continue"))],
    [_request(headers=("host: t", "connection: close"))],
    [_request(version="1.0")],
    [_request(headers=("host: t", "x-folded: a\r\n b"))],
    [_request(headers=("host: t", "x-bare: a\nx-b: c"))],
    [_request(headers=())],  # no host: 400
    [_request(length=3)],  # a body still to come
    [_request(headers=("host: t", "content-length: 2, 3"))],
    [_request(target=INLINE + "?q=1")],  # not an inline path: its app runs in a task of its own
    [_request() + b"PO", _request()],  # h11 holds bytes from before: the second is a "POPOST"
])
def test_other_requests_are_read_by_h11(feeds: list[bytes], reads: list[int]) -> None:
    _both(feeds)
    assert reads
