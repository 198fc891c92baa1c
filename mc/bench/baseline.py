"""The baseline: an asyncio ``websockets`` server speaking the subset of mc's
protocol the benchmarks use, so the very same generators drive both.

``python -m mc.bench.baseline --port P``

* ``/v1/consumer?name=N``: ``welcome``; ``subscribe`` (exact topics only) -> ``ack``.
* ``/v1/app?client=C``: ``welcome``; ``publish`` -> a ``message`` frame built
  and encoded once, sent to every subscriber with ``websockets.broadcast()``.
* ``/v1/chat/{session}?client=C``: ``welcome``, ``joined``; ``send`` -> a
  ``chat`` frame to the other members, also with ``broadcast()`` (no await per
  recipient: the fastest relay the library offers).

It does the same per-message work as an mc worker (decode JSON, build the
outbound map, encode once) and nothing mc does not do. Compression is off and
no keepalive pings are sent, as for the mc worker during a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

WORKER = "baseline"


class State:
    def __init__(self) -> None:
        self.topics: dict[str, set[ServerConnection]] = {}
        self.rooms: dict[str, dict[ServerConnection, str]] = {}
        self.seq = 0


def _welcome(**fields: object) -> str:
    return orjson.dumps({"type": "welcome", "worker": WORKER, "heartbeat": 25, **fields}).decode()


async def handler(ws: ServerConnection, state: State) -> None:
    url = urlsplit(ws.request.path if ws.request else "/")
    query = dict(parse_qsl(url.query))
    path = url.path
    if path == "/v1/consumer":
        await consumer(ws, state, query.get("name", "?"))
    elif path == "/v1/app":
        await app(ws, state, query.get("client", "?"), query.get("device", "default"))
    elif path.startswith("/v1/chat/"):
        await chat(ws, state, path[len("/v1/chat/"):], query.get("client", "?"))
    else:
        await ws.close(4000, "unknown endpoint")


async def consumer(ws: ServerConnection, state: State, name: str) -> None:
    await ws.send(_welcome(name=name))
    mine: list[str] = []
    try:
        async for raw in ws:
            msg = orjson.loads(raw)
            if msg.get("type") == "subscribe":
                topic = msg["topic"]
                state.topics.setdefault(topic, set()).add(ws)
                mine.append(topic)
                if msg.get("id") is not None:
                    await ws.send(orjson.dumps({"type": "ack", "id": msg["id"]}).decode())
    finally:
        for topic in mine:
            state.topics.get(topic, set()).discard(ws)


async def app(ws: ServerConnection, state: State, client: str, device: str) -> None:
    await ws.send(_welcome(client=client, device=device))
    sender = {"client": client, "device": device}
    async for raw in ws:
        msg = orjson.loads(raw)
        if msg.get("type") != "publish":
            continue
        subs = state.topics.get(msg["topic"], ())
        if subs:
            state.seq += 1
            out = {
                "type": "message",
                "topic": msg["topic"],
                "data": msg.get("data"),
                "from": sender,
                "worker": WORKER,
                "seq": state.seq,
                "ts": time.time_ns() // 1_000_000,
            }
            broadcast(subs, orjson.dumps(out), text=True)
        if msg.get("id") is not None:
            await ws.send(orjson.dumps({"type": "ack", "id": msg["id"], "delivered": len(subs)}).decode())


async def chat(ws: ServerConnection, state: State, session: str, client: str) -> None:
    room = state.rooms.setdefault(session, {})
    await ws.send(_welcome(session=session, client=client, members=[*room.values(), client]))
    others = list(room)
    room[ws] = client
    broadcast(others, orjson.dumps({"type": "joined", "client": client}), text=True)
    seq = 0
    try:
        async for raw in ws:
            msg = orjson.loads(raw)
            if msg.get("type") != "send":
                continue
            seq += 1
            out = {"type": "chat", "from": client, "data": msg.get("data"), "seq": seq,
                   "ts": time.time_ns() // 1_000_000}
            broadcast([p for p in room if p is not ws], orjson.dumps(out), text=True)
    finally:
        room.pop(ws, None)
        if room:
            broadcast(list(room), orjson.dumps({"type": "left", "client": client}), text=True)
        else:
            state.rooms.pop(session, None)


def healthz(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def main(port: int) -> None:
    state = State()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        lambda ws: handler(ws, state), "127.0.0.1", port,
        compression=None, ping_interval=None, max_size=64 * 1024,
        process_request=healthz, backlog=4096,
    ):
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m mc.bench.baseline")
    p.add_argument("--port", type=int, required=True)
    asyncio.run(main(p.parse_args().port))
