"""``mc config check``: validate settings and print the effective ones, secrets masked."""

from __future__ import annotations

import argparse
import sys

import orjson

from mc.master.config import MasterConfig
from mc.settings import SettingsError, add_arguments, load, shown
from mc.worker.config import WorkerConfig

ROLES: dict[str, type[WorkerConfig] | type[MasterConfig]] = {"worker": WorkerConfig, "master": MasterConfig}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a settings file and show the effective settings")
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate (file, MC_* env); print the settings, secrets masked")
    check.add_argument("--role", choices=sorted(ROLES), default="worker",
                       help="whose settings to check (default: %(default)s)")
    check.add_argument("--config", metavar="FILE", default=None,
                       help="TOML settings file (default: $MC_CONFIG, else none)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cls = ROLES[args.role]
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    flags = parser.parse_args(["--config", args.config] if args.config else [])
    try:
        config: WorkerConfig | MasterConfig = load(cls, flags)
    except SettingsError as exc:
        print(f"mc config: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(shown(config), option=orjson.OPT_INDENT_2).decode())
    problem = config.exposure_problem(config.host)
    if problem:
        print(f"mc config: warning: {problem}", file=sys.stderr)
    return 0
