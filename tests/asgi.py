"""What the tests' small ASGI apps share."""

from __future__ import annotations

from typing import Any


async def request_body(receive: Any) -> bytes:
    """The whole request body, however many ``http.request`` messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
