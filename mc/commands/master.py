"""``mc master``: run the control plane (registry, balancer, HTTP API, dashboard)."""

from __future__ import annotations

import argparse
import functools

from mc.master.app import serve_master
from mc.master.config import MasterConfig
from mc.runner import run_service
from mc.settings import add_arguments, load


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("master", help="run the master (control plane and HTTP API)")
    add_arguments(p, MasterConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_service(lambda: load(MasterConfig, args),
                       lambda cfg, reloader: functools.partial(serve_master, cfg, reloader), "master")
