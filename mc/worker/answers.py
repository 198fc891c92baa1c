"""The answers the worker core gives a handshake, and their bytes on the wire.

PROTOCOL.md "WebSocket endpoints": ``Accept`` (101), ``Refuse`` (400, 401,
404, 409, 426, 503, with a JSON body ``{"error", "reason"}``), ``Redirect``
(307 with ``Location``), ``Respond`` (a plain HTTP answer such as
``/healthz``) and ``Locate``: the core cannot decide without asking the
master who owns a chat session; the shell asks and hands the outcome back.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from mc.protocol import Codec
from mc.tokens import Claims
from mc.websocket import reject_response

RETRY_AFTER = "1"
JSON_TYPE = ("Content-Type", "application/json")


@attrs.frozen
class Accept:
    """Upgrade: the endpoint, codec and identity of the new connection."""

    kind: str
    codec: Codec
    subprotocol: str | None
    client: str = ""
    device: str = "default"
    tags: tuple[str, ...] = ()
    name: str = ""
    session: str | None = None
    #: the session's last seq when the master handed it over from a draining owner
    seq: int = 0
    #: the app's token claims (None: auth off)
    auth: Claims | None = None
    #: the consumer's API key (None: keys off)
    key: str | None = None


@attrs.frozen
class Respond:
    """A plain HTTP answer, then the socket closes."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> bytes:
        return reject_response(self.status, orjson.dumps(self.body), (JSON_TYPE, *self.headers))


def refuse(status: int, error: str, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Respond:
    """A refused handshake: ``{"error": code, "reason": text}``."""
    return Respond(status, {"error": error, "reason": reason}, headers)


def unavailable(reason: str) -> Respond:
    return refuse(503, "unavailable", reason, (("Retry-After", RETRY_AFTER),))


def redirect(location: str) -> Respond:
    return refuse(307, "redirect", f"go to {location}", (("Location", location),))


@attrs.frozen
class Locate:
    """Ask the cluster who owns ``session`` (claiming it when ``create``), then
    call ``WorkerCore.located`` with the outcome."""

    session: str
    create: bool
    raw_query: str
    accept: Accept


@attrs.frozen
class Owned:
    """The outcome of a Locate: this worker owns the session (``seq``: where it goes on)."""

    seq: int = 0


@attrs.frozen
class LocateFailed:
    """The outcome of a Locate that found no owner: 404 (``not_found``) or 503."""

    not_found: bool
    reason: str


Answer = Accept | Respond | Locate
