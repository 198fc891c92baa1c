"""``mc up``: an embedded local cluster (one master, N workers), each its own process.

Started in order (master first, then workers once the master answers), stopped
together on Ctrl-C or SIGTERM: workers first (they close their clients with
4503), then the master; every child gets SIGTERM, then SIGKILL after a grace
period. Only the processes this command started are signalled, by PID.

Supervision: a worker that exits is started again on the same port with the
same id (its clients reconnect to it or elsewhere), after 1 s, doubling up to
30 s while it keeps dying, back to 1 s once it stayed up for 30 s. Every
exit is logged with the worker's id, port and exit status. The master dying
is fatal: ``mc up`` stops the workers and exits with status 1, because a
master that crashed is a bug to look at, not something to hide behind
restarts (and workers without a master cannot route chat or presence).

``--masters 2`` runs several masters sharing a Redis store (``--store
redis://...``); without ``--store`` it starts a local ``redis-server`` (no
persistence) if one is installed, says so, and stops it (by PID) after the
masters. Each worker gets every master URL, rotated so the workers spread
over the masters.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import signal
import ssl
import sys

import attrs
import httpx
import trio

from mc.runner import INTERRUPTED, setup_logging, until_signalled
from mc.security import SecuritySettings
from mc.settings import LOG_FORMATS, LOG_LEVELS, ProcessSettings, SettingsError, env_name
from mc.worker.config import WorkerConfig

log = logging.getLogger("mc.up")

STARTUP_TIMEOUT = 20.0
#: added to the workers' startup bound per worker: they start together and their
#: imports share the CPUs (51 workers on 2 loaded cores took over 20 s)
STARTUP_PER_WORKER = 1.0
STOP_GRACE = 5.0
#: restart delays: the first, the cap, and how long a worker must stay up for the next to be the first again
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
RESTART_STABLE = 30.0
#: a child that exits waits this long before mc up reacts: Ctrl-C in a terminal
#: signals every process of the group at once, and mc up's own shutdown (which
#: cancels the reaction) must win over "a worker died" or "the master died"
SHUTDOWN_RACE = 0.25


class MasterDied(Exception):
    """The master exited: the cluster cannot go on."""


class NotHealthy(Exception):
    """A child exited, or did not answer its ``/healthz``, while starting."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run a local cluster: a master and N workers (restarted if they die)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="number of workers (default: CPUs, here %(default)s)")
    p.add_argument("--port", type=int, default=7100,
                   help="first master's port; further masters, then workers, use the next ports "
                        "(default: %(default)s)")
    p.add_argument("--masters", type=int, default=1,
                   help="number of masters (default 1); more than one share a Redis store")
    p.add_argument("--store", default=None, metavar="URL",
                   help="redis://HOST:PORT/DB for the masters (default: memory for one master; "
                        "for several, a local redis-server started for the cluster)")
    p.add_argument("--redis-port", type=int, default=6379 + 100,
                   help="port of the redis-server mc up starts (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address every process listens on (default: %(default)s)")
    p.add_argument("--heartbeat", type=float, default=attrs.fields(WorkerConfig).heartbeat.default,
                   help="worker ping interval, seconds (default: %(default)s)")
    p.add_argument("--lease", type=float, default=None,
                   help="seconds a silent worker stays alive, passed to the masters (default: theirs, 5); "
                        "longer on a machine so loaded that heartbeats are read late")
    p.add_argument("--log-level", default=ProcessSettings().log_level, type=str.lower, choices=LOG_LEVELS,
                   help="log level of every process (default: %(default)s)")
    p.add_argument("--log-format", default=ProcessSettings().log_format, type=str.lower, choices=LOG_FORMATS,
                   help="log lines of every process: text or one JSON object per line (default: %(default)s)")
    for name in ("tls_cert", "tls_key"):
        field = attrs.fields_dict(SecuritySettings)[name]
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="FILE",
                       help=f"{field.metadata['help']}, for the master and every worker "
                            f"(env {env_name(field)})")
    p.set_defaults(run=run)


def tls_flags(args: argparse.Namespace) -> tuple[list[str], ssl.SSLContext | None]:
    """The TLS flags for every child (one word each: ``--tls-cert=PATH``), and the context
    ``mc up`` checks their health with: it trusts exactly the served certificate.

    From ``--tls-cert``/``--tls-key``, else ``MC_TLS_CERT``/``MC_TLS_KEY``; a bad pair is a
    SettingsError naming it (checked before anything starts).
    """
    fields = attrs.fields_dict(SecuritySettings)
    cert, key = (os.path.abspath(v) if v else "" for v in (
        getattr(args, n) if getattr(args, n) is not None else os.environ.get(env_name(fields[n]), "")
        for n in ("tls_cert", "tls_key")))
    SecuritySettings(tls_cert=cert, tls_key=key)
    if not cert:
        return [], None
    pinned = ssl.create_default_context(cafile=cert)
    pinned.check_hostname = False  # the certificate itself is the trust anchor (a pin), whatever it names
    pinned.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return [f"--tls-cert={cert}", f"--tls-key={key}"], pinned


def exit_status(code: int) -> str:
    """``-9 (SIGKILL)`` for a signal, else the exit code."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"{code} (signal {-code})"
    return str(code)


def next_delay(delay: float, lived: float) -> float:
    """The restart delay after the one of ``delay``, for a worker that stayed up ``lived`` s.

    >>> [next_delay(d, 0.5) for d in (1.0, 16.0, 30.0)], next_delay(30.0, 31.0)
    ([2.0, 30.0, 30.0], 1.0)
    """
    if lived >= RESTART_STABLE:
        return RESTART_FIRST
    return min(RESTART_MAX, delay * 2)


@attrs.define
class Child:
    """One process of the cluster, as ``mc up`` starts (and restarts) it."""

    name: str
    args: list[str]
    health: str  # its /healthz URL
    verify: ssl.SSLContext | bool = True  # how its /healthz certificate is checked (https)
    proc: trio.Process | None = None
    restarts: int = 0

    async def start(self) -> trio.Process:
        self.proc = await trio.lowlevel.open_process(self.args)
        return self.proc

    async def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until ``/healthz`` answers 200; NotHealthy if the process exits or takes ``timeout`` s."""
        proc = self.proc
        assert proc is not None
        async with httpx.AsyncClient(timeout=0.5, verify=self.verify) as http:
            with trio.move_on_after(timeout):
                while True:
                    if proc.returncode is not None:
                        raise NotHealthy(f"{self.name} exited with {exit_status(proc.returncode)}")
                    try:
                        if (await http.get(self.health)).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
        raise NotHealthy(f"{self.name} did not answer {self.health} within {timeout:g} s")


async def _stop(groups: list[list[trio.Process | None]]) -> None:
    """Workers first (they close their clients with 4503), then the masters, then Redis."""
    for group in groups:
        procs = [p for p in group if p is not None]
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        with trio.move_on_after(STOP_GRACE):
            for proc in procs:
                await proc.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(STOP_GRACE):
                    await proc.wait()


async def _supervise(worker: Child, port: int) -> None:
    """Restart ``worker`` whenever it exits, with backoff; runs until cancelled."""
    delay: float | None = None
    while True:
        proc = worker.proc
        assert proc is not None
        up_since = trio.current_time()
        code = await proc.wait()
        lived = trio.current_time() - up_since
        delay = RESTART_FIRST if delay is None else next_delay(delay, lived)
        await trio.sleep(SHUTDOWN_RACE)
        log.error("%s (port %d) exited with %s; restarting in %.1f s",
                  worker.name, port, exit_status(code), delay)
        await trio.sleep(max(0.0, delay - SHUTDOWN_RACE))
        worker.restarts += 1
        await worker.start()
        try:
            await worker.wait_healthy()
        except NotHealthy as exc:
            log.error("%s did not come back: %s", worker.name, exc)
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.kill()
            continue
        log.info("%s is back on port %d (restart %d)", worker.name, port, worker.restarts)


async def _watch_master(master: Child) -> None:
    proc = master.proc
    assert proc is not None
    code = await proc.wait()
    await trio.sleep(SHUTDOWN_RACE)
    log.error("the master exited with %s; stopping the cluster", exit_status(code))
    raise MasterDied(exit_status(code))


async def _start_redis(args: argparse.Namespace) -> tuple[trio.Process, str]:
    """A local redis-server for the masters (persistence off); its process and URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("mc up: --masters > 1 needs --store redis://HOST:PORT/DB, or redis-server "
                         "installed (apt-get install redis-server) for mc up to start one")
    proc = await trio.lowlevel.open_process([
        server, "--port", str(args.redis_port), "--bind", args.host, "--save", "", "--appendonly", "no",
        "--loglevel", "warning"])
    with trio.fail_after(STARTUP_TIMEOUT):
        while True:
            if proc.returncode is not None:
                raise SystemExit(f"mc up: redis-server exited with {proc.returncode}")
            try:
                stream = await trio.open_tcp_stream(args.host, args.redis_port)
                await stream.aclose()
                break
            except OSError:
                await trio.sleep(0.05)
    url = f"redis://{args.host}:{args.redis_port}/0"
    print(f"mc up: started redis-server (pid {proc.pid}, persistence off) at {url} for the masters",
          flush=True)
    return proc, url


async def up(args: argparse.Namespace, tls: list[str], pinned: ssl.SSLContext | None) -> None:
    base = [sys.executable, "-m", "mc.cli"]
    web, ws = ("https", "wss") if tls else ("http", "ws")
    verify: ssl.SSLContext | bool = pinned or True
    common = ["--host", args.host, "--log-level", args.log_level, "--log-format", args.log_format, *tls]
    n_masters = max(1, args.masters)
    master_urls = [f"{web}://{args.host}:{args.port + i}" for i in range(n_masters)]
    first_worker = args.port + n_masters
    infra: list[trio.Process | None] = []
    masters: list[Child] = []
    workers = []
    for i in range(1, args.workers + 1):
        k = (i - 1) % n_masters  # rotated: the workers spread over the masters
        mine = ",".join(master_urls[k:] + master_urls[:k])
        port = first_worker + i - 1
        workers.append(Child(f"worker w{i}", [
            *base, "worker", "--port", str(port), "--id", f"w{i}", "--master", mine,
            "--heartbeat", str(args.heartbeat), *common,
        ], f"{web}://{args.host}:{port}/healthz", verify))
    try:
        store = args.store
        if store is None and n_masters > 1:
            redis, store = await _start_redis(args)
            infra.append(redis)
        store_args = ["--store", store] if store else []
        lease_args = [f"--lease={args.lease}"] if args.lease is not None else []
        for i, url in enumerate(master_urls):
            name = "master" if n_masters == 1 else f"master m{i + 1}"
            masters.append(Child(name, [
                *base, "master", "--port", str(args.port + i), *store_args, *lease_args,
                *(["--master-id", f"m{i + 1}"] if n_masters > 1 else []), *common], f"{url}/healthz", verify))
        for master in masters:
            await master.start()
        for master in masters:
            await master.wait_healthy()
        for worker in workers:
            await worker.start()
        # one deadline for all: they started together
        deadline = trio.current_time() + STARTUP_TIMEOUT + STARTUP_PER_WORKER * len(workers)
        for worker in workers:
            await worker.wait_healthy(max(STARTUP_TIMEOUT / 4, deadline - trio.current_time()))
        if n_masters == 1:
            print(f"mc is up: master {master_urls[0]}  (dashboard {master_urls[0]}/)", flush=True)
        else:
            print(f"mc is up: {n_masters} masters sharing {store}: {','.join(master_urls)}", flush=True)
        for i in range(1, args.workers + 1):
            print(f"  worker w{i}: {ws}://{args.host}:{first_worker + i - 1}", flush=True)
        print("Workers that die are restarted; Ctrl-C stops the cluster.", flush=True)
        async with trio.open_nursery() as nursery:
            for master in masters:
                nursery.start_soon(_watch_master, master)
            for i, worker in enumerate(workers):
                nursery.start_soon(_supervise, worker, first_worker + i)
    finally:
        with trio.CancelScope(shield=True):
            await _stop([[w.proc for w in workers], [m.proc for m in masters], infra])


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format, "up")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health poll
    try:
        tls, pinned = tls_flags(args)
    except SettingsError as exc:
        print(f"mc up: {exc}", file=sys.stderr)
        return 2
    try:
        stopped_by = trio.run(until_signalled, functools.partial(up, args, tls, pinned))
    except BaseExceptionGroup as group:
        died = group.subgroup(MasterDied)
        if died is not None:
            print(f"mc up: the master exited with {_first(died)}; the cluster was stopped", file=sys.stderr)
            return 1
        failed = group.subgroup(NotHealthy)
        if failed is None:
            raise
        print(f"mc up: {_first(failed)} while starting; the cluster was stopped", file=sys.stderr)
        return 1
    except MasterDied as exc:
        print(f"mc up: the master exited with {exc}; the cluster was stopped", file=sys.stderr)
        return 1
    except NotHealthy as exc:
        print(f"mc up: {exc} while starting; the cluster was stopped", file=sys.stderr)
        return 1
    return INTERRUPTED if stopped_by == signal.SIGINT else 0


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
