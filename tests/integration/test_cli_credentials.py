"""The CLI against a cluster with app tokens and API keys on (PROTOCOL.md "Security").

``mc notify|consume|status`` take ``--api-key`` / ``$MC_API_KEY``, ``mc
publish|chat`` take ``--token`` / ``$MC_TOKEN``; without them each command
fails with one ``unauthorized`` line (exit 1), and the credential never
appears in anything a command prints.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import orjson
import pytest
import trio

import mc
from mc import tokens
from tests.procs import Proc

from .cluster import cluster
from .test_cli_commands import MC, Lines, stop
from .test_worker_security import SECRET, mint
from .wsclient import unique

KEY = "cli-api-key-0123456789abcdef"
SECURED = ("--jwt-secret", SECRET, "--api-keys", KEY)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def secured() -> Iterator[Proc]:
    with cluster(1, master_extra=SECURED, worker_extra=SECURED) as (master, _):
        yield master


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MC_API_KEY", "MC_TOKEN", "MC_MASTER")}
    return {**env, **extra}


async def run(master: Proc, *args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
    with trio.fail_after(20):
        done = await trio.run_process([*MC, *args, "--master", master.http], stdin=stdin,
                                      capture_stdout=True, capture_stderr=True, check=False, env=_env(**env))
    for secret in (KEY, *env.values()):
        assert secret.encode() not in done.stdout + done.stderr, args
    return done


def refused(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == 1 and b"unauthorized" in done.stderr and b"Traceback" not in done.stderr


async def test_http_commands_take_the_api_key(secured: Proc) -> None:
    assert refused(await run(secured, "status"))
    assert refused(await run(secured, "status", "--api-key", "wrong-key-0123456789"))
    by_env = await run(secured, "status", MC_API_KEY=KEY)
    assert by_env.returncode == 0 and b"1 worker(s)" in by_env.stdout
    by_flag = await run(secured, "status", "--api-key", KEY)
    assert by_flag.returncode == 0 and b"1 worker(s)" in by_flag.stdout

    client = unique("alice")
    async with mc.connect_app(secured.http, client=client, token=mint(client, 60)) as app:
        assert refused(await run(secured, "notify", "hi", "--client", client))
        sent = await run(secured, "notify", "hi", "--client", client, MC_API_KEY=KEY)
        assert sent.returncode == 0 and orjson.loads(sent.stdout) == {"delivered": 1}
        with trio.fail_after(5):
            assert (await app.receive()).data == "hi"


async def test_consume_takes_the_key_and_publish_and_chat_the_token(secured: Proc) -> None:
    assert refused(await run(secured, "consume", "x.>"))
    topic = unique("orders")
    token = mint("cli-pub", 60)
    assert refused(await run(secured, "publish", topic, "1"))
    expired = tokens.mint(SECRET, "cli-pub", -60)  # exp a minute ago, past the 5 s leeway
    assert refused(await run(secured, "publish", topic, "1", "--token", expired))
    consume = await trio.lowlevel.open_process(
        [*MC, "consume", topic, "--master", secured.http, "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        assert consume.stderr is not None and consume.stdout is not None
        await Lines(consume.stderr).until("subscribed")
        published = await run(secured, "publish", topic, '{"n": 1}', MC_TOKEN=token)
        assert published.returncode == 0, published.stderr
        assert orjson.loads(published.stdout)["delivered"] == 1
        line = orjson.loads(await Lines(consume.stdout).next())
        assert line["data"] == {"n": 1} and line["from"]["client"] == "cli-pub"  # the token's sub
    finally:
        assert await stop(consume) == 0

    room = unique("room")
    assert refused(await run(secured, "chat", room, "--client", "cli-chat", stdin=b"hi\n"))
    chatted = await run(secured, "chat", room, "--client", "cli-chat", stdin=b"hi\n",
                        MC_TOKEN=mint("cli-chat", 60))
    assert chatted.returncode == 0 and b"* in " in chatted.stdout, chatted.stderr
