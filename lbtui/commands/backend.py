"""``lbtui backend``: run one sample backend (with the bookstore) until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal

from lbtui.cli import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backend",
        help="run one sample backend (echo, health, bookstore)",
        description="Run one sample backend. Every response carries X-Served-By: NAME.",
    )
    parser.add_argument("--name", required=True, help="server name reported in X-Served-By")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 picks a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500 (0..1)")
    parser.add_argument("--db", default=None, help="this backend's SQLite file (default: in memory)")
    parser.add_argument("--mongodb-uri", default=None, help="share one books collection in MongoDB instead")
    parser.add_argument("--seed-books", type=int, default=0, help="insert N sample books at start")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be 0..65535")
    if not 0 <= args.error_rate <= 1:
        raise UserError(f"--error-rate {args.error_rate}: must be between 0 and 1")
    if not 0 <= args.latency_ms <= 60_000:
        raise UserError(f"--latency-ms {args.latency_ms}: must be between 0 and 60000")
    if args.seed_books < 0:
        raise UserError("--seed-books must not be negative")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from cloud.backend import start_backend

    try:
        handle = await start_backend(
            args.name,
            args.host,
            args.port,
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            db=args.db,
            mongodb_uri=args.mongodb_uri,
            seed_books=args.seed_books,
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"backend {handle.name} listening on {handle.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await handle.stop()
    return 0
