"""Where an SDK object gets its token: a fixed string, or a provider called when needed.

With ``token_provider`` (a function, or an async one, returning a JWT) the
SDK asks for a token before every (re)connection and renews it on the open
connection before it expires (a ``refresh`` frame, PROTOCOL.md "Security"),
so users never handle expiry by hand. The expiry is read from the token's
``exp`` claim without verifying it: the server verifies; the SDK only needs
to know when to ask again.
"""

from __future__ import annotations

import base64
import inspect
import time
from collections.abc import Awaitable, Callable

import orjson

#: renew this long before ``exp`` (or at half the lifetime, for short tokens)
MARGIN = 30.0

TokenProvider = Callable[[], "str | Awaitable[str]"]


def expiry(token: str) -> float | None:
    """The ``exp`` of a JWT, unverified; None when it has none or is not a JWT."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class TokenSource:
    def __init__(self, token: str | None, provider: TokenProvider | None) -> None:
        if token is not None and provider is not None:
            raise ValueError("give token= or token_provider=, not both")
        self._token = token
        self._provider = provider
        self._fetched = 0.0

    @property
    def renews(self) -> bool:
        return self._provider is not None

    async def current(self) -> str | None:
        """The token to connect with: a fresh one from the provider when due."""
        if self._provider is not None and (self._token is None or self.renew_in() <= 0):
            await self.renew()
        return self._token

    async def renew(self) -> str:
        assert self._provider is not None
        value = self._provider()
        token = await value if inspect.isawaitable(value) else value
        if not isinstance(token, str) or not token:
            raise TypeError("token_provider must return a non-empty string")
        self._token, self._fetched = token, time.time()
        return token

    def renew_in(self) -> float:
        """Seconds until the current token should be renewed (inf: never)."""
        exp = expiry(self._token) if self._token else None
        if exp is None:
            return float("inf")
        margin = min(MARGIN, max(0.0, exp - self._fetched) / 2)
        return exp - margin - time.time()

    async def headers(self) -> list[tuple[bytes, bytes]] | None:
        token = await self.current()
        return None if token is None else [(b"authorization", f"Bearer {token}".encode())]
