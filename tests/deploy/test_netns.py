"""Separate hosts without containers: master, workers and clients in network namespaces.

The test makes five namespaces of its own, named uniquely per run: a
"switch" holding a bridge, and four hosts, each with a veth into the bridge
and one address in a /24 of 10.77.0.0/16 that exists only inside these
namespaces (the root namespace gets no interface and no route to it):

    master  10.77.N.1   mc master
    w1      10.77.N.2   mc worker --id w1   (advertises ws://10.77.N.2:7101)
    w2      10.77.N.3   mc worker --id w2   (advertises ws://10.77.N.3:7101)
    client  10.77.N.4   python -m tests.deploy.netns_client (registration, chat 307
                        across hosts, notify across workers, presence)

Every process is started by this test with ``ip netns exec`` and stopped by
its PID; the namespaces (and with them the veths and the bridge) are deleted
in a ``finally``. Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .podman import REPO, run

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

HOSTS = ("master", "w1", "w2", "client")
MASTER_PORT = 7100
WORKER_PORT = 7101
CLIENT_TIMEOUT = 60


class Net:
    """The namespaces of one run and their addresses."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.subnet = f"10.77.{secrets.randbelow(256)}"
        self.switch = f"mc{tag}-sw"
        self.ns = {host: f"mc{tag}-{host}" for host in HOSTS}
        self.ip = {host: f"{self.subnet}.{i}" for i, host in enumerate(HOSTS, start=1)}
        self.made: list[str] = []

    def ip_cmd(self, *args: str) -> None:
        run(["ip", *args], timeout=10)

    def build(self) -> None:
        for name in (self.switch, *self.ns.values()):
            self.ip_cmd("netns", "add", name)
            self.made.append(name)
        self.ip_cmd("-n", self.switch, "link", "add", "br0", "type", "bridge")
        self.ip_cmd("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(HOSTS):
            ns, port = self.ns[host], f"p{i}"
            # created in the switch namespace, its peer moved straight into the host's
            self.ip_cmd("-n", self.switch, "link", "add", port, "type", "veth",
                        "peer", "name", "eth0", "netns", ns)
            self.ip_cmd("-n", self.switch, "link", "set", port, "master", "br0", "up")
            self.ip_cmd("-n", ns, "addr", "add", f"{self.ip[host]}/24", "dev", "eth0")
            self.ip_cmd("-n", ns, "link", "set", "eth0", "up")
            self.ip_cmd("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for name in reversed(self.made):
            run(["ip", "netns", "del", name], timeout=10, check=False)
        self.made.clear()

    def http(self, host: str, port: int) -> str:
        return f"http://{self.ip[host]}:{port}"


def can_make_namespaces() -> str | None:
    """Why this machine cannot run the test, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mcprobe{secrets.token_hex(3)}"
    made = run(["ip", "netns", "add", probe], check=False, timeout=10)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False, timeout=10)
    return None


@contextmanager
def namespaces() -> Iterator[Net]:
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    net = Net()
    try:
        net.build()
        yield net
    finally:
        net.destroy()


def security_flags(role: str) -> list[str]:
    """A cluster key once mc has one: off loopback, mc will refuse to start without it."""
    help_text = run([sys.executable, "-m", "mc.cli", role, "--help"]).stdout
    # one word: a random key may start with "-", which argparse would take for a flag
    return [f"--cluster-key={CLUSTER_KEY}"] if "--cluster-key" in help_text else []


CLUSTER_KEY = secrets.token_urlsafe(24)


class NsProc:
    """An mc process inside a namespace (``ip netns exec`` execs it: the PID is mc's).

    Its stderr (the log) goes to a temporary file: a pipe nobody reads would
    block a chatty process. Stopped by PID: SIGTERM, then SIGKILL.
    """

    def __init__(self, ns: str, args: list[str]) -> None:
        self.ns = ns
        self.args = args
        self.log = tempfile.TemporaryFile()
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> NsProc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "mc.cli", *self.args],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=REPO,
        )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        self.log.close()


def test_master_workers_and_clients_on_separate_hosts() -> None:
    with namespaces() as net:
        master_url = net.http("master", MASTER_PORT)
        procs = [NsProc(net.ns["master"], [
            "master", "--host", net.ip["master"], "--port", str(MASTER_PORT), "--lease", "2",
            *security_flags("master"),
        ])]
        workers = {}
        for wid in ("w1", "w2"):
            workers[wid] = net.http(wid, WORKER_PORT)
            procs.append(NsProc(net.ns[wid], [
                "worker", "--host", net.ip[wid], "--port", str(WORKER_PORT), "--id", wid,
                "--master", master_url, "--chat-linger", "1", *security_flags("worker"),
            ]))
        try:
            for p in procs:
                p.start()
            client = subprocess.run(
                ["ip", "netns", "exec", net.ns["client"], sys.executable, "-m",
                 "tests.deploy.netns_client", master_url, workers["w1"], workers["w2"]],
                capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=REPO, check=False,
                stdin=subprocess.DEVNULL,
            )
        finally:
            alive = [p.alive() for p in procs]
            for p in reversed(procs):
                p.stop()
        logs = "\n".join(f"--- {p.args[:1]} {p.ns}\n{p.output()[-1500:]}" for p in procs)
        for p in procs:
            p.close()
        assert client.returncode == 0, f"client failed:\n{client.stderr[-4000:]}\n{logs}"
        seen = json.loads(client.stdout.strip().splitlines()[-1])
        print(f"netns: {json.dumps(seen)}")
        assert seen["workers"] == {"w1": f"ws://{net.ip['w1']}:7101", "w2": f"ws://{net.ip['w2']}:7101"}
        assert seen["chat"]["redirect"].startswith(seen["workers"][seen["chat"]["owner"]])
        assert seen["notify"] == {"consumer_on_w2": 1, "api": 1}
        assert seen["offline"]["online"] is False
        assert all(alive), f"a process died during the test:\n{logs}"
    # nothing of ours is left: no namespace of this run
    left = run(["ip", "netns", "list"]).stdout
    assert not any(name in left for name in (net.switch, *net.ns.values())), left


def test_namespaces_are_gone_even_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError), namespaces() as net:
        raise RuntimeError("boom")
    left = run(["ip", "netns", "list"]).stdout
    assert not any(name in left for name in (net.switch, *net.ns.values())), left

