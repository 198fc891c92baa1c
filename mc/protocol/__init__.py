"""The mc wire protocol, sans-IO: frames, codecs, validation, codes, topics.

Nothing here imports trio or touches a socket; the worker, the master and
the SDKs all validate and encode through this package so they cannot drift.
"""

from .codec import CODECS, JSON, MSGPACK, Codec, negotiate
from .errors import CloseCode, ErrorCode, ProtocolError
from .frames import (
    APP_FRAMES,
    BROADCAST,
    CHAT_FRAMES,
    CONSUMER_FRAMES,
    Ack,
    ChatMessage,
    Error,
    Joined,
    Left,
    Message,
    Notification,
    Notify,
    Pause,
    Ping,
    Pong,
    Publish,
    Resume,
    Send,
    Sender,
    Subscribe,
    Target,
    Unsubscribe,
    Welcome,
    parse_request,
    parse_server_frame,
)
from .names import is_name, is_pattern, is_topic
from .topics import SubscriptionIndex, pattern_matches

__all__ = [
    "APP_FRAMES",
    "BROADCAST",
    "CHAT_FRAMES",
    "CODECS",
    "CONSUMER_FRAMES",
    "JSON",
    "MSGPACK",
    "Ack",
    "ChatMessage",
    "CloseCode",
    "Codec",
    "Error",
    "ErrorCode",
    "Joined",
    "Left",
    "Message",
    "Notification",
    "Notify",
    "Pause",
    "Ping",
    "Pong",
    "ProtocolError",
    "Publish",
    "Resume",
    "Send",
    "Sender",
    "Subscribe",
    "SubscriptionIndex",
    "Target",
    "Unsubscribe",
    "Welcome",
    "is_name",
    "is_pattern",
    "is_topic",
    "negotiate",
    "parse_request",
    "parse_server_frame",
    "pattern_matches",
]
