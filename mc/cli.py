"""The ``mc`` command line: one subcommand per module in mc.commands.

Every subcommand's ``--help`` shows each option's default; a bad flag is one
line on stderr and exit code 2 (no usage dump); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from mc.commands import bench, chat, config, consume, master, notify, publish, status, token, up, worker
from mc.runner import INTERRUPTED


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        if default in ("", ()):
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """One line for a usage error, naming the command and the problem."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mc", description="mc: a clustered real-time message channel")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (up, master, worker, bench, publish, consume, chat, notify, status, token, config):
        module.add_parser(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the subcommand (and its --help), not just "mc"
            command = args._commands.get(getattr(args, "command", None), parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C before or after a command's own signal handling
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
