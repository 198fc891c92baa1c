"""Batching from trio memory channels, shared by both ends of the control link."""

from __future__ import annotations

from typing import Any

import trio

from mc.protocol.control import MAX_BATCH


def batch_of(first: Any, channel: trio.MemoryReceiveChannel[Any]) -> Any:
    """``first`` plus whatever is already queued behind it, as one frame's content.

    A lone message stays a map; several become a list (at most MAX_BATCH).
    Never waits: it only takes what is there.
    """
    batch = [first]
    while len(batch) < MAX_BATCH:
        try:
            batch.append(channel.receive_nowait())
        except trio.WouldBlock:
            break
    return first if len(batch) == 1 else batch
