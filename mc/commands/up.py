"""``mc up``: an embedded local cluster (one master, N workers), each its own process.

Started in order (master first, then workers once the master answers), stopped
together on Ctrl-C or SIGTERM: every child gets SIGTERM, then SIGKILL after a
grace period. Only the processes this command started are signalled, by PID.

``--masters 2`` runs several masters sharing a Redis store (``--store
redis://...``); without ``--store`` it starts a local ``redis-server`` (no
persistence) if one is installed, says so, and stops it last. Each worker gets
every master URL, rotated so the workers spread over the masters.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys

import httpx
import trio

from mc.runner import setup_logging, until_signalled
from mc.worker.config import LOG_LEVELS

log = logging.getLogger("mc.up")

STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run a local cluster: a master and N workers")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="number of workers (default: CPUs)")
    p.add_argument("--port", type=int, default=7100,
                   help="first master's port; further masters, then workers, use the next ports")
    p.add_argument("--masters", type=int, default=1,
                   help="number of masters (default 1); more than one share a Redis store")
    p.add_argument("--store", default=None, metavar="URL",
                   help="redis://HOST:PORT/DB for the masters (default: memory for one master; "
                        "for several, a local redis-server started for the cluster)")
    p.add_argument("--redis-port", type=int, default=6379 + 100,
                   help="port of the redis-server mc up starts (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address every process listens on")
    p.add_argument("--heartbeat", type=float, default=25.0, help="worker ping interval, seconds")
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                   help="log level of every process (default: %(default)s)")
    p.set_defaults(run=run)


async def _wait_healthy(url: str, proc: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=0.5) as http:
        with trio.fail_after(STARTUP_TIMEOUT):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)


async def _stop(groups: list[list[trio.Process]]) -> None:
    """Workers first (they close their clients with 4503), then the masters, then Redis."""
    for group in groups:
        for proc in group:
            if proc.returncode is None:
                proc.terminate()
        with trio.move_on_after(STOP_GRACE):
            for proc in group:
                await proc.wait()
        for proc in group:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


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


async def up(args: argparse.Namespace) -> None:
    base = [sys.executable, "-m", "mc.cli"]
    common = ["--host", args.host, "--log-level", args.log_level]
    n_masters = max(1, args.masters)
    master_urls = [f"http://{args.host}:{args.port + i}" for i in range(n_masters)]
    first_worker = args.port + n_masters
    infra: list[trio.Process] = []
    masters: list[trio.Process] = []
    workers: list[trio.Process] = []
    try:
        store = args.store
        if store is None and n_masters > 1:
            redis, store = await _start_redis(args)
            infra.append(redis)
        store_args = ["--store", store] if store else []
        for i in range(n_masters):
            masters.append(await trio.lowlevel.open_process([
                *base, "master", "--port", str(args.port + i), *store_args,
                *(["--master-id", f"m{i + 1}"] if n_masters > 1 else []), *common]))
        for url, proc in zip(master_urls, masters, strict=True):
            await _wait_healthy(url, proc)
        for i in range(1, args.workers + 1):
            port = first_worker + i - 1
            k = (i - 1) % n_masters  # rotated: the workers spread over the masters
            mine = ",".join(master_urls[k:] + master_urls[:k])
            workers.append(await trio.lowlevel.open_process([
                *base, "worker", "--port", str(port), "--id", f"w{i}", "--master", mine,
                "--heartbeat", str(args.heartbeat), *common,
            ]))
        for i, proc in enumerate(workers):
            await _wait_healthy(f"http://{args.host}:{first_worker + i}", proc)
        if n_masters == 1:
            print(f"mc is up: master {master_urls[0]}  (dashboard {master_urls[0]}/)", flush=True)
        else:
            print(f"mc is up: {n_masters} masters sharing {store}: {','.join(master_urls)}", flush=True)
        for i in range(1, args.workers + 1):
            print(f"  worker w{i}: ws://{args.host}:{first_worker + i - 1}", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)
        async with trio.open_nursery() as nursery:
            for proc in [*infra, *masters, *workers]:
                nursery.start_soon(_watch, proc)
    finally:
        with trio.CancelScope(shield=True):
            await _stop([workers, masters, infra])


async def _watch(proc: trio.Process) -> None:
    code = await proc.wait()
    args = list(proc.args) if isinstance(proc.args, (list, tuple)) else [proc.args]
    log.error("%s exited with %s", " ".join(map(str, args[3:5])), code)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    trio.run(until_signalled, functools.partial(up, args))
    return 0
