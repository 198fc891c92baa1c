"""The SDK-based CLI commands, each run as a real subprocess against a real cluster.

``python -m mc.cli publish|consume|chat|notify|status``; the other end of
each conversation is the Python SDK. Long-running commands are stopped by
PID and must then exit cleanly: status 0 after SIGTERM, 130 after SIGINT (Ctrl-C).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

import mc
from mc.cli import build_parser
from tests.procs import running, worker_proc

from .test_sdk_support import cluster, nothing_more, online, receive, unique, worker_id

pytestmark = pytest.mark.timeout(60)

MC = [sys.executable, "-m", "mc.cli"]
COMMANDS = ("publish", "consume", "chat", "notify", "status")


@pytest.fixture(scope="module")
def env():
    with cluster(1) as (master, workers):
        yield master, workers[0]


async def mc_cli(*args: str, stdin: bytes = b"", timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run one command to completion (killed if it outlives ``timeout``)."""
    with trio.fail_after(timeout):
        return await trio.run_process([*MC, *args], stdin=stdin, capture_stdout=True,
                                      capture_stderr=True, check=False)


class Lines:
    """Line reader over a child's pipe, every read bounded."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buf = b""

    async def next(self, timeout: float = 10.0) -> str:
        with trio.fail_after(timeout):
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError(f"end of output; partial line {self.buf!r}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    async def until(self, needle: str, timeout: float = 10.0) -> str:
        with trio.fail_after(timeout):
            while needle not in (line := await self.next(timeout)):
                pass
            return line


async def stop(proc: trio.Process, sig: int = signal.SIGTERM) -> int:
    """Signal the child by PID and wait (bounded); SIGKILL if it does not exit."""
    if proc.returncode is None:
        proc.send_signal(sig)
    with trio.move_on_after(5):
        return await proc.wait()
    proc.kill()
    await proc.wait()
    raise AssertionError(f"{proc.args} ignored signal {sig}")


def test_every_command_has_help_and_master(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([command, "--help"])
        assert info.value.code == 0
        assert "--master URL" in capsys.readouterr().out, command


async def test_publish_with_count(env):
    master, _ = env
    topic = unique("cli") + ".orders"
    async with mc.connect_consumer(master.http, name="cli-check") as consumer:
        await consumer.subscribe(topic)
        done = await mc_cli("publish", topic, '{"id": 7}', "--count", "3", "--key", "k1",
                            "--client", "cli-pub", "--master", master.http)
        assert done.returncode == 0, done.stderr.decode()
        acks = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert acks == [{"n": n, "topic": topic, "delivered": 1} for n in (1, 2, 3)]
        for _ in range(3):
            msg = await receive(consumer)
            assert (msg.data, msg.key, msg.sender.client) == ({"id": 7}, "k1", "cli-pub")


async def test_publish_lines_from_stdin_and_rate(env):
    master, _ = env
    topic = unique("stdin")
    async with mc.connect_consumer(master.http, name="cli-check") as consumer:
        await consumer.subscribe(topic)
        start = trio.current_time()
        done = await mc_cli("publish", topic, "-", "--rate", "20", "--master", master.http,
                            stdin=b'42\nhello world\n{"a": [1]}\n')
        assert done.returncode == 0, done.stderr.decode()
        assert len(done.stdout.decode().splitlines()) == 3
        assert [(await receive(consumer)).data for _ in range(3)] == [42, "hello world", {"a": [1]}]
        assert trio.current_time() - start >= 0.1  # 3 messages at 20/s: two gaps of 50 ms


async def test_publish_to_a_bad_topic_fails_cleanly(env):
    master, _ = env
    done = await mc_cli("publish", "bad..topic", "1", "--master", master.http)
    assert done.returncode == 1
    assert b"bad_request" in done.stderr and b"Traceback" not in done.stderr


async def test_consume_prints_json_lines(env):
    master, worker = env
    topic = unique("feed")
    proc = await trio.lowlevel.open_process(
        [*MC, "consume", f"{topic}.>", "--group", "g", "--master", master.http],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        await Lines(proc.stderr).until("subscribed")
        async with mc.connect_app(master.http, client="cli-feeder", device="d1") as app:
            assert await app.publish(f"{topic}.eu", {"x": 1}, key="k") == 1
        line = json.loads(await Lines(proc.stdout).next())
        assert {k: line[k] for k in ("topic", "key", "data", "from", "worker")} == {
            "topic": f"{topic}.eu", "key": "k", "data": {"x": 1},
            "from": {"client": "cli-feeder", "device": "d1"}, "worker": worker_id(worker),
        }
        assert line["seq"] >= 1 and line["ts"] > 0
    finally:
        assert await stop(proc) == 0


async def test_notify_prints_delivered(env):
    master, _ = env
    alice = unique("alice")
    async with mc.connect_app(master.http, client=alice, tags=["driver"]) as app:
        await online(master, alice)
        for args, data in (
            (("--client", alice), '{"msg": "hi"}'),
            (("--client", alice, "--device", "default"), "plain text"),
            (("--tags", "driver,other"), "tagged"),
            ((), "broadcast"),
        ):
            done = await mc_cli("notify", data, *args, "--master", master.http)
            assert done.returncode == 0, done.stderr.decode()
            assert json.loads(done.stdout)["delivered"] >= 1
            note = await receive(app)
            assert note.sender == "api"
            assert note.data == ({"msg": "hi"} if data.startswith("{") else data)
        done = await mc_cli("notify", "x", "--client", unique("nobody"), "--master", master.http)
        assert (done.returncode, json.loads(done.stdout)) == (0, {"delivered": 0})
        assert b"offline" in done.stderr
        await nothing_more(app)


async def test_status_prints_the_worker_table(env):
    master, worker = env
    done = await mc_cli("status", "--master", master.http)
    assert done.returncode == 0, done.stderr.decode()
    header, row, totals = done.stdout.decode().splitlines()
    assert header.split() == ["ID", "URL", "STATE", "CONNECTIONS", "SESSIONS", "IN/S", "OUT/S"]
    assert row.split()[:3] == [worker_id(worker), worker.url, "up"]
    assert totals.startswith("1 worker(s)")


async def test_status_watch_refreshes_until_interrupted(env):
    master, worker = env
    proc = await trio.lowlevel.open_process([*MC, "status", "--watch", "--master", master.http],
                                            stdout=subprocess.PIPE)
    try:
        out = Lines(proc.stdout)
        for _ in range(2):  # two refreshes, a second apart
            await out.until(worker_id(worker), timeout=5)
    finally:
        assert await stop(proc, signal.SIGINT) == 130  # Ctrl-C: 128 + SIGINT, as shells report it


async def test_chat_from_stdin(env):
    master, _ = env
    room = unique("room")
    async with mc.open_chat(master.http, room, client="bob") as bob:
        proc = await trio.lowlevel.open_process(
            [*MC, "chat", room, "--client", "alice", "--master", master.http],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        try:
            out = Lines(proc.stdout)
            assert "members: bob, alice" in await out.next()
            assert await receive(bob, 10) == mc.Joined("alice")
            await proc.stdin.send_all(b"hello bob\n")
            msg = await receive(bob)
            assert (msg.sender, msg.data) == ("alice", "hello bob")
            await bob.send("hi alice")
            assert await out.next() == "bob: hi alice"
            await proc.stdin.aclose()  # end of input: alice leaves
            with trio.fail_after(10):
                assert await proc.wait() == 0
            assert await receive(bob) == mc.Left("alice")
        finally:
            await stop(proc)


@pytest.fixture(scope="module")
def standalone():
    """One worker without a master (it answers 404 on /v1/workers)."""
    with running(worker_proc()) as (worker,):
        yield worker


async def test_sdk_consumer_attaches_to_a_standalone_worker(standalone):
    topic = unique("solo")
    for url in (standalone.http, standalone.url):  # http:// or ws:// both name it
        async with mc.connect_consumer(url, name=unique("solo-c")) as consumer:
            assert consumer.workers == (worker_id(standalone),)
            await consumer.subscribe(f"{topic}.>")
            async with mc.connect_app(standalone.http, client=unique("solo-app")) as app:
                assert await app.publish(f"{topic}.a", {"n": 1}) == 1
            msg = await receive(consumer)
            assert (msg.topic, msg.data, msg.worker) == (f"{topic}.a", {"n": 1}, worker_id(standalone))


async def test_consume_against_a_standalone_worker(standalone):
    topic = unique("solo")
    proc = await trio.lowlevel.open_process(
        [*MC, "consume", f"{topic}.>", "--master", standalone.http],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        status = await Lines(proc.stderr).until("subscribed")
        assert "on 1 worker(s)" in status
        async with mc.connect_app(standalone.http, client=unique("solo-feeder")) as app:
            assert await app.publish(f"{topic}.x", "hello") == 1
        line = json.loads(await Lines(proc.stdout).next())
        assert (line["topic"], line["data"], line["worker"]) == (f"{topic}.x", "hello", worker_id(standalone))
    finally:
        assert await stop(proc) == 0


async def test_consumer_against_a_master_less_non_worker_still_fails(standalone):
    """A 404 on /v1/workers from something that is not a worker stays an error."""
    with pytest.raises(mc.McError) as exc:
        async with mc.connect_consumer(f"{standalone.http}/nowhere", name="x", connect_timeout=3):
            pass
    assert exc.value.code == "not_found"
