"""Origins and CORS on the master (PROTOCOL.md "Browsers" and "Security").

Decisions (docs/protocol.md "Browsers"):

* ``allowed_origins`` empty (the default): no ``Origin`` is refused, and no
  CORS header is sent, so a page of another origin can open WebSockets (as
  an app) but cannot read the HTTP API (the browser's same-origin policy);
  its preflights get ``403``.
* ``allowed_origins`` set (``*`` = any): an HTTP request or a handshake whose
  ``Origin`` is neither the master's own origin nor listed is ``403``. A listed
  origin gets ``Access-Control-Allow-Origin`` (its own value echoed, with
  ``Vary: Origin``) and its preflight ``OPTIONS`` is answered with ``204``.
* The master's own origin (the dashboard) is always allowed.
* ``/mc.js`` is a public script: it is served to any origin with
  ``Access-Control-Allow-Origin: *`` (a module script is fetched in CORS mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: served to every origin, whatever ``allowed_origins`` says
PUBLIC_PATHS = frozenset({"/mc.js", "/healthz"})
ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"


def same_origin(origin: str, host: str | None, scheme: str) -> bool:
    """Whether ``origin`` is the origin the request was sent to (its ``Host``)."""
    if not host:
        return False
    base = "https" if scheme in ("https", "wss") else "http"
    return origin == f"{base}://{host}"


def listed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin in allowed


def refused(origin: str | None, headers: Mapping[str, str], scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request or handshake carrying ``origin`` is 403 under ``allowed``."""
    if origin is None or not allowed:
        return False
    return not (listed(origin, allowed) or same_origin(origin, headers.get("host"), scheme))


def forbidden_body(origin: str) -> bytes:
    return orjson.dumps({"error": "forbidden", "reason": f"origin {origin[:200]!r} is not allowed"})


class OriginMiddleware:
    """HTTP only: preflights, CORS headers and 403 for foreign origins (handshakes: mc.master.entry)."""

    def __init__(self, app: ASGIApp, allowed: Callable[[], tuple[str, ...]]) -> None:
        self.app = app
        self.allowed = allowed  # read per request: a reload changes them without a restart

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, _with_headers(send, [(b"access-control-allow-origin", b"*")]))
            return
        for name, _ in scope["headers"]:  # a backend's request has no Origin: no Headers built for it
            if name == b"origin":
                break
        else:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or same_origin(origin, headers.get("host"), scope.get("scheme", "http")):
            await self.app(scope, receive, send)
            return
        allowed = self.allowed()
        ok = bool(allowed) and listed(origin, allowed)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if not ok and (preflight or allowed):
            await _send_plain(send, 403, forbidden_body(origin), [(b"content-type", b"application/json")])
            return
        if not ok:  # no allowed_origins: answer, without CORS headers (the page cannot read it)
            await self.app(scope, receive, send)
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if preflight:
            await _send_plain(send, 204, b"", [
                *cors,
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", MAX_AGE.encode()),
            ])
            return
        await self.app(scope, receive, _with_headers(send, cors))


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)
    return wrapped


async def _send_plain(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
