"""Errors a person can read: one line naming the problem, exit code 2, no traceback; Ctrl-C is 130.

Real subprocesses (``python -m mc.cli ...``, ``examples/*.py``); every wait bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.procs import free_port, master_proc, running

from .cluster import cluster

pytestmark = pytest.mark.timeout(60)

MC = [sys.executable, "-m", "mc.cli"]
ROOT = Path(__file__).resolve().parents[2]


async def run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    with trio.fail_after(timeout):
        return await trio.run_process([*args], capture_stdout=True, capture_stderr=True, check=False,
                                      stdin=b"")


def one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("command", [
    ("publish", "t.x", "1"),
    ("status",),
    ("notify", "1"),
])
async def test_an_unreachable_master_is_one_line_and_exit_2(command):
    url = dead_url()
    done = await run(*MC, *command, "--master", url)
    assert done.returncode == 2, done.stderr.decode()
    one_line(done, "unavailable", url.rsplit(":", 1)[1])


async def test_consume_against_a_dead_master_is_one_line_and_exit_2():
    done = await run(*MC, "consume", "t.>", "--master", dead_url(), timeout=30)
    assert done.returncode == 2, done.stderr.decode()
    one_line(done, "mc consume: unavailable")


@pytest.mark.parametrize("argv", [
    ("publish", "t.x", "1", "--bogus"),
    ("worker", "--no-such-flag"),
    ("status", "--master"),
    ("up", "--log-format", "xml"),
])
async def test_a_bad_flag_is_one_line_and_exit_2(argv):
    done = await run(*MC, *argv)
    assert done.returncode == 2
    one_line(done, f"mc {argv[0]}", "--help")


@pytest.mark.parametrize("argv, needle", [
    (("worker", "--port", "abc"), "port"),
    (("master", "--log-format", "xml"), "log_format"),
    (("worker", "--heartbeat", "-1"), "heartbeat"),
])
async def test_a_bad_setting_is_one_line_and_exit_2(argv, needle):
    done = await run(*MC, *argv)
    assert done.returncode == 2
    one_line(done, needle)


async def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("max_frame = 'big'\n")
    done = await run(*MC, "worker", "--config", str(bad), "--port", "0")
    assert done.returncode == 2
    one_line(done, str(bad), "max_frame")
    bad.write_text("this is [ not toml\n")
    done = await run(*MC, "master", "--config", str(bad))
    assert done.returncode == 2
    one_line(done, str(bad))


async def test_a_port_in_use_is_one_line_and_exit_2():
    with running(master_proc()) as (master,):
        for role in ("master", "worker"):
            done = await run(*MC, role, "--port", str(master.port))
            assert done.returncode == 2, done.stderr.decode()
            one_line(done, "in use", str(master.port))


async def interrupt(proc: trio.Process, ready: bytes, stream: trio.abc.ReceiveStream) -> int:
    """Wait for ``ready`` in the child's output, then Ctrl-C it (SIGINT by PID); its exit code."""
    seen = b""
    with trio.fail_after(20):
        while ready not in seen:
            chunk = await stream.receive_some(65536)
            assert chunk, f"ended before {ready!r}: {seen[-2000:]!r}"
            seen += chunk
    proc.send_signal(signal.SIGINT)
    with trio.move_on_after(10):
        return await proc.wait()
    proc.kill()
    await proc.wait()
    raise AssertionError("ignored Ctrl-C")


async def test_ctrl_c_exits_quietly_with_130():
    with cluster(1) as (master, _):
        env = dict(os.environ, MC_MASTER=master.http, PYTHONUNBUFFERED="1")
        # (command, stdin to send, what it prints once it is running, on stdout or stderr)
        cases = [
            ([*MC, "consume", "t.>"], b"", b"subscribed", "stderr"),
            ([*MC, "publish", "t.x", "-"], b"1\n", b'{"n":1', "stdout"),
            ([*MC, "status", "--watch"], b"", b"worker(s)", "stdout"),
            ([sys.executable, str(ROOT / "examples" / "chat.py"), "room-ctrlc", "alice"], b"",
             b"you are in", "stdout"),
            ([sys.executable, str(ROOT / "examples" / "group_worker.py"), "grp"], b"",
             b"waiting for orders", "stdout"),
        ]
        for argv, stdin, ready, where in cases:
            proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, env=env)
            try:
                assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
                if stdin:
                    await proc.stdin.send_all(stdin)
                code = await interrupt(proc, ready, proc.stderr if where == "stderr" else proc.stdout)
                assert code == 130, argv
                rest = b""
                with trio.move_on_after(5):
                    while chunk := await proc.stderr.receive_some(65536):
                        rest += chunk
                assert b"Traceback" not in rest, (argv, rest.decode()[-2000:])
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
