"""``McError``: the one exception the SDK raises, and how each failure maps to it.

A user catches one type whatever went wrong: an ``error`` frame answering a
request, a refused handshake, a close code that means "stop", a request that
got no reply in time, or an argument the protocol would refuse anyway.
``code`` is always one of PROTOCOL.md's error codes, so code that already
switches on server errors handles the local ones the same way; ``temporary``
says whether trying again later may succeed (the SDK itself retries those
where it can, e.g. by reconnecting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from mc.protocol import CloseCode, ErrorCode, ProtocolError
from mc.protocol.errors import ERROR_CODES

if TYPE_CHECKING:
    from trio_websocket import ConnectionClosed

#: close codes after which a client must not reconnect (PROTOCOL.md "Closing")
STOP_CODES = frozenset({
    CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.TOO_LARGE,
    CloseCode.VIOLATION, CloseCode.TOKEN_EXPIRED, CloseCode.REPLACED,
})

_CLOSE_ERRORS: dict[int, str] = {  # looked up by the int a close frame carries
    CloseCode.PROTOCOL_ERROR: ErrorCode.BAD_REQUEST,
    CloseCode.INVALID_DATA: ErrorCode.BAD_REQUEST,
    CloseCode.TOO_LARGE: ErrorCode.TOO_LARGE,
    CloseCode.VIOLATION: ErrorCode.BAD_REQUEST,
    CloseCode.TOKEN_EXPIRED: ErrorCode.UNAUTHORIZED,
    CloseCode.SLOW: ErrorCode.RATE_LIMITED,
}

_STATUS_ERRORS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.FORBIDDEN,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


class McError(Exception):
    """A request, connection or argument that mc refused.

    Attributes:
        code: a PROTOCOL.md error code (``bad_request``, ``not_found``,
            ``unavailable``, ...).
        reason: human-readable text (the server's, when it sent one).
        temporary: trying again later may succeed (timeouts, lost
            connections, ``503``); the SDK already retries connections itself.
        close_code: the WebSocket close code when the server closed the
            connection for good (e.g. 4009 replaced), else ``None``.
        status: the HTTP status when a handshake or API call was refused.

    Example::

        try:
            await app.publish("orders..eu", {})
        except mc.McError as exc:
            print(exc.code, exc.reason)        # bad_request topic must be ...
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        temporary: bool = False,
        close_code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.temporary = temporary
        self.close_code = close_code
        self.status = status
        #: seconds the server asked us to wait (``Retry-After``), if any
        self.retry_after = retry_after

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}" for k, v in
            (("close_code", self.close_code), ("status", self.status)) if v is not None
        )
        return f"McError({self.code!r}, {self.reason!r}, temporary={self.temporary}{extra})"

    # ------------------------------------------------------------ factories

    @classmethod
    def from_protocol(cls, exc: ProtocolError) -> McError:
        """An argument the protocol's own validation refuses (never sent)."""
        return cls(exc.code, exc.reason)

    @classmethod
    def from_frame(cls, code: str, reason: str) -> McError:
        """An ``error`` frame answering one of our requests."""
        return cls(code, reason, temporary=code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED))

    @classmethod
    def from_close(cls, code: int | None, reason: str | None) -> McError:
        """The connection closed with ``code``; ``temporary`` unless it means "stop"."""
        code = 1005 if code is None else code  # 1005: no status code received
        text = f"connection closed ({code}{': ' + reason if reason else ''})"
        return cls(
            _CLOSE_ERRORS.get(code, ErrorCode.UNAVAILABLE), text,
            temporary=code not in STOP_CODES, close_code=code,
        )

    @classmethod
    def from_closed(cls, exc: ConnectionClosed) -> McError:
        """trio-websocket's ConnectionClosed; its reason is None if none was known yet."""
        if exc.reason is None:
            return cls.from_close(None, None)
        return cls.from_close(exc.reason.code, exc.reason.reason)

    @classmethod
    def from_status(cls, status: int, body: bytes | None, headers: Any = (), where: str = "") -> McError:
        """A refused handshake or HTTP call: the JSON ``{"error", "reason"}`` body if any."""
        code, reason = _STATUS_ERRORS.get(status, ErrorCode.UNAVAILABLE), f"HTTP {status}"
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            if parsed.get("error") in ERROR_CODES:
                code = parsed["error"]
            if isinstance(parsed.get("reason"), str):
                reason = f"HTTP {status}: {parsed['reason']}"
        if where:
            reason = f"{reason} ({where})"
        return cls(
            code, reason, status=status, temporary=status >= 500 or status == 429,
            retry_after=_retry_after(headers),
        )

    @classmethod
    def unavailable(cls, reason: str) -> McError:
        """Nothing answered (yet): a timeout, a lost connection, no worker."""
        return cls(ErrorCode.UNAVAILABLE, reason, temporary=True)


def _retry_after(headers: Any) -> float | None:
    for key, value in headers or ():
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name.lower() == "retry-after":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            try:
                return max(0.0, float(text))
            except ValueError:
                return None
    return None
