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
#: A notify holds a few hundred objects until it is answered, and 200 clients keep 200 in flight,
#: so at 700 the collector ran every few requests over tens of thousands of live objects; at this,
#: every ~50 (a few MB of young objects at most). A/B under `mc bench notify` (3 pairs, with the
#: per-request reference cycle gone and the lazy connection timers): 5,110 vs 4,020 requests per
#: master CPU-second, means. The older generations keep their thresholds.
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
