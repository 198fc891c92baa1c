"""Addresses: the master URL a user gives, endpoint URLs, and following ``307``.

Users pass the master's HTTP address (``http://127.0.0.1:7100``) to every SDK
entry point and CLI command; WebSocket endpoints live on the same host with a
``ws`` scheme (PROTOCOL.md "Addresses"). Pure functions, unit-tested.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

from mc.protocol.control import http_to_ws

from .errors import McError

DEFAULT_MASTER = "http://127.0.0.1:7100"
MASTER_ENV = "MC_MASTER"

_SCHEMES = ("http", "https", "ws", "wss")


def default_master() -> str:
    """``$MC_MASTER``, else the local default (what ``mc up`` starts)."""
    return os.environ.get(MASTER_ENV) or DEFAULT_MASTER


def base_url(url: str) -> str:
    """Check a master (or worker) base URL and drop a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise McError("bad_request", f"not an http(s):// or ws(s):// URL: {url!r}")
    return url.rstrip("/")


def split_masters(url: str) -> list[str]:
    """Several master URLs as one comma list (``http://a:7100,http://b:7100``): each checked."""
    urls = [base_url(u.strip()) for u in url.split(",") if u.strip()]
    if not urls:
        raise McError("bad_request", f"no master URL in {url!r}")
    return urls


def http_urls(url: str) -> list[str]:
    """The HTTP form of each master in a comma list."""
    return [http_url(u) for u in split_masters(url)]


def http_url(url: str) -> str:
    """The HTTP form of a base URL (for the master's HTTP API)."""
    url = base_url(url)
    if url.startswith("ws://"):
        return "http://" + url[len("ws://"):]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://"):]
    return url


def endpoint(base: str, path: str, query: Mapping[str, str | None]) -> str:
    """``ws(s)://HOST/PATH?QUERY`` for a WebSocket endpoint under ``base``.

    >>> endpoint("http://127.0.0.1:7100/", "/v1/app", {"client": "alice", "device": None})
    'ws://127.0.0.1:7100/v1/app?client=alice'
    """
    q = urlencode({k: v for k, v in query.items() if v is not None})
    url = http_to_ws(base_url(base)) + path
    return f"{url}?{q}" if q else url


def follow(current: str, location: str) -> str:
    """Where a ``307`` from ``current`` with ``Location: location`` leads.

    Absolute locations may use http(s) or ws(s) (converted to ws(s)); a
    location without a host is resolved against ``current``. When the
    location has no query, ``current``'s query is kept: the identity must
    reach the worker (PROTOCOL.md "every client follows 307 ... keeping the
    path's query").
    """
    cur = urlsplit(current)
    loc = urlsplit(location)
    if loc.scheme and loc.scheme not in _SCHEMES:
        raise McError("bad_request", f"redirect to a non-WebSocket URL: {location!r}")
    if loc.netloc:
        scheme = {"http": "ws", "https": "wss"}.get(loc.scheme, loc.scheme or cur.scheme)
        netloc, path = loc.netloc, loc.path or "/"
    else:
        scheme, netloc = cur.scheme, cur.netloc
        if loc.path.startswith("/"):
            path = loc.path
        elif loc.path:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(cur.path), loc.path))
        else:
            path = cur.path
    return urlunsplit((scheme, netloc, path, loc.query or cur.query, ""))
