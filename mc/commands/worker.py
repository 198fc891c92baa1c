"""``mc worker``: run one data-plane worker (standalone, or joined to masters)."""

from __future__ import annotations

import argparse
import functools

import trio

from mc.runner import setup_logging, until_signalled
from mc.worker.config import WorkerConfig
from mc.worker.server import Worker


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a worker (the WebSocket data plane)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7101, help="port to listen on (0: any free)")
    p.add_argument("--id", default="", help="worker id (default HOSTNAME:PORT)")
    p.add_argument("--advertise", default="", help="ws:// URL clients are sent to")
    p.add_argument("--master", action="append", default=[],
                   help="master URL (repeat for failover); none = standalone")
    p.add_argument("--heartbeat", type=float, default=25.0, help="seconds between pings")
    p.add_argument("--max-connections", type=int, default=19_990)
    p.add_argument("--max-frame", type=int, default=64 * 1024, help="largest message in bytes")
    p.add_argument("--chat-linger", type=float, default=30.0, help="seconds an empty session lives on")
    p.add_argument("--chat-max-members", type=int, default=1000, help="connections per chat session")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=run)


def config_from(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        host=args.host, port=args.port, worker_id=args.id, advertise=args.advertise,
        masters=tuple(args.master), heartbeat=args.heartbeat,
        max_connections=args.max_connections, max_frame=args.max_frame,
        chat_linger=args.chat_linger, chat_max_members=args.chat_max_members,
    )


async def serve(config: WorkerConfig) -> None:
    """Serve one worker, attached to its masters when there are any."""
    if config.masters:
        from mc.worker.master_link import serve_clustered

        await serve_clustered(config)
    else:
        await Worker(config).serve()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    trio.run(until_signalled, functools.partial(serve, config_from(args)))
    return 0
