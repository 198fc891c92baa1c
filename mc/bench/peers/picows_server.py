"""picows + uvloop peer: ``python -m mc.bench.peers.picows_server --port P [--coalesce]``.

Written the way mc.bench.baseline is: parse each frame's JSON, build the
outbound frame once per publish, send it to every subscriber. Two ways to
send, the two rows of the table:

* default: one ``WSTransport.send`` per subscriber per message (picows
  frames it and writes it to the socket at once);
* ``--coalesce``: mc's flusher idea in a few lines. The frame is encoded
  once per publish (``encode_frame``), appended to each subscriber's queue,
  and one write per connection per event-loop pass sends the joined queue
  (``loop.call_soon`` schedules the pass once).

Compression off, no keepalive pings, as mc during a benchmark. ``GET
/healthz`` answers 200 (the runner waits for it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

import orjson
import uvloop
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from mc.websocket import OP_TEXT, encode_frame

from . import frames

MAX_FRAME = 64 * 1024  # as the baseline's max_size


class Hub:
    """Topics, chat rooms and the send path (direct or coalesced per loop pass)."""

    def __init__(self, worker: str, coalesce: bool) -> None:
        self.worker = worker
        self.coalesce = coalesce
        self.topics: dict[str, set[Conn]] = {}
        self.rooms: dict[str, dict[Conn, str]] = {}
        self.seq = 0
        self.dirty: list[Conn] = []

    def send(self, conns: Iterable[Conn], payload: bytes) -> None:
        if not self.coalesce:
            for c in conns:
                c.t.send(WSMsgType.TEXT, payload)
            return
        frame = encode_frame(OP_TEXT, payload)
        for c in conns:
            if not c.queue:
                if not self.dirty:
                    asyncio.get_running_loop().call_soon(self.flush)
                self.dirty.append(c)
            c.queue.append(frame)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for c in dirty:
            q, c.queue = c.queue, []
            if not c.gone:
                c.t.underlying_transport.write(q[0] if len(q) == 1 else b"".join(q))


class Conn(WSListener):
    def __init__(self, hub: Hub, path: str, query: dict[str, str]) -> None:
        self.hub = hub
        self.path = path
        self.query = query
        self.queue: list[bytes] = []
        self.gone = False
        self.topics: list[str] = []
        self.room: dict[Conn, str] | None = None
        self.client = query.get("client", "?")
        self.sender = {"client": self.client, "device": query.get("device", "default")}
        self.chat_seq = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t = transport
        hub = self.hub
        if self.path == "/v1/consumer":
            hub.send((self,), frames.welcome(hub.worker, name=self.query.get("name", "?")))
        elif self.path == "/v1/app":
            hub.send((self,), frames.welcome(hub.worker, client=self.client, device=self.sender["device"]))
        else:
            session = self.path[len("/v1/chat/"):]
            room = self.room = hub.rooms.setdefault(session, {})
            hub.send((self,), frames.welcome(hub.worker, session=session, client=self.client,
                                             members=[*room.values(), self.client]))
            others = list(room)
            room[self] = self.client
            hub.send(others, frames.joined(self.client))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        kind = msg.get("type")
        hub = self.hub
        if kind == "publish":
            subs = hub.topics.get(msg["topic"], ())
            if subs:
                hub.seq += 1
                out = frames.message(hub.worker, msg["topic"], msg.get("data"), self.sender, hub.seq)
                hub.send(subs, out)
            if msg.get("id") is not None:
                hub.send((self,), frames.ack(msg["id"], delivered=len(subs)))
        elif kind == "send" and self.room is not None:
            self.chat_seq += 1
            hub.send([p for p in self.room if p is not self], frames.chat(self.client, msg.get("data"),
                                                                          self.chat_seq))
        elif kind == "subscribe":
            hub.topics.setdefault(msg["topic"], set()).add(self)
            self.topics.append(msg["topic"])
            if msg.get("id") is not None:
                hub.send((self,), frames.ack(msg["id"]))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone = True
        for topic in self.topics:
            self.hub.topics.get(topic, set()).discard(self)
        if self.room is not None:
            self.room.pop(self, None)
            if self.room:
                self.hub.send(list(self.room), frames.left(self.client))


def factory(hub: Hub) -> Callable[[WSUpgradeRequest], WSListener | WSUpgradeResponseWithListener | None]:
    def listener(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        url = urlsplit(request.path.decode("latin-1"))
        if url.path == "/healthz":
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(b"ok\n"), None)
        if url.path in ("/v1/consumer", "/v1/app") or url.path.startswith("/v1/chat/"):
            return Conn(hub, url.path, dict(parse_qsl(url.query)))
        return None  # 404

    return listener


async def main(port: int, coalesce: bool) -> None:
    hub = Hub("picows-coalesced" if coalesce else "picows", coalesce)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await ws_create_server(factory(hub), "127.0.0.1", port, max_frame_size=MAX_FRAME,
                                    backlog=4096)
    async with server:
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m mc.bench.peers.picows_server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--coalesce", action="store_true", help="one write per connection per loop pass")
    a = p.parse_args()
    uvloop.run(main(a.port, a.coalesce))
