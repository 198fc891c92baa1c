"""``mc master``: run the control plane (registry, balancer, HTTP API, dashboard)."""

from __future__ import annotations

import argparse
import functools
import gc

from mc.master.app import serve_master
from mc.master.config import MasterConfig
from mc.runner import run_service
from mc.settings import add_arguments, load

#: objects allocated (net) before the youngest generation is collected; CPython's default is 700.
#: A notify allocates a few hundred short-lived objects, so at 700 the collector ran every
#: couple of requests; at this it runs every ~50 (a few MB of young objects at most). A/B under
#: `mc bench notify`: 1.21x the requests per master CPU-second (5 pairs), p99 at half rate 13-42
#: ms instead of 25-67 ms. The older generations keep their thresholds.
GC_YOUNG = 20_000


def tune_gc() -> None:
    """The master's collector: the young generation collected every GC_YOUNG allocations."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("master", help="run the master (control plane and HTTP API)")
    add_arguments(p, MasterConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    tune_gc()
    return run_service(lambda: load(MasterConfig, args),
                       lambda cfg, reloader: functools.partial(serve_master, cfg, reloader), "master")
