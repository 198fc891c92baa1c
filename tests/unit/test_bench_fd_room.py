"""``mc bench connections`` asks a server for no more connections than its fd limit leaves room for."""

from __future__ import annotations

import resource
import subprocess
import sys

from mc.bench.scenarios import fd_room


def test_a_server_is_asked_for_what_its_fd_limit_leaves_room_for() -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    # holds 10 fds more than stdio, like a server's epoll, pipes and listening socket
    child = subprocess.Popen([sys.executable, "-c", "import os, time; fds = [os.open(os.devnull, 0) "
                              "for _ in range(10)]; print(flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, preexec_fn=limit)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        room, why = fd_room(child.pid, 100)
        assert 0 < room <= 64 - 13
        assert "of 100 asked" in why and "under a limit of 64" in why
        assert fd_room(child.pid, room) == (room, "")
    finally:
        child.kill()
        child.wait()
