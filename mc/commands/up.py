"""``mc up``: an embedded local cluster (one master, N workers), each its own process.

Started in order (master first, then workers once the master answers), stopped
together on Ctrl-C or SIGTERM: every child gets SIGTERM, then SIGKILL after a
grace period. Only the processes this command started are signalled, by PID.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys

import httpx
import trio

from mc.runner import INTERRUPTED, setup_logging, until_signalled
from mc.worker.config import LOG_FORMATS, LOG_LEVELS

log = logging.getLogger("mc.up")

STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run a local cluster: a master and N workers")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="number of workers (default: CPUs, here %(default)s)")
    p.add_argument("--port", type=int, default=7100,
                   help="master port; workers use the next N ports (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address every process listens on (default: %(default)s)")
    p.add_argument("--heartbeat", type=float, default=25.0,
                   help="worker ping interval, seconds (default: %(default)s)")
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                   help="log level of every process (default: %(default)s)")
    p.add_argument("--log-format", default="text", type=str.lower, choices=LOG_FORMATS,
                   help="log lines of every process: text or one JSON object per line (default: %(default)s)")
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


async def _stop(procs: list[trio.Process]) -> None:
    """Workers first (they close their clients with 4503), then the master."""
    for group in (procs[1:], procs[:1]):
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


async def up(args: argparse.Namespace) -> None:
    base = [sys.executable, "-m", "mc.cli"]
    common = ["--host", args.host, "--log-level", args.log_level, "--log-format", args.log_format]
    master_url = f"http://{args.host}:{args.port}"
    procs: list[trio.Process] = []
    try:
        master = await trio.lowlevel.open_process([*base, "master", "--port", str(args.port), *common])
        procs.append(master)
        await _wait_healthy(master_url, master)
        for i in range(1, args.workers + 1):
            port = args.port + i
            procs.append(await trio.lowlevel.open_process([
                *base, "worker", "--port", str(port), "--id", f"w{i}", "--master", master_url,
                "--heartbeat", str(args.heartbeat), *common,
            ]))
        for i, proc in enumerate(procs[1:], start=1):
            await _wait_healthy(f"http://{args.host}:{args.port + i}", proc)
        print(f"mc is up: master {master_url}  (dashboard {master_url}/)", flush=True)
        for i in range(1, args.workers + 1):
            print(f"  worker w{i}: ws://{args.host}:{args.port + i}", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)
        async with trio.open_nursery() as nursery:
            for proc in procs:
                nursery.start_soon(_watch, proc)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(procs)


async def _watch(proc: trio.Process) -> None:
    code = await proc.wait()
    args = list(proc.args) if isinstance(proc.args, (list, tuple)) else [proc.args]
    log.error("%s exited with %s", " ".join(map(str, args[3:5])), code, extra={"code": code})


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format, "up")
    stopped_by = trio.run(until_signalled, functools.partial(up, args))
    return INTERRUPTED if stopped_by == signal.SIGINT else 0
