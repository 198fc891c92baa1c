"""Batching from trio memory channels, shared by both ends of the control link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from mc.protocol.control import MAX_BATCH, SPLIT_FRAME, ControlMessage


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


def encoded(batch: Any, encode: Callable[[Any], bytes]) -> list[bytes]:
    """``batch`` (from :func:`batch_of`) as frames the other end accepts.

    A list whose encoding passes SPLIT_FRAME is split in halves
    until each half fits (one message is bounded by its own fields), so a burst
    of large notifies cannot make a frame the other end refuses.
    """
    if type(batch) is not list:
        return [encode(batch.to_wire())]
    frame = encode([m.to_wire() for m in batch])
    if len(frame) <= SPLIT_FRAME or len(batch) == 1:
        return [frame]
    half = len(batch) // 2
    return encoded(_one_or_list(batch[:half]), encode) + encoded(_one_or_list(batch[half:]), encode)


def _one_or_list(messages: list[ControlMessage]) -> Any:
    return messages[0] if len(messages) == 1 else messages
