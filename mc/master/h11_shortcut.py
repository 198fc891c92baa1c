"""A whole inline request served without h11's state machine: same checks, same bytes.

Under notify load, once the app ran in the connection's task, the master's
CPU went mostly to h11's per-event state machine (each request's six events
through ``_process_event``, each firing transitions and reading the headers
again) and to Hypercorn's event loop around it: 164 of 673 Python calls per
request. Nearly every notify arrives in one read: a head and its
``Content-Length`` body, nothing more. For exactly those, :func:`serve` reads
the head with h11's own expressions and checks (``request_line_re``,
``_decode_header_lines``, ``h11.Request``), gives the request to Hypercorn's
stream as Hypercorn does, and :func:`answer` writes the answer with h11's
writer. h11's connection stays between two requests, where it would be again
after this one.

Everything else is h11's, as before:

* a request in parts or pipelined, a head h11 reads otherwise (bare line
  feeds, folded lines) or refuses, HTTP/1.0: the bytes go to h11 untouched;
* a request h11 acts on (``Expect``, ``Upgrade``, ``Transfer-Encoding``,
  ``Connection: close``): likewise;
* an answer h11 frames or closes itself (no ``Content-Length`` or another
  length than the body's, ``Transfer-Encoding``, ``Connection``, a streamed
  answer, a ``500`` from a failed app, the keep-alive request limit): the
  request is given to h11 first (:func:`tell_h11`), so h11 writes the answer
  from the state it would have had.

The request's bytes are held on the protocol (``_mc_shortcut``) from
:func:`serve` until its stream closes (:func:`closed`) or h11 is told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
from h11 import _readers, _util, _writers
from hypercorn.events import Closed, Updated
from hypercorn.protocol.events import Body, EndBody
from hypercorn.protocol.h11 import STREAM_ID

from .h11_heads import Whole, final_headers

_BETWEEN_REQUESTS = (b"", False)  # h11's trailing_data with nothing buffered
_ACTED_ON = frozenset((b"expect", b"upgrade", b"transfer-encoding"))  # request headers h11 acts on
_FRAMING = frozenset((b"transfer-encoding", b"connection"))  # answer headers h11 acts on


def fits() -> bool:
    """Whether h11 still has the reader and writer parts used here (h11 0.14 to 0.16 do)."""
    return (all(hasattr(_readers, name) for name in ("request_line_re", "_decode_header_lines"))
            and hasattr(_util, "validate") and hasattr(_writers, "write_any_response"))


async def serve(protocol: Any, data: bytes, inline_length: Callable[[h11.Request], int | None]) -> bool:
    """Serve ``data`` if it is exactly one plain inline request; False leaves it untouched for h11.

    ``inline_length``: the body length of a request served inline, None for
    any other (the protocol's own rule, so both paths agree).
    """
    conn = protocol.connection
    if (not data.startswith(b"POST ") or protocol.stream is not None or type(conn) is not h11.Connection
            or conn.their_state is not h11.IDLE or conn.our_state is not h11.IDLE
            or conn.trailing_data != _BETWEEN_REQUESTS):
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    lines = data[:end].split(b"\r\n")  # a stray CR or LF is left in a line, which h11's expressions refuse
    try:
        parts = _util.validate(_readers.request_line_re, lines[0], "illegal request line")
        request = h11.Request(headers=list(_readers._decode_header_lines(lines[1:])), _parsed=True, **parts)
    except h11.LocalProtocolError:
        return False  # h11 refuses it with its own answer
    body = data[end + 4:]
    if request.http_version != b"1.1" or inline_length(request) != len(body) or not _plain(request):
        return False
    protocol._mc_shortcut = data
    await protocol.send(Updated(idle=False))
    await protocol._create_stream(request)
    if body and protocol.stream is not None:
        await protocol.stream.handle(Body(stream_id=STREAM_ID, data=body))
    if protocol.stream is not None:
        await protocol.stream.handle(EndBody(stream_id=STREAM_ID))
    return True


def _plain(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name in _ACTED_ON or (name == b"connection" and b"close" in value.lower()):
            return False
    return True


def answer(protocol: Any, event: Whole) -> bytes | None:
    """The bytes h11 writes for ``event``; None if h11 would frame or close it itself (a
    ``Connection`` header: the app's, or the close at the keep-alive request limit)."""
    try:
        headers = final_headers(protocol, event.headers)
        length = None
        for name, value in headers:
            if name == b"content-length":
                length = int(value)
            elif name in _FRAMING:
                return None
        if length != len(event.body):
            return None
        out: list[bytes] = []
        _writers.write_any_response(h11.Response(headers=headers, status_code=event.status_code), out.append)
    except h11.LocalProtocolError:
        return None  # h11 raises it again, from its own state
    out.append(event.body)
    return b"".join(out)


def tell_h11(protocol: Any) -> None:
    """Give h11 the request the shortcut took: h11 is then where it would be, to write the answer."""
    conn = protocol.connection
    conn.receive_data(protocol._mc_shortcut)
    protocol._mc_shortcut = None
    for _ in range(3):  # Request, Data (if there is a body), EndOfMessage
        if type(conn.next_event()) is h11.EndOfMessage:
            return
    raise RuntimeError("h11 read the shortcut's request otherwise")


async def closed(protocol: Any) -> None:
    """The stream of a request the shortcut answered closed: ``_maybe_recycle`` without h11's cycle."""
    protocol._mc_shortcut = None
    await protocol._close_stream()
    if protocol.context.terminated.is_set():
        await protocol.send(Closed())
    else:
        await protocol.can_read.set()
        await protocol.send(Updated(idle=True))
