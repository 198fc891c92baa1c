"""The reconnect schedule: exponential backoff with jitter.

After a connection is lost, retries wait ``initial``, ``initial*factor``, ...
up to ``maximum`` seconds, each shortened by a random part of up to
``jitter`` of itself, so that thousands of clients dropped by the same dead
worker do not all come back in the same millisecond. The schedule restarts
once a connection has stayed up for ``stable`` seconds, so a server that
accepts and then immediately closes (4029, a crash loop) is still backed
off from, while a long-lived connection that drops retries at once.
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
