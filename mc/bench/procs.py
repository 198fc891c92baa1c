"""Processes a benchmark starts: servers and generators, pinned, measured, stopped.

Every process is started here with ``subprocess.Popen`` and remembered in a
:class:`Group`; ``Group.stop_all`` (called from a ``finally``, so also on
Ctrl-C) sends SIGTERM to each PID it started, waits, then SIGKILLs the ones
still alive. Nothing is ever signalled by name.

CPU pinning (Linux ``sched_setaffinity``, as ``taskset`` does): with two or
more CPUs the server under test gets CPU 0 and every generator the other
CPUs, so the server has one core to itself, as the targets assume ("per
worker process, one core"). ``--no-pin`` turns it off.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

STOP_GRACE = 3.0


PORT_TRIES = 200


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing ports (Linux's default when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range.

    Ports the kernel hands out to clients (the generators' own sockets, by
    the thousand) are never picked, so a server cannot lose its port to a
    client between this check and its bind. Random within the half below
    the range, checked by binding as the servers do (SO_REUSEADDR).
    """
    low, _ = ephemeral_range()
    first = max(1024, low // 2)
    for _ in range(PORT_TRIES):
        port = random.randrange(first, low)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}..{low - 1} after {PORT_TRIES} tries")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` so far; one that is gone counts 0."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


class Child:
    """One started process; JSON lines from its stdout are collected by a thread."""

    def __init__(self, name: str, args: list[str], *, cpus: set[int] | None, stdin: bool,
                 grace: float = STOP_GRACE, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.grace = grace
        #: processes this one started (e.g. mc up's master and workers), by PID
        self.descendants: list[psutil.Process] = []
        self.popen = subprocess.Popen(
            args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )
        self.pid = self.popen.pid
        if cpus:
            try:
                os.sched_setaffinity(self.pid, cpus)
            except (AttributeError, OSError):
                pass
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        try:
            self.ps: psutil.Process | None = psutil.Process(self.pid)
        except psutil.Error:
            self.ps = None

    def _read_out(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(msg)
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)
            del self.stderr[:-50]

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.lines:
                    if msg.get("event") == event:
                        return msg
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name}: no {event!r} within {timeout}s "
                                       f"(exit {self.popen.poll()}): {self.tail()}")
                self._cond.wait(min(left, 0.1))

    def latest(self) -> dict[str, Any] | None:
        with self._cond:
            return self.lines[-1] if self.lines else None

    def at(self, t: float) -> dict[str, Any] | None:
        """The last progress line reported at or before monotonic time ``t``."""
        with self._cond:
            best = None
            for msg in self.lines:
                if msg.get("event") in ("progress", "done") and msg["t"] <= t:
                    best = msg
            return best

    def go(self, word: str = "go") -> None:
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.write(word + "\n")
                self.popen.stdin.flush()
            except OSError:
                pass

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process and its live children."""
        if self.ps is None:
            return 0.0
        try:
            return cpu_seconds([self.ps, *self.ps.children(recursive=True)])
        except psutil.Error:
            return 0.0

    def rss(self) -> int:
        if self.ps is None:
            return 0
        try:
            return self.ps.memory_info().rss
        except psutil.Error:
            return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def fds(self) -> int:
        """Open file descriptors: how far a generator's connection setup got."""
        if self.ps is None:
            return 0
        try:
            return self.ps.num_fds()
        except psutil.Error:
            return 0

    def tail(self) -> str:
        return "".join(self.stderr[-10:]).strip()[-1500:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Group:
    """The processes of one benchmark run; ``stop_all`` ends each by its PID."""

    def __init__(self, *, pin: bool) -> None:
        self.children: list[Child] = []
        avail = cpus()
        self.pin = pin and len(avail) >= 2
        self.server_cpus = {avail[0]} if self.pin else None
        self.gen_cpus = set(avail[1:]) if self.pin else None

    def server(self, name: str, args: list[str], grace: float = STOP_GRACE) -> Child:
        return self.command(name, [sys.executable, *args], grace=grace)

    def command(self, name: str, argv: list[str], grace: float = STOP_GRACE,
                env: dict[str, str] | None = None) -> Child:
        """A server that is not a Python module (nats-server), on the server's CPUs."""
        child = Child(name, argv, cpus=self.server_cpus, stdin=False, grace=grace, env=env)
        self.children.append(child)
        return child

    def generator(self, name: str, args: list[str], cpus: set[int] | None = None,
                  module: str = "mc.bench.gen") -> Child:
        """A load generator: ``module`` is mc.bench.gen, or mc.bench.natsgen for NATS."""
        child = Child(name, [sys.executable, "-m", module, *args],
                      cpus=cpus or self.gen_cpus, stdin=True)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        """Generators first (their clients go away), then servers: SIGTERM, wait, SIGKILL.

        A server that started processes of its own (``mc up``) stops them on
        SIGTERM; any of them still alive afterwards is killed by its PID.
        """
        gens = [c for c in self.children if c.popen.stdin is not None]
        servers = [c for c in self.children if c.popen.stdin is None]
        for group in (gens, servers):
            for child in reversed(group):
                if child.popen.stdin is not None:
                    try:
                        child.popen.stdin.close()
                    except OSError:
                        pass
                child.stop()
            deadline = time.monotonic() + max((c.grace for c in group), default=0.0)
            for child in group:
                try:
                    child.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    try:
                        child.popen.wait(2)
                    except subprocess.TimeoutExpired:
                        pass
        for child in self.children:
            for d in child.descendants:
                try:
                    if d.is_running() and d.status() != psutil.STATUS_ZOMBIE:
                        d.kill()
                except psutil.Error:
                    pass
        self.children.clear()


def wait_port(port: int, proc: Child, timeout: float, path: str = "/healthz",
              tls: ssl.SSLContext | None = None) -> None:
    """Until ``GET path`` on 127.0.0.1:``port`` (over TLS with ``tls``) answers 200 (or raise)."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw, \
                    (tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer on port {port} within {timeout}s")
