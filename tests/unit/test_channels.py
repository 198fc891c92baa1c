"""batch_of: what is queued goes out as one frame's content, never waiting."""

from __future__ import annotations

import trio

from mc.channels import batch_of
from mc.protocol.control import MAX_BATCH


async def test_a_lone_message_stays_a_map():
    _send, receive = trio.open_memory_channel(10)
    assert batch_of({"a": 1}, receive) == {"a": 1}


async def test_queued_messages_join_the_first_up_to_the_limit():
    send, receive = trio.open_memory_channel(MAX_BATCH + 10)
    for i in range(MAX_BATCH + 5):
        send.send_nowait({"i": i})
    first = await receive.receive()
    batch = batch_of(first, receive)
    assert batch == [{"i": i} for i in range(MAX_BATCH)]
    rest = batch_of(await receive.receive(), receive)
    assert rest == [{"i": i} for i in range(MAX_BATCH, MAX_BATCH + 5)]
