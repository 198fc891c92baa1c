"""Error codes, close codes and the one exception the protocol layer raises.

Every validation failure anywhere in mc surfaces as :class:`ProtocolError`, so
the I/O shells have exactly one thing to catch and one mapping to the wire:
an ``error`` frame (the connection stays open) or a close code (it does not).
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode:
    """The ``code`` values of an ``error`` frame (PROTOCOL.md, "Frames")."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


ERROR_CODES = frozenset(
    v for k, v in vars(ErrorCode).items() if not k.startswith("_")
)


class CloseCode(IntEnum):
    """WebSocket close codes mc uses (PROTOCOL.md, "Closing")."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002  # RFC 6455 framing violation (bad masking, opcode, ...)
    INVALID_DATA = 1007  # RFC 6455: a text frame that is not UTF-8
    TOO_LARGE = 1009
    VIOLATION = 4000
    TOKEN_EXPIRED = 4001
    IDLE = 4008
    REPLACED = 4009
    SLOW = 4029
    DRAINING = 4503


class ProtocolError(Exception):
    """A request or frame the protocol rejects.

    ``code`` is an :class:`ErrorCode`; ``request_id`` the offending request's
    ``id`` (so the ``error`` frame can echo it); ``close_code`` is set when the
    violation ends the connection instead of being answered with ``error``.
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        request_id: str | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.request_id = request_id
        self.close_code = close_code

    def __repr__(self) -> str:
        return (
            f"ProtocolError({self.code!r}, {self.reason!r}, "
            f"request_id={self.request_id!r}, close_code={self.close_code!r})"
        )


def violation(reason: str) -> ProtocolError:
    """A frame that cannot be understood at all: the connection closes with 4000."""
    return ProtocolError(ErrorCode.BAD_REQUEST, reason, close_code=CloseCode.VIOLATION)
