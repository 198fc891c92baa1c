"""A real ``redis-server`` for tests: Debian's, on a free port, no persistence, stopped by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.procs import free_port

STARTUP_TIMEOUT = 10.0


def available() -> bool:
    return shutil.which("redis-server") is not None


class RedisProc:
    """One redis-server; ``restart()`` stops it (SIGKILL: state lost) and starts it on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.popen: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.popen.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def kill(self) -> None:
        """SIGKILL (everything in it is lost: persistence is off)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), for tests that peek at the store."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)


@contextmanager
def redis_server() -> Iterator[RedisProc]:
    proc = RedisProc().start()
    try:
        yield proc
    finally:
        proc.stop()
