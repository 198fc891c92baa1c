"""The JSON frames the Python peers send: the shapes mc and the baseline send.

Encoded once per publish or chat message with orjson; ``worker`` names the
peer so a frame says who produced it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson


def welcome(worker: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": "welcome", "worker": worker, "heartbeat": 25, **fields})


def ack(mid: Any, **fields: Any) -> bytes:
    return orjson.dumps({"type": "ack", "id": mid, **fields})


def message(worker: str, topic: str, data: Any, sender: dict[str, str], seq: int) -> bytes:
    return orjson.dumps({"type": "message", "topic": topic, "data": data, "from": sender,
                         "worker": worker, "seq": seq, "ts": time.time_ns() // 1_000_000})


def chat(client: str, data: Any, seq: int) -> bytes:
    return orjson.dumps({"type": "chat", "from": client, "data": data, "seq": seq,
                         "ts": time.time_ns() // 1_000_000})


def joined(client: str) -> bytes:
    return orjson.dumps({"type": "joined", "client": client})


def left(client: str) -> bytes:
    return orjson.dumps({"type": "left", "client": client})
