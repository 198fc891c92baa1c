"""socketify (uWebSockets) peer: ``python -m mc.bench.peers.socketify_server --port P``.

Fan-out uses uWS's native pub/sub (``ws.subscribe`` + ``app.publish``): the
frame is built once per publish in Python and uWS copies it into every
subscriber's socket in C++. Chat sends to the other member with ``ws.send``
(uWS's own publish would echo to the sender). Backpressure is allowed up to
``MAX_BACKPRESSURE`` per connection, so uWS never drops a published frame
within the generators' window. ``GET /healthz`` answers 200. SIGTERM ends
the process at once (``os._exit``: socketify's loop ignores it otherwise).
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any
from urllib.parse import parse_qsl

import orjson
from socketify import App, AppListenOptions, OpCode

from . import frames

WORKER = "socketify"
MAX_BACKPRESSURE = 16 * 1024 * 1024
MAX_FRAME = 64 * 1024  # as the baseline's max_size


class State:
    def __init__(self, app: App) -> None:
        self.app = app
        #: session -> members' user data by id; socketify makes a new WebSocket wrapper per
        #: callback, so a member is its user data (which keeps the wrapper ``open`` got)
        self.rooms: dict[str, dict[int, dict[str, Any]]] = {}
        self.seq = 0


def build(port: int) -> App:
    app = App()
    state = State(app)

    def upgrade(res: Any, req: Any, context: Any) -> None:
        path = req.get_url()
        full = req.get_full_url() or path
        query = dict(parse_qsl(full.partition("?")[2]))
        res.upgrade(req.get_header("sec-websocket-key"), req.get_header("sec-websocket-protocol"),
                    req.get_header("sec-websocket-extensions"), context, {"path": path, **query})

    def on_open(ws: Any) -> None:
        u = ws.get_user_data()
        path = u["path"]
        client = u.get("client", "?")
        if path == "/v1/consumer":
            ws.send(frames.welcome(WORKER, name=u.get("name", "?")), OpCode.TEXT)
        elif path == "/v1/app":
            u["from"] = {"client": client, "device": u.get("device", "default")}
            ws.send(frames.welcome(WORKER, client=client, device=u["from"]["device"]), OpCode.TEXT)
        elif path.startswith("/v1/chat/"):
            session = u["session"] = path[len("/v1/chat/"):]
            u["seq"] = 0
            u["ws"] = ws
            room = state.rooms.setdefault(session, {})
            ws.send(frames.welcome(WORKER, session=session, client=client,
                                   members=[*(m.get("client", "?") for m in room.values()), client]),
                    OpCode.TEXT)
            note = frames.joined(client)
            for other in room.values():
                other["ws"].send(note, OpCode.TEXT)
            room[id(u)] = u
        else:
            ws.end(4000, "unknown endpoint")

    def on_message(ws: Any, raw: Any, opcode: Any) -> None:
        msg = orjson.loads(raw)
        kind = msg.get("type")
        u = ws.get_user_data()
        if kind == "publish":
            state.seq += 1
            app.publish(msg["topic"], frames.message(WORKER, msg["topic"], msg.get("data"), u["from"],
                                                     state.seq), OpCode.TEXT)
            if msg.get("id") is not None:
                ws.send(frames.ack(msg["id"]), OpCode.TEXT)
        elif kind == "send" and "session" in u:
            u["seq"] += 1
            out = frames.chat(u.get("client", "?"), msg.get("data"), u["seq"])
            for other in state.rooms.get(u["session"], {}).values():
                if other is not u:
                    other["ws"].send(out, OpCode.TEXT)
        elif kind == "subscribe":
            ws.subscribe(msg["topic"])
            if msg.get("id") is not None:
                ws.send(frames.ack(msg["id"]), OpCode.TEXT)

    def on_close(ws: Any, code: int, message: Any) -> None:
        u = ws.get_user_data() or {}
        room = state.rooms.get(u.get("session", ""))
        if room is not None:
            room.pop(id(u), None)
            note = frames.left(u.get("client", "?"))
            for other in room.values():
                other["ws"].send(note, OpCode.TEXT)
            if not room:
                state.rooms.pop(u["session"], None)

    app.get("/healthz", lambda res, req: res.end("ok\n"))
    app.ws("/*", {
        "compression": 0, "max_payload_length": MAX_FRAME, "idle_timeout": 0,
        "max_backpressure": MAX_BACKPRESSURE, "close_on_backpressure_limit": False,
        "upgrade": upgrade, "open": on_open, "message": on_message, "close": on_close,
    })
    app.listen(AppListenOptions(port=port, host="127.0.0.1"), lambda config: None)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m mc.bench.peers.socketify_server")
    p.add_argument("--port", type=int, required=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    build(p.parse_args().port).run()
