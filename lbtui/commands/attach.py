"""``lbtui attach http://HOST:ADMINPORT [--token T]``: steer a headless lbtui from this terminal.

Closing the screen leaves the balancer running; several operators may attach at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from urllib.parse import urlsplit


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("attach", help="open the dashboard on a running lbtui's admin API")
    parser.add_argument("url", help="admin API address, e.g. http://127.0.0.1:9900")
    parser.add_argument("--token", default=os.environ.get("LBTUI_ADMIN_TOKEN"),
                        help="admin bearer token (default: $LBTUI_ADMIN_TOKEN)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lbtui.cli import UserError

    parts = urlsplit(args.url if "://" in args.url else f"http://{args.url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"attach: {args.url!r} is not an http(s) URL such as http://127.0.0.1:9900")
    from lbtui.app import run_app
    from lbtui.control.remote import RemoteControl

    control = RemoteControl(f"{parts.scheme}://{parts.netloc}", args.token)
    asyncio.run(run_app(control, title="lbtui"))
    return 0
