"""The reconnect schedule: exponential backoff with jitter.

After a connection is lost, retries wait ``initial``, ``initial*factor``, ...
up to ``maximum`` seconds, each shortened by a random part of up to
``jitter`` of itself, so that thousands of clients dropped by the same dead
worker do not all come back in the same millisecond. The schedule restarts
once a connection has stayed up for ``stable`` seconds, so a server that
accepts and then immediately closes (4029, a crash loop) is still backed
off from, while a long-lived connection that drops retries at once.

:class:`Retries` applies it to one logical connection. A connection that was
up and ended by something the client did not cause (the worker closed it
with 4503 or 1001, or vanished: 1006, a lost socket, a killed process) is
retried at once, so the members of a crashed worker's chat sessions are back
within the master's failure detection; further failures then follow the
backoff. One immediate retry per stable period, so a server that accepts and
then drops again at once is backed off from all the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs


@attrs.frozen
class Backoff:
    """Delays between reconnect attempts (seconds).

    Example::

        mc.connect_app(url, client="a", backoff=mc.Backoff(initial=0.5, maximum=30))
    """

    initial: float = attrs.field(default=0.2, validator=attrs.validators.gt(0))
    maximum: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    stable: float = 5.0

    def ceiling(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (0-based), without jitter."""
        # a capped exponent keeps factor**attempt from overflowing a float
        exponent = min(attempt, 64)
        return min(self.maximum, self.initial * self.factor**exponent)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """A delay in ``[ceiling*(1-jitter), ceiling]`` for retry number ``attempt``."""
        top = self.ceiling(attempt)
        return top * (1.0 - self.jitter * rand())


#: close codes that end a connection for reasons the client did not cause:
#: the server going away (1001), restarting (1012) or draining (4503), and an
#: abrupt loss (1006: no close frame, e.g. the worker process died)
UNPROVOKED = frozenset({1001, 1006, 1012, 4503})
#: 4503: "reconnect through the master now" (PROTOCOL.md), so the schedule restarts
_DRAINING = 4503


@attrs.define
class Retries:
    """The delay before each reconnect of one logical connection.

    ``after`` is told how the last attempt ended and answers how long to
    wait: 0 for the first retry after a connection that was up and ended
    unprovoked (see :data:`UNPROVOKED`; ``close_code`` None with ``lived``
    set means the socket was lost without any close), else the backoff's
    next delay (at least ``retry_after`` when the server sent one, capped at
    ``maximum``).
    """

    backoff: Backoff
    attempt: int = 0
    #: an immediate retry is still available in this stable period
    quick: bool = True

    def after(
        self, *, lived: float | None, close_code: int | None, retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """``lived``: how long the connection was up, None if it never came up."""
        b = self.backoff
        if lived is not None and lived >= b.stable:
            self.attempt, self.quick = 0, True
        elif close_code == _DRAINING:
            self.attempt = 0
        unprovoked = close_code is None or close_code in UNPROVOKED
        if lived is not None and unprovoked and self.quick:
            self.quick = False
            return 0.0
        delay = b.delay(self.attempt, rand)
        if retry_after is not None:
            delay = max(delay, min(retry_after, b.maximum))
        self.attempt += 1
        return delay
