"""Token buckets for the rate limits of PROTOCOL.md "Limits" (pure: time comes in as ``now``).

``publish_rate`` and ``notify_rate`` are per connection (a bucket on the
connection, made on its first use: an idle connection pays nothing),
``handshake_rate`` per remote IP, with at most ``MAX_IPS`` buckets kept
(least recently used go first). Burst: twice the rate.
"""

from __future__ import annotations

from collections import OrderedDict

BURST = 2.0
MAX_IPS = 10_000


class Bucket:
    __slots__ = ("tokens", "last")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens = rate * BURST
        self.last = now

    def take(self, rate: float, now: float) -> bool:
        """Spend one token if there is one."""
        self.tokens = min(rate * BURST, self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PerAddress:
    """One bucket per remote address, bounded."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def allow(self, address: str, now: float) -> bool:
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = Bucket(self.rate, now)
            if len(self._buckets) >= MAX_IPS:
                self._buckets.popitem(last=False)
        self._buckets[address] = bucket
        return bucket.take(self.rate, now)
