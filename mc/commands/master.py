"""``mc master``: run the control plane (registry, balancer, HTTP API, dashboard)."""

from __future__ import annotations

import argparse
import functools

import trio

from mc.master.app import serve_master
from mc.master.config import MasterConfig
from mc.runner import setup_logging, until_signalled


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("master", help="run the master (control plane and HTTP API)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7100, help="port to listen on")
    p.add_argument("--lease", type=float, default=5.0, help="seconds before a silent worker is dead")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    config = MasterConfig(host=args.host, port=args.port, lease=args.lease)
    trio.run(until_signalled, functools.partial(serve_master, config))
    return 0
