"""Logging for every mc process: text or JSON lines, the process named, floods bounded.

``setup(level, fmt, process)`` configures the root logger once per process:

* ``text``: ``2026-12-01 11:40:00,123 INFO w1 mc.worker: message [client=a code=4009]``,
* ``json``: one object per line with ``ts``, ``level``, ``msg``, ``process``
  (``master``, the worker id, ``up``), ``logger`` and, where the call passed
  them with ``extra=``, the fields in :data:`FIELDS`; a traceback as ``exc``.

Library noise (httpx's request lines, hypercorn's access log) is off below
DEBUG. :class:`Limited` logs events that a flood of bad clients could
repeat (refused handshakes, non-1000 closes, link retries): a token bucket
per message kind, and the number it suppressed is logged once the bucket
refills.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

#: the structured fields a log line may carry (``extra={...}``)
FIELDS = ("client", "device", "session", "conn", "code", "status", "trace", "worker", "remote", "path",
          "reason", "url", "step", "suppressed")
FORMATS = ("text", "json")
NOISY = ("httpx", "httpcore", "hypercorn.access", "hypercorn.error", "trio-websocket")

_process = "mc"


def process_name() -> str:
    return _process


def set_process(name: str) -> None:
    """Name this process in every line from now on (a worker knows its id only once bound)."""
    global _process
    _process = name


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "process": _process,
            "logger": record.name,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


JsonFormatter.converter = time.gmtime


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process_name)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.process_name = _process
        text = super().format(record)
        fields = [f"{n}={record.__dict__[n]}" for n in FIELDS if record.__dict__.get(n) is not None]
        return f"{text} [{' '.join(fields)}]" if fields else text


def setup(level: str = "info", fmt: str = "text", process: str | None = None) -> None:
    """Configure the root logger (replacing any handler an earlier call installed)."""
    if process is not None:
        set_process(process)
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)


class Limited:
    """At most ``burst`` lines of one kind at once, ``rate`` per second after that.

    What was suppressed is counted and reported with the next line that gets
    through (``... (N similar suppressed)``), so nothing disappears silently.
    """

    __slots__ = ("logger", "rate", "burst", "_tokens", "_stamp", "_suppressed", "_summary_at")

    #: seconds between the lines that report what other kinds suppressed
    SUMMARY_EVERY = 10.0

    def __init__(self, logger: logging.Logger, rate: float = 1.0, burst: float = 10.0) -> None:
        self.logger = logger
        self.rate = rate
        self.burst = burst
        self._tokens: dict[str, float] = {}
        self._stamp: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._summary_at = 0.0

    def log(self, level: int, kind: str, msg: str, *args: Any, **extra: Any) -> bool:
        """Log ``msg`` unless ``kind``'s bucket is empty; True if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        if self._suppressed and now >= self._summary_at:
            self.flush(now)
        tokens = min(self.burst, self._tokens.get(kind, self.burst)
                     + (now - self._stamp.get(kind, now)) * self.rate)
        self._stamp[kind] = now
        if tokens < 1.0:
            self._tokens[kind] = tokens
            if not self._suppressed:  # the first line dropped since the last summary
                self._summary_at = now + self.SUMMARY_EVERY
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._tokens[kind] = tokens - 1.0
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg = f"{msg} ({suppressed} similar suppressed)"
            extra["suppressed"] = suppressed
        self.logger.log(level, msg, *args, extra={k: v for k, v in extra.items() if v is not None})
        return True

    def flush(self, now: float | None = None) -> None:
        """Log (and reset) how many lines of each kind were suppressed."""
        self._summary_at = (time.monotonic() if now is None else now) + self.SUMMARY_EVERY
        counts, self._suppressed = self._suppressed, {}
        for kind, n in sorted(counts.items()):
            self.logger.warning("%d log lines of kind %r suppressed (rate limit)", n, kind,
                                extra={"suppressed": n, "step": kind})

    def suppressed(self) -> dict[str, int]:
        return dict(self._suppressed)
