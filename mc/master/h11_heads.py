"""An HTTP/1.1 answer's parts as Hypercorn's h11 protocol makes them, with less work per response.

A notify's answer has the same few headers every time, but for its length
and the second in ``date``. Hypercorn asked its config for ``date`` and
``server`` on every response, and h11 ran its regular expressions over every
name and value of every one; here both are done once and kept.
"""

from __future__ import annotations

import time
from itertools import chain
from typing import Any

from h11._headers import Headers as H11Headers
from h11._headers import normalize_and_validate


class Whole:
    """An inline stream's complete answer, to its protocol as one event (Hypercorn sends three)."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body


_server_headers_cache: tuple[Any, int, list[tuple[bytes, bytes]]] | None = None


def server_headers(config: Any) -> list[tuple[bytes, bytes]]:
    """``config.response_headers("h11")`` (date, server), made once a second, not per response."""
    global _server_headers_cache
    second = int(time.time())
    cached = _server_headers_cache
    if cached is None or cached[0] is not config or cached[1] != second:
        cached = _server_headers_cache = (config, second, config.response_headers("h11"))
    return cached[2]


#: distinct response header lists kept validated; past it the table starts again (a route whose
#: headers vary per response only misses it)
VALIDATED_HEADERS = 256
_validated_cache: dict[tuple[tuple[bytes, bytes], ...], H11Headers] = {}


def validated(headers: list[tuple[bytes, bytes]]) -> H11Headers:
    """h11's check of a response's headers (``normalize_and_validate``), once per distinct list.

    The same list gets the same checked ``Headers`` (h11 never changes one),
    and a list that fails is checked, and fails, anew.
    """
    key = tuple(headers)
    checked = _validated_cache.get(key)
    if checked is None:
        checked = normalize_and_validate(headers)
        if len(_validated_cache) >= VALIDATED_HEADERS:
            _validated_cache.clear()
        _validated_cache[key] = checked
    return checked


def final_headers(protocol: Any, headers: list[tuple[bytes, bytes]]) -> H11Headers:
    """A final response's headers as Hypercorn's h11 protocol sends them, checked: the app's,
    then date and server, and ``connection: close`` at the keep-alive request limit."""
    headers = list(chain(headers, server_headers(protocol.config)))
    if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
        headers.append((b"connection", b"close"))
    return validated(headers)
