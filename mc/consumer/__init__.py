"""The consumer SDK: subscribe on every worker, notify apps (see ``mc``)."""

from .consumer import Consumer, connect_consumer

__all__ = ["Consumer", "connect_consumer"]
