"""The states of one client connection and every transition between them.

Everything that moves a connection's state lives in this file (the model is
h11's ``_state.py``): the core calls :func:`advance` with an event, and an
event the table does not allow in the current state is a bug in mc, raised
as :class:`StateError` rather than silently ignored.

::

    HANDSHAKING --accept--> OPEN --send_close--> CLOSING --close_received--> CLOSED
                             |                     '---timeout / lost------> CLOSED
                             '--close_received (we reply at once), abort, lost--> CLOSED

Only ``OPEN`` connections are written to, routed to or counted as delivered;
``CLOSING`` ones still read, waiting for the client's close reply.
"""

from __future__ import annotations

from enum import Enum


class ConnState(Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Event(Enum):
    ACCEPT = "accept"  # the upgrade was answered with 101
    SEND_CLOSE = "send_close"  # mc queued a close frame
    CLOSE_RECEIVED = "close_received"  # the client's close frame arrived
    TIMEOUT = "timeout"  # the client did not answer our close in time
    LOST = "lost"  # the socket failed or reached EOF
    ABORT = "abort"  # the client broke RFC 6455: close and stop reading at once (7.1.7)


HANDSHAKING, OPEN, CLOSING, CLOSED = ConnState

TRANSITIONS: dict[tuple[ConnState, Event], ConnState] = {
    (HANDSHAKING, Event.ACCEPT): OPEN,
    (HANDSHAKING, Event.LOST): CLOSED,
    (OPEN, Event.SEND_CLOSE): CLOSING,
    (OPEN, Event.CLOSE_RECEIVED): CLOSED,
    (OPEN, Event.LOST): CLOSED,
    (OPEN, Event.ABORT): CLOSED,
    (CLOSING, Event.ABORT): CLOSED,
    (CLOSING, Event.CLOSE_RECEIVED): CLOSED,
    (CLOSING, Event.TIMEOUT): CLOSED,
    (CLOSING, Event.LOST): CLOSED,
    (CLOSED, Event.LOST): CLOSED,
}


class StateError(RuntimeError):
    """An event that the connection's current state does not allow."""


def advance(state: ConnState, event: Event) -> ConnState:
    """The state after ``event``; StateError if ``event`` cannot happen in ``state``."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise StateError(f"{event.value} in state {state.value}") from None
