"""The app SDK: publish topic messages, receive notifications (``/v1/app``)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

from mc.protocol import APP_FRAMES, Notification, Publish
from mc.protocol.identity import parse_app

from .backoff import Backoff
from .endpoint import Endpoint, identity, tags_query
from .options import Options
from .tokens import TokenProvider, TokenSource


class App(Endpoint[Notification]):
    """An app connection (a phone, a browser, a device); see :func:`connect_app`.

    Iterating yields :class:`~mc.protocol.Notification` events. They wait in
    a buffer of ``buffer`` events; when the program does not read them fast
    enough the OLDEST are dropped (counted in ``dropped``), so that a slow
    reader never holds up the acks of its own ``publish`` calls.
    """

    def __init__(self, url: str, *, client: str, device: str, tags: Iterable[str],
                 token: TokenSource, codec: str, options: Options) -> None:
        query = {"client": client, "device": device, "tags": tags_query(tags)}
        identity(parse_app, query)
        super().__init__(
            url, "/v1/app", query, token=token, codec=codec, options=options,
            what="notification", name=f"app {client}/{device}", table=APP_FRAMES,
        )
        self.client = client
        self.device = device

    def _on_frame(self, frame: Any) -> None:
        if isinstance(frame, Notification):
            self._inbox.put(frame)

    async def publish(self, topic: str, data: Any, *, key: str | None = None,
                      trace: str | None = None) -> int:
        """Publish ``data`` on ``topic``; returns how many consumer connections got it.

        ``key`` lets subscribers filter (``subscribe(..., key=...)``);
        ``trace`` is passed through to consumers. An invalid topic raises
        McError ``bad_request`` before anything is sent.

        Example::

            delivered = await app.publish("orders.eu", {"id": 1}, key="k1")
        """
        ack = await self._request(Publish(topic, data, key=key, trace=trace))
        return ack.delivered or 0

    def notifications(self) -> AsyncIterator[Notification]:
        """The notifications sent to this app, as they arrive.

        Example::

            async for note in app.notifications():
                print(note.sender, note.data)
        """
        return self._inbox


def connect_app(
    url: str,
    *,
    client: str,
    device: str = "default",
    tags: Iterable[str] = (),
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    codec: str = "json",
    timeout: float = 10.0,
    connect_timeout: float = 10.0,
    buffer: int = 1000,
    max_pending: int = 1000,
    backoff: Backoff | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> App:
    """Connect an app through the master at ``url`` (use with ``async with``).

    ``client`` identifies the user, ``device`` one of their connections (the
    same client and device connecting again elsewhere replaces this one:
    close code 4009, after which the app stops with McError). ``tags`` are
    what ``notify(to={"tags": [...]})`` selects; ``codec`` is ``"json"`` or
    ``"msgpack"`` (then ``data`` may be bytes). ``timeout`` bounds each
    request, ``connect_timeout`` the first connection; after that the app
    reconnects (through the master, with ``backoff``) whenever the
    connection is lost for a reason other than a final close code.
    ``https://`` / ``wss://`` certificates are verified against the
    system's CAs, or ``ssl_context`` (e.g. ``ssl.create_default_context(
    cafile="ca.pem")`` for a private CA). The token goes only to the master
    and to workers the master names (a redirect elsewhere is not followed
    with it: after 3 such attempts McError ``forbidden``).

    Example::

        async with mc.connect_app("http://127.0.0.1:7100", client="alice",
                                  device="phone", tags=["driver"]) as app:
            await app.publish("orders.eu", {"id": 1}, key="k1")
            async for note in app.notifications():
                print(note.data)
    """
    options = Options(timeout=timeout, connect_timeout=connect_timeout, buffer=buffer,
                      max_pending=max_pending, backoff=backoff or Backoff(), ssl_context=ssl_context)
    return App(url, client=client, device=device, tags=tags, token=TokenSource(token, token_provider),
               codec=codec,
               options=options)
