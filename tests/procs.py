"""Real mc processes for integration tests: start on free loopback ports, stop by PID.

Each helper starts ``python -m mc.cli ...`` as a child process, waits until it
answers ``/healthz`` and kills exactly that PID when done (SIGTERM, then
SIGKILL after a grace period). Nothing here mocks mc.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

STARTUP_TIMEOUT = 15.0


def bindable(port: int) -> bool:
    """Can a server listen on ``port`` now (as the master and workers do, SO_REUSEADDR)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def free_run(n: int) -> int:
    """A port P with P .. P+n-1 all free (mc up gives its workers the ports after the master's).

    Chosen below the kernel's ephemeral range: a port from that range may be
    taken meanwhile as the local end of an outgoing connection (or linger in
    TIME_WAIT) and then the worker could not listen on it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low, 12_000) - n
    for _ in range(200):
        base = random.randrange(10_000, top)
        if all(bindable(base + i) for i in range(n)):
            return base
    raise RuntimeError("no run of free ports")


def free_port() -> int:
    """A free port below the ephemeral range (see :func:`free_run`)."""
    return free_run(1)


class Proc:
    """A started mc process; ``url`` is its base URL (ws:// for workers)."""

    def __init__(self, args: list[str], port: int, scheme: str, *, verify: ssl.SSLContext | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        #: with TLS (``verify``: the client context trusting its certificate) the base is https
        self.http = f"{'https' if verify else 'http'}://127.0.0.1:{port}"
        self.verify: ssl.SSLContext | bool = verify or True
        self.env = env or {}
        self.popen: subprocess.Popen[bytes] | None = None
        # stderr goes to a file: a pipe nobody reads would block a chatty process
        self.log = tempfile.TemporaryFile()

    def start(self) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "mc.cli", *self.args],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.output()[-2000:]}")
            try:
                if httpx.get(f"{self.http}/healthz", timeout=0.5, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.args} did not come up within {STARTUP_TIMEOUT}s")

    def output(self) -> str:
        """What the process wrote to stderr so far (its log)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        """Die without any cleanup, as a crashed host would."""
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)


def worker_proc(*extra: str, port: int | None = None) -> Proc:
    port = port or free_port()
    return Proc(["worker", "--port", str(port), "--id", f"w{port}", *extra], port, "ws")


def master_proc(*extra: str, port: int | None = None) -> Proc:
    port = port or free_port()
    return Proc(["master", "--port", str(port), *extra], port, "http")


@contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    """Start the processes in order; stop them all (reverse order) afterwards."""
    started: list[Proc] = []
    try:
        for p in procs:
            started.append(p.start())
        yield tuple(started)
    finally:
        for p in reversed(started):
            p.stop()
