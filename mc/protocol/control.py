"""The control link between a worker and the master (internal, over WebSocket).

A worker opens ``ws://MASTER/v1/control`` and keeps it open. Messages are
maps with a ``type``; ``id`` pairs a request with its reply. A frame carries
one message or a batch (a list of up to MAX_BATCH): each side's writer sends
everything queued at once, which keeps the per-frame cost of the ASGI stack
off the claim path. Workers send
msgpack in binary frames (notify ``data`` may hold bytes); the master also
accepts JSON text frames (tools, benchmarks) and answers in the codec of the
link's first message.

worker -> master
  register   {worker, url, capacity, sessions: {session: members}, presence: [[client, device]],
              draining}            (draining: a drain survives a master restart)
  heartbeat  {metrics: {connections, sessions, subscriptions, msgs_in_rate, msgs_out_rate,
              cpu_percent, rss_bytes}}
  presence   {added: [[client, device]], removed: [[client, device]], members: {session: n}}
  claim      {id, session}            -> owner {id, worker, url}
  lookup     {id, session}            -> owner {id, worker|null, url|null}
  release    {session}
  notify     {id, to, frame}          -> notified {id, delivered}   (to the other workers)
  delivered  {id, count}              (the reply to ``deliver``)
  leave      {id}                     -> left {id}   (orderly shutdown: forget me now)

master -> worker
  registered {lease, interval, conflicts: [session]}   (close those sessions with 4503)
  reregister {}                        (the master forgot this worker: register again)
  deliver    {id, to, frame}           (write ``frame`` to the matching local apps)
  kick       {client, device}          (close that app connection with 4009)
  drain      {}                        (refuse new connections, close the rest with 4503)
"""

from __future__ import annotations

from typing import Any

from .errors import violation
from .names import is_name

CONTROL_PATH = "/v1/control"
#: messages in one frame: a frame holds a map, or a list of up to this many maps
MAX_BATCH = 256


def field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``msg[name]`` checked against ``kind``; a ProtocolError (4000) otherwise."""
    value = msg.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise violation(f"control message {msg.get('type')!r}: bad {name!r}")
    return value


def pairs(msg: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """A list of [client, device] name pairs."""
    out = []
    for item in field(msg, name, list):
        if type(item) is not list or len(item) != 2 or not all(is_name(x) for x in item):
            raise violation(f"control message {msg.get('type')!r}: bad {name!r} entry")
        out.append((item[0], item[1]))
    return out


def counts(msg: dict[str, Any], name: str) -> dict[str, int]:
    """A map of session name -> non-negative int."""
    value = msg.get(name) or {}
    if type(value) is not dict or not all(
        is_name(k) and type(n) is int and n >= 0 for k, n in value.items()
    ):
        raise violation(f"control message {msg.get('type')!r}: bad {name!r}")
    return value


def http_to_ws(url: str) -> str:
    """The WebSocket URL of a master given by its http(s) base URL."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url
