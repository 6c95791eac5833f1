"""``lbtui report``: render the analytics rollups kept in the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from engine.config import mongodb_uri_problem
from lbtui.cli import UserError
from lbtui.reporting import Format, parse_since, render, summarize

DEFAULT_STORE = "lbtui-state.db"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="traffic report from the analytics rollups",
        description="Requests, status codes, per-server latency, peaks and lulls, hourly and daily.",
    )
    parser.add_argument("--since", default="24h", help="1h, 30m, 7d ... or an ISO time (default 24h)")
    parser.add_argument("--format", default="text", choices=[f.value for f in Format], help="output format")
    parser.add_argument("--output", "-o", default=None, help="write to FILE instead of standard output")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--store", default=None, help=f"embedded store file (default {DEFAULT_STORE})")
    source.add_argument("--mongodb-uri", default=None, help="read the rollups from MongoDB")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_since(args.since, now)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if since > now:
        raise UserError(f"--since {args.since!r} is in the future")
    if args.mongodb_uri is not None and (problem := mongodb_uri_problem(args.mongodb_uri)):
        raise UserError(f"--mongodb-uri: {problem}")
    if args.mongodb_uri is None:
        path = args.store or DEFAULT_STORE
        if not os.path.exists(path):
            raise UserError(f"--store {path}: no such file (run lbtui with analytics on first, or name the file)")
    rollups = asyncio.run(_load(args, since))
    text = render(summarize(rollups, since, now), args.format)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise UserError(f"--output {args.output}: {exc.strerror or exc}") from None
        print(f"report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _load(args: argparse.Namespace, since: float) -> list[dict]:
    from cloud.store import StoreError, open_store

    store = open_store(args.mongodb_uri, path=args.store or DEFAULT_STORE)
    try:
        await asyncio.wait_for(store.connect(), timeout=15)
        return await asyncio.wait_for(store.list_rollups(int(since // 60)), timeout=30)
    except (StoreError, TimeoutError) as exc:
        raise UserError(f"cannot read the analytics from {store.describe()}: {exc or 'timed out'}") from None
    finally:
        await store.close()
