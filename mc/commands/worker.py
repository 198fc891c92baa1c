"""``mc worker``: run one data-plane worker (standalone, or joined to masters)."""

from __future__ import annotations

import argparse
import functools

import trio

from mc.logs import set_process
from mc.runner import Reloader, run_service
from mc.settings import add_arguments, load
from mc.worker.config import WorkerConfig
from mc.worker.server import Worker


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a worker (the WebSocket data plane)")
    add_arguments(p, WorkerConfig)
    p.set_defaults(run=run)


async def serve(
    config: WorkerConfig, reloader: Reloader | None = None, *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one worker, attached to its masters when there are any."""
    worker = Worker(config)
    set_process(worker.core.id)
    if reloader is not None:
        reloader.apply = worker.reload
    await worker.serve(task_status=task_status)


def run(args: argparse.Namespace) -> int:
    return run_service(lambda: load(WorkerConfig, args), lambda cfg, r: functools.partial(serve, cfg, r),
                       "worker")
