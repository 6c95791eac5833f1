"""``lbtui scenario NAME``: run a scripted story on loopback and print what happened."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.console import Console
from rich.markup import escape

from lbtui.traffic.scenarios import SCENARIOS

DESCRIPTIONS = {
    "remap": "10,000 keys; add a server, count what moved against 1/N; remove it, see them come back",
    "failover": "kill a backend under load; count client errors and the time to detect",
    "hotspot": "zipf-skewed keys with bounded loads off and on; peak-to-mean",
    "stress": "the bookstore under mixed CRUD with TLS, sticky sessions, rate limits, health checks",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scenario",
        help="run a scripted story end to end on loopback",
        description="\n".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=list(SCENARIOS), help="which story")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)

    def say(line: str) -> None:
        style = "red" if "[FAILED]" in line else ("green" if "[ok]" in line else None)
        console.print(escape(line), style=style, soft_wrap=True)

    report = asyncio.run(SCENARIOS[args.name](say=say))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.passed else 1
