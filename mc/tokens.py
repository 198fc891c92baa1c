"""App tokens (JWT, PROTOCOL.md "Security"): verification and the claims mc reads.

With ``jwt_secret`` (HS256) or ``jwt_public_key`` (a PEM: RS256 or ES256)
set, apps present a token at the handshake and may renew it on the open
connection with a ``refresh`` frame. Claims: ``sub`` (required) is the
client id; ``exp`` (required), ``nbf`` and ``iat`` are checked with
``LEEWAY`` seconds; ``tags`` (a list) replaces the query's tags; ``chat``
and ``publish`` (lists of topic patterns) limit the sessions an app may
open and the topics it may publish to (absent: any).

Pure apart from PyJWT reading the wall clock, which is what token expiry is
about. No secret or token is ever logged or put in an error message.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import jwt

from mc.protocol import is_name, is_pattern, pattern_matches

LEEWAY = 5.0
MAX_PATTERNS = 64


class TokenError(Exception):
    """A token that cannot be used; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen(slots=True)
class Claims:
    sub: str
    exp: float
    tags: tuple[str, ...] | None = None
    chat: tuple[str, ...] | None = None
    publish: tuple[str, ...] | None = None

    def may_chat(self, session: str) -> bool:
        return self.chat is None or any(pattern_matches(p, session) for p in self.chat)

    def may_publish(self, topic: str) -> bool:
        return self.publish is None or any(pattern_matches(p, topic) for p in self.publish)


def _patterns(payload: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = payload.get(name)
    if value is None:
        return None
    if type(value) is not list or len(value) > MAX_PATTERNS or not all(is_pattern(p) for p in value):
        raise TokenError(f"claim {name!r} must be a list of at most {MAX_PATTERNS} topic patterns")
    return tuple(value)


class TokenVerifier:
    """Checks tokens against one key; ``verify`` returns the claims or raises TokenError."""

    def __init__(self, key: str | bytes, algorithms: tuple[str, ...]) -> None:
        self._key = key
        self._algorithms = list(algorithms)

    @classmethod
    def from_settings(cls, secret: str, public_key_file: str) -> TokenVerifier | None:
        """The verifier for a process's settings; None when app auth is off."""
        if public_key_file:
            with open(public_key_file, "rb") as f:
                return cls(f.read(), ("RS256", "ES256"))
        if secret:
            return cls(secret, ("HS256",))
        return None

    def verify(self, token: str | None) -> Claims:
        if not token:
            raise TokenError("a token is required")
        try:
            payload = jwt.decode(token, self._key, algorithms=self._algorithms, leeway=LEEWAY,
                                 options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        sub = payload["sub"]
        if not is_name(sub):
            raise TokenError("claim 'sub' must be a client name")
        tags = payload.get("tags")
        if tags is not None and (type(tags) is not list or not all(is_name(t) for t in tags)):
            raise TokenError("claim 'tags' must be a list of names")
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise TokenError("claim 'exp' must be a number")
        return Claims(sub, float(exp), None if tags is None else tuple(tags),
                      _patterns(payload, "chat"), _patterns(payload, "publish"))


def mint(secret: str, sub: str, ttl: float, *, tags: tuple[str, ...] = (),
         chat: tuple[str, ...] = (), publish: tuple[str, ...] = ()) -> str:
    """An HS256 token for development (``mc token``)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    for name, value in (("tags", tags), ("chat", chat), ("publish", publish)):
        if value:
            payload[name] = list(value)
    return jwt.encode(payload, secret, algorithm="HS256")
