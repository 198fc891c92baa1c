"""The app SDK: apps and chat sessions, through the master (see ``mc``).

Layout: ``urls`` (addresses, following 307), ``transport`` (one WebSocket,
frame encoding, request/ack matching with ``requests``), ``link`` (a
connection that reconnects with ``backoff``), ``inbox`` (the bounded event
buffer), ``owner``/``endpoint`` (the nursery and shape the SDK objects
share), and the objects themselves in ``app`` and ``chat``.
"""

from .app import App, connect_app
from .backoff import Backoff
from .chat import Chat, ChatEvent, open_chat
from .errors import McError

__all__ = ["App", "Backoff", "Chat", "ChatEvent", "McError", "connect_app", "open_chat"]
