"""mc: a clustered real-time message channel, and its Python SDK.

The SDK needs only the master's URL::

    import mc

    async with mc.connect_app("http://127.0.0.1:7100", client="alice") as app:
        await app.publish("orders.eu", {"id": 1})          # -> consumers
        async for note in app.notifications(): ...          # <- consumers

    async with mc.open_chat("http://127.0.0.1:7100", "room-1", client="alice") as chat:
        await chat.send("hi")
        async for event in chat: ...                        # ChatMessage / Joined / Left

    async with mc.connect_consumer("http://127.0.0.1:7100", name="billing-1") as consumer:
        await consumer.subscribe("orders.>", group="billing")
        async for msg in consumer: ...                      # Message
        await consumer.notify({"client": "alice"}, "your order shipped")

Everything that goes wrong raises :class:`McError`. The names below are
imported on first use, so the master and worker processes, which import
``mc.*`` modules but not the SDK, do not pay for loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mc.client import App, Backoff, Chat, ChatEvent, McError, connect_app, open_chat
    from mc.consumer import Consumer, connect_consumer
    from mc.protocol import ChatMessage, Joined, Left, Message, Notification, Sender, Target

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(
        ("App", "Backoff", "Chat", "ChatEvent", "McError", "connect_app", "open_chat"), "mc.client"
    ),
    **dict.fromkeys(("Consumer", "connect_consumer"), "mc.consumer"),
    **dict.fromkeys(
        ("ChatMessage", "Joined", "Left", "Message", "Notification", "Sender", "Target"),
        "mc.protocol",
    ),
}

__all__ = [
    "App",
    "Backoff",
    "Chat",
    "ChatEvent",
    "ChatMessage",
    "Consumer",
    "Joined",
    "Left",
    "McError",
    "Message",
    "Notification",
    "Sender",
    "Target",
    "connect_app",
    "connect_consumer",
    "open_chat",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
