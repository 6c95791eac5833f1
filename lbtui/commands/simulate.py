"""``lbtui simulate``: send bounded, shaped traffic to a loopback target and summarise it."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lbtui.cli import UserError
from lbtui.traffic.patterns import PATTERNS
from lbtui.traffic.simulator import MAX_DURATION, MAX_RPS, TargetRefused, run_simulation
from lbtui.traffic.summary import result_tables


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="send shaped traffic to a target and show where it went",
        description="An asyncio load generator with keep-alive, bounded in rate, count and time.",
    )
    parser.add_argument("--target", required=True, help="URL, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--rps", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    parser.add_argument("--requests", type=int, default=None, help="stop after N requests (default rps*duration)")
    parser.add_argument("--pattern", default="uniform", choices=list(PATTERNS), help="traffic shape")
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys for keyed patterns")
    parser.add_argument("--clients", type=int, default=None, help="simulated clients with their own cookies")
    parser.add_argument("--key-header", default="X-Key", help="header carrying the key (default X-Key)")
    parser.add_argument("--concurrency", type=int, default=128, help="cap on requests in flight")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--allow-remote", action="store_true", help="allow a target that is not loopback")
    parser.add_argument("--insecure", action="store_true", help="do not verify the target's TLS certificate")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.rps <= MAX_RPS:
        raise UserError(f"--rps {args.rps:g}: must be above 0 and at most {MAX_RPS:g}")
    if not 0 < args.duration <= MAX_DURATION:
        raise UserError(f"--duration {args.duration:g}: must be above 0 and at most {MAX_DURATION:g}")
    if args.requests is not None and args.requests < 1:
        raise UserError("--requests must be at least 1")
    if args.keys < 0:
        raise UserError("--keys must not be negative")
    clients = args.clients if args.clients is not None else (50 if args.pattern == "sticky-clients" else 1)
    if clients < 1:
        raise UserError("--clients must be at least 1")
    if args.concurrency < 1 or args.timeout <= 0:
        raise UserError("--concurrency must be at least 1 and --timeout above 0")
    console = Console()
    return asyncio.run(_simulate(args, clients, console))


async def _simulate(args: argparse.Namespace, clients: int, console: Console) -> int:
    progress = Progress(
        TextColumn("[bold]simulating[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.json,
    )
    task = progress.add_task("traffic", total=None)
    with progress:
        try:
            result = await run_simulation(
                args.target,
                rps=args.rps,
                duration=args.duration,
                max_requests=args.requests,
                pattern=args.pattern,
                keys=args.keys,
                clients=clients,
                key_header=args.key_header,
                concurrency=args.concurrency,
                timeout=args.timeout,
                allow_remote=args.allow_remote,
                verify_tls=not args.insecure,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except TargetRefused as exc:
            raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(result_tables(result))
    return 0 if result.completed else 1
