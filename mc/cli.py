"""The ``mc`` command line: one subcommand per module in mc.commands."""

from __future__ import annotations

import argparse
import sys

from mc.commands import bench, chat, config, consume, master, notify, publish, status, token, up, worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mc", description="mc: a clustered real-time message channel")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (up, master, worker, bench, publish, consume, chat, notify, status, token, config):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
