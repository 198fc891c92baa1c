"""Who is connecting: a handshake's identity, validated and authenticated.

Shared by the worker core, which accepts connections, and the master's
entry point, which answers before redirecting, so both refuse a bad or
unauthenticated handshake the same way (PROTOCOL.md "WebSocket endpoints",
"Security"): ``400`` a malformed identity, ``401`` a missing, bad or expired
token or API key (or a ``client`` that is not the token's ``sub``), ``403``
a chat session the token's ``chat`` claim does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mc.protocol import ErrorCode, ProtocolError
from mc.protocol.identity import parse_app, parse_chat, parse_consumer, parse_token
from mc.security import key_matches
from mc.tokens import Claims, TokenError, TokenVerifier

APP = "app"
CONSUMER = "consumer"
CHAT = "chat"


class Refusal(Exception):
    """The handshake is refused with ``status``, ``code`` and a ``reason`` safe to show."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@attrs.frozen(slots=True)
class Identity:
    kind: str
    client: str = ""
    device: str = "default"
    tags: tuple[str, ...] = ()
    name: str = ""
    session: str | None = None
    mode: str = "open"
    #: the app's token claims (None: tokens off)
    claims: Claims | None = None
    #: the consumer's API key (None: keys off)
    key: str | None = None


def identify(
    kind: str, session: str | None, query: Mapping[str, str], headers: Mapping[str, str], *,
    tokens: TokenVerifier | None, api_keys: tuple[str, ...],
) -> Identity:
    """The identity of a handshake on endpoint ``kind``; raises Refusal."""
    try:
        if kind == CONSUMER:
            consumer = parse_consumer(query, headers)
            if not api_keys:
                return Identity(CONSUMER, name=consumer.name)
            if not key_matches(consumer.token, api_keys):
                raise Refusal(401, ErrorCode.UNAUTHORIZED, "a valid API key is required")
            return Identity(CONSUMER, name=consumer.name, key=consumer.token)
        claims: Claims | None = None
        if tokens is not None:
            claims = tokens.verify(parse_token(query, headers))
            if query.get("client", claims.sub) != claims.sub:
                raise Refusal(401, ErrorCode.UNAUTHORIZED, "client does not match the token's sub")
            query = {**query, "client": claims.sub}
        if kind == APP:
            app = parse_app(query, headers)
            mode = "open"
        else:
            chat = parse_chat(session or "", query, headers)
            app, mode = chat.app, chat.mode
    except ProtocolError as exc:
        raise Refusal(400, exc.code, exc.reason) from None
    except TokenError as exc:
        raise Refusal(401, ErrorCode.UNAUTHORIZED, exc.reason) from None
    if claims is not None and session is not None and not claims.may_chat(session):
        raise Refusal(403, ErrorCode.FORBIDDEN, f"the token does not allow chat session {session!r}")
    tags = app.tags if claims is None or claims.tags is None else claims.tags
    return Identity(kind, app.client, app.device, tags, session=session, mode=mode, claims=claims)
