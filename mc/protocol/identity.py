"""Handshake identity: the query string (and Authorization header) of each endpoint.

Shared by the worker, which accepts connections, and the master, which
validates before redirecting, so both answer a bad handshake the same way
(``400`` with ``{"error": "bad_request", "reason": ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .errors import ErrorCode, ProtocolError
from .frames import MAX_TAGS, MAX_TOKEN
from .names import is_name

CHAT_MODES = ("open", "join")


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, reason)


@attrs.frozen(slots=True)
class AppIdentity:
    client: str
    device: str = "default"
    tags: tuple[str, ...] = ()
    token: str | None = None


@attrs.frozen(slots=True)
class ConsumerIdentity:
    name: str
    token: str | None = None


@attrs.frozen(slots=True)
class ChatIdentity:
    session: str
    app: AppIdentity
    mode: str = "open"


def parse_token(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The handshake's token: ``token`` in the query, else ``Authorization: Bearer``."""
    return _token(query, headers)


def _token(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    token = query.get("token")
    auth = headers.get("authorization")
    if token is None and auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _bad("Authorization must be 'Bearer <token>'")
        token = value.strip()
    if token is not None and not 1 <= len(token) <= MAX_TOKEN:
        raise _bad(f"token must be 1 to {MAX_TOKEN} characters")
    return token


def _name(query: Mapping[str, str], field: str, default: str | None = None) -> str:
    value = query.get(field, default)
    if value is None:
        raise _bad(f"{field} is required")
    if not is_name(value):
        raise _bad(f"{field} must be 1-128 characters of A-Z a-z 0-9 . _ - : @")
    return value


def parse_app(query: Mapping[str, str], headers: Mapping[str, str]) -> AppIdentity:
    """``client`` (required), ``device`` (default ``default``), ``tags``, ``token``."""
    client = _name(query, "client")
    device = _name(query, "device", "default")
    raw_tags = query.get("tags", "")
    tags = tuple(dict.fromkeys(t for t in raw_tags.split(",") if t)) if raw_tags else ()
    if len(tags) > MAX_TAGS or not all(is_name(t) for t in tags):
        raise _bad(f"tags must be a comma list of at most {MAX_TAGS} names")
    return AppIdentity(client, device, tags, _token(query, headers))


def parse_consumer(query: Mapping[str, str], headers: Mapping[str, str]) -> ConsumerIdentity:
    """``name`` (required), ``token``."""
    return ConsumerIdentity(_name(query, "name"), _token(query, headers))


def parse_chat(session: str, query: Mapping[str, str], headers: Mapping[str, str]) -> ChatIdentity:
    """The session from the path, the app identity, ``mode`` = open | join."""
    if not is_name(session):
        raise _bad("session must be 1-128 characters of A-Z a-z 0-9 . _ - : @")
    mode = query.get("mode", "open")
    if mode not in CHAT_MODES:
        raise _bad("mode must be 'open' or 'join'")
    return ChatIdentity(session, parse_app(query, headers), mode)
