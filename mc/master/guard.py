"""The master's HTTP access rules (PROTOCOL.md "Security"), as one ASGI middleware.

* With ``api_keys`` set, every ``POST`` and ``DELETE`` and ``GET`` of
  ``/v1/stats``, ``/v1/clients/...`` and ``/v1/sessions/...`` need
  ``Authorization: Bearer KEY`` (else ``401``); ``/v1/assign``,
  ``/v1/workers``, ``/healthz``, ``/metrics``, ``/mc.js`` and the dashboard
  page stay open (the page asks for a key and sends it).
* A ``POST`` body must be ``Content-Type: application/json`` (else ``415``),
  so a foreign page cannot post with a simple form or a ``no-cors`` fetch.
  **Decision:** a ``POST`` without a body (drain, rebalance) needs no
  content type; with keys set it needs the key, which such a page cannot add.

WebSocket scopes (the entry point, the control link) are checked where they
are handled.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mc.security import bearer, key_matches

#: prefixes: ``/v1/stats`` covers ``/v1/stats/history``, ``/v1/sessions`` the listing too;
#: ``/v1/events`` pushes the same figures as ``/v1/stats``
PROTECTED_GETS = ("/v1/stats", "/v1/clients/", "/v1/sessions", "/v1/events")


def needs_key(method: str, path: str) -> bool:
    return method in ("POST", "DELETE") or (method == "GET" and path.startswith(PROTECTED_GETS))


class Guard:
    def __init__(self, app: ASGIApp, keys: Callable[[], tuple[str, ...]]) -> None:
        self.app = app
        self.keys = keys  # read per request: a reload changes them without a restart

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        method, path = scope["method"], scope["path"]
        auth = length = kind = None
        chunked = False
        for name, value in scope["headers"]:  # one pass (ASGI names are lower case); the first counts
            if name == b"authorization":
                auth = value.decode("latin-1") if auth is None else auth
            elif name == b"content-length":
                length = value if length is None else length
            elif name == b"content-type":
                kind = value.decode("latin-1") if kind is None else kind
            elif name == b"transfer-encoding":
                chunked = True
        keys = self.keys()
        if keys and needs_key(method, path) and not key_matches(bearer(auth), keys):
            return JSONResponse({"error": "unauthorized", "reason": "an API key is required"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        has_body = (length is not None and length != b"0") or chunked
        json_body = (kind or "").split(";", 1)[0].strip().lower() == "application/json"
        if method == "POST" and has_body and not json_body:
            return JSONResponse({"error": "unsupported_media_type",
                                 "reason": "POST bodies must be Content-Type: application/json"},
                                status_code=415)
        return None
