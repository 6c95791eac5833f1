"""The ``lbtui`` command: one subcommand per module in ``lbtui.commands``.

Each command module exposes ``add_parser(subparsers)`` (which sets ``func``) and its
``func(args) -> int``. Errors an operator can fix (a bad config, a port in use) are
printed as one line and exit 2; they never reach the terminal as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("run", "demo", "attach", "backend", "simulate", "report", "scenario")


class UserError(Exception):
    """A problem the operator can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lbtui", description="A load balancer you run and steer from the terminal.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"lbtui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lbtui.commands.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"lbtui: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lbtui: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
