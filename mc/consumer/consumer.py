"""The consumer SDK: one connection to EVERY worker, messages merged into one stream.

A topic message only reaches subscribers on the worker its publisher is
connected to (PROTOCOL.md "Topic delivery"), so a consumer must be on all
of them. :class:`Consumer` follows the worker list (:mod:`.discovery`),
keeps one :class:`~mc.client.link.Link` per worker (the worker's direct URL,
no redirect), opens one for a worker as soon as it registers and drops the
one of a worker that left the list (a dead worker is retried with backoff
until then). It remembers its subscriptions and pause state and applies
them to every connection, including each new or re-opened one.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import trio

from mc.client.backoff import Backoff
from mc.client.endpoint import identity
from mc.client.errors import McError
from mc.client.inbox import Inbox
from mc.client.link import Link
from mc.client.options import Options
from mc.client.owner import Owner
from mc.client.tokens import TokenSource
from mc.client.transport import Conn, checked, codec_named
from mc.client.trust import Trust
from mc.client.urls import endpoint, http_urls
from mc.protocol import (
    CONSUMER_FRAMES,
    Message,
    Notify,
    Pause,
    ProtocolError,
    Resume,
    Subscribe,
    Target,
    Unsubscribe,
    Welcome,
)
from mc.protocol.identity import parse_consumer

from .discovery import Discovery, WorkerEntry

SubKey = tuple[str, "str | None", str]


class Consumer(Owner):
    """A backend service's connections to the whole cluster; see :func:`connect_consumer`.

    Iterating yields :class:`~mc.protocol.Message` from every worker. They
    wait in one buffer of ``buffer`` messages; when the program falls
    behind, the OLDEST are dropped and counted in ``dropped`` (delivery is
    at-most-once; keeping the connections reading keeps acks and the
    servers' slow-consumer protection out of it).
    """

    def __init__(self, url: str, *, name: str, token: str | None, codec: str,
                 options: Options) -> None:
        identity(parse_consumer, {"name": name})
        self.name = name
        self._options = options
        self._masters = http_urls(url)
        self._master = ", ".join(self._masters)
        self._codec = codec_named(codec)
        self._auth = TokenSource(token, None)
        self._inbox: Inbox[Message] = Inbox(options.buffer, "message")
        self._discovery = Discovery(self._masters, options, self._on_list)
        self._links: dict[tuple[str, str], Link] = {}  # (worker id, url) -> its connection
        self._up: dict[str, str] = {}  # worker id -> url, for workers listed as "up"
        self._subs: dict[SubKey, Subscribe] = {}
        self._paused = False
        self._failure: McError | None = None
        self._turn = itertools.count()
        self._changed = trio.Event()

    # --------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        timeout = self._options.connect_timeout
        deadline = trio.current_time() + timeout
        with trio.move_on_at(deadline) as waiting:
            await self._nursery.start(self._discovery.run)
        if waiting.cancelled_caught:
            why = f": {self._discovery.last_error}" if self._discovery.last_error else ""
            raise McError.unavailable(f"no worker list from {self._master} within {timeout} s{why}")
        # Wait for every listed worker to be tried once, so that the caller's
        # first subscribe() reaches them all; a dead one is retried later.
        with trio.move_on_at(deadline):
            for link in list(self._links.values()):
                await link.wait_tried()

    async def _stop(self) -> None:
        self._inbox.close()
        async with trio.open_nursery() as nursery:
            for link in list(self._links.values()):
                nursery.start_soon(link.aclose)

    def _on_list(self, workers: list[WorkerEntry]) -> None:
        """A new worker list: attach to new workers, drop the ones that left."""
        listed = {w.id: w.url for w in workers}
        self._up = {w.id: w.url for w in workers if w.state == "up"}
        for (wid, url), link in list(self._links.items()):
            if listed.get(wid) != url:  # gone (or back under another address)
                del self._links[wid, url]
                link.cancel()
        if self._failure is None:
            for wid, url in self._up.items():
                if (wid, url) not in self._links:
                    self._attach(wid, url)

    def _attach(self, wid: str, url: str) -> None:
        target = endpoint(url, "/v1/consumer", {"name": self.name})
        link = Link(
            lambda: target, self._codec, self._options, on_frame=self._on_frame,
            on_open=self._restore, on_state=self._poke, headers=self._auth.headers,
            trust=Trust.of(self._masters, named=[url]), untrusted_limit=None,  # listed by the master
            keep_trying=lambda: self._up.get(wid) == url,
            name=f"consumer {self.name} @ {wid}",
        )
        self._links[wid, url] = link
        self._nursery.start_soon(self._keep, (wid, url), link)

    async def _keep(self, key: tuple[str, str], link: Link) -> None:
        try:
            await link.run()
        finally:
            if self._links.get(key) is link:
                del self._links[key]
            if link.failure is not None and self._failure is None:
                self._failure = link.failure
                self._inbox.close(link.failure)
                for other in self._links.values():
                    other.cancel()
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _on_frame(self, frame: Any) -> None:
        if isinstance(frame, Message):
            self._inbox.put(frame)

    async def _restore(self, conn: Conn, welcome: Welcome) -> None:
        """A new or re-opened connection gets the current subscriptions and pause state.

        Each item is checked just before it is sent, and changes made while
        this runs are also sent to this connection directly (it is already
        in ``self._links``), so none is missed or resurrected.
        """
        for key in list(self._subs):
            frame = self._subs.get(key)
            if frame is not None:
                await conn.request(frame)
        if self._paused:
            await conn.request(Pause())

    # ----------------------------------------------------------- helpers

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _everywhere(self, frame: Any) -> None:
        """Send ``frame`` on every open connection; return when all acked.

        A connection lost meanwhile is not an error: it gets the state again
        when it comes back (``_restore``).
        """
        self._check()
        errors: list[McError] = []

        async def one(link: Link, conn: Conn) -> None:
            try:
                await link.request(frame, conn)
            except McError as exc:
                if conn.ws.closed is None and conn.ended is None:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for link in self._links.values():
                if link.conn is not None:
                    nursery.start_soon(one, link, link.conn)
        if errors:
            raise errors[0]

    async def _any(self) -> Link:
        """A live connection (round robin), waiting up to ``timeout`` for one."""
        timeout = self._options.timeout
        with trio.move_on_after(timeout):
            while True:
                self._check()
                live = [link for link in self._links.values() if link.live is not None]
                if live:
                    return live[next(self._turn) % len(live)]
                await self._changed.wait()
        raise McError.unavailable(f"no worker connection within {timeout} s")

    # ------------------------------------------------------------ public

    @property
    def workers(self) -> tuple[str, ...]:
        """Ids of the workers this consumer is connected to right now."""
        return tuple(sorted(wid for (wid, _), link in self._links.items() if link.live is not None))

    @property
    def dropped(self) -> int:
        """Messages discarded because the buffer was full (the oldest go first)."""
        return self._inbox.dropped

    async def subscribe(self, topic: str, *, group: str | None = None, key: str | None = None) -> None:
        """Receive messages on ``topic`` (``*`` = one segment, ``>`` = the rest).

        With a ``group``, each message goes to one member of the group in the
        whole cluster (the least busy); without, every subscriber gets it.
        ``key`` only takes messages published with that key. Returns once
        every connected worker acknowledged; remembered and re-applied after
        reconnects and on new workers.

        Example::

            await consumer.subscribe("orders.>", group="billing")
        """
        frame = checked(Subscribe(topic, group, key if key is not None else "*"), CONSUMER_FRAMES)
        ident = (frame.topic, frame.group, frame.key)
        self._subs[ident] = frame
        try:
            await self._everywhere(frame)
        except McError:
            self._subs.pop(ident, None)
            raise

    async def unsubscribe(self, topic: str, *, group: str | None = None) -> None:
        """Stop the subscriptions on ``topic`` in ``group`` (every key)."""
        frame = checked(Unsubscribe(topic, group), CONSUMER_FRAMES)
        for ident in [k for k in self._subs if k[0] == topic and k[1] == group]:
            del self._subs[ident]
        await self._everywhere(frame)

    async def pause(self) -> None:
        """Receive no messages (and take no group share) until :meth:`resume`."""
        self._paused = True
        await self._everywhere(Pause())

    async def resume(self) -> None:
        self._paused = False
        await self._everywhere(Resume())

    async def notify(self, to: Mapping[str, Any] | Target | None, data: Any) -> int:
        """Send ``data`` to the apps ``to`` selects, wherever they are connected.

        ``to``: ``{}`` or None = every app; ``{"client": "alice"}``, plus
        ``"device"``; ``{"tags": ["driver"]}`` = apps with any of the tags;
        keys combine with AND. Returns how many app connections got it.

        Example::

            delivered = await consumer.notify({"client": "alice"}, "your order shipped")
        """
        try:
            target = to if isinstance(to, Target) else Target.parse(dict(to) if to else None)
        except ProtocolError as exc:
            raise McError.from_protocol(exc) from None
        frame = checked(Notify(target, data), CONSUMER_FRAMES)
        ack = await (await self._any()).request(frame)
        return ack.delivered or 0

    async def broadcast(self, data: Any) -> int:
        """:meth:`notify` every app in the cluster; returns how many got it."""
        return await self.notify(None, data)

    async def receive(self) -> Message:
        """The next message (waits); McError if the consumer failed for good."""
        return await self._inbox.get()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._inbox


def connect_consumer(
    url: str,
    *,
    name: str,
    token: str | None = None,
    api_key: str | None = None,
    codec: str = "json",
    timeout: float = 10.0,
    connect_timeout: float = 10.0,
    buffer: int = 10_000,
    max_pending: int = 1000,
    backoff: Backoff | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Consumer:
    """Connect a consumer named ``name`` to every worker of the master at ``url``.

    Use with ``async with``. ``api_key`` (or ``token``, the same) is the
    API key when the cluster has keys; ``codec`` is ``"json"`` or ``"msgpack"`` (then ``data`` may be
    bytes); ``timeout`` bounds each request, ``connect_timeout`` the first
    worker list; ``buffer`` is how many messages wait for the reader;
    ``ssl_context`` verifies ``https://`` and ``wss://`` (None: the system's CAs).
    ``url`` may also be a standalone worker's (``mc worker --port P``, no
    master): it is detected (``404`` on ``/v1/workers``, a worker's
    ``/healthz``) and the consumer attaches to that worker alone.

    Example::

        async with mc.connect_consumer("http://127.0.0.1:7100", name="billing-1") as consumer:
            await consumer.subscribe("orders.>", group="billing")
            async for msg in consumer:
                print(msg.topic, msg.data, msg.sender.client)
    """
    options = Options(timeout=timeout, connect_timeout=connect_timeout, buffer=buffer,
                      max_pending=max_pending, backoff=backoff or Backoff(), ssl_context=ssl_context)
    return Consumer(url, name=name, token=api_key if api_key is not None else token, codec=codec,
                    options=options)
