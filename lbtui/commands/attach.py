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

    try:
        parts = urlsplit(args.url if "://" in args.url else f"http://{args.url}")
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # "http://[::1" or a port past 65535
        valid = False
    if not valid:
        raise UserError(f"attach: {args.url!r} is not an http(s) URL such as http://127.0.0.1:9900")
    base = f"{parts.scheme}://{parts.netloc}"
    problem = asyncio.run(preflight(base, args.token))
    if problem is not None:
        raise UserError(f"attach: {base}: {problem}")
    from lbtui.app import run_app
    from lbtui.control.remote import RemoteControl

    control = RemoteControl(base, args.token)
    asyncio.run(run_app(control, title="lbtui"))
    return 0


async def preflight(base: str, token: str | None, timeout: float = 5.0) -> str | None:
    """Why the admin API at ``base`` cannot be attached to, or None.

    Checked before the screen opens, so a typo in the address or a wrong token is one
    line on the terminal, not a dashboard of nothing that says "disconnected".
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(f"{base}/api/status", headers=headers) as response:
                if response.status == 401:
                    return "the admin API wants a token (--token or $LBTUI_ADMIN_TOKEN), or refused this one"
                if response.status != 200:
                    return f"answered {response.status} to /api/status; is this an lbtui admin API?"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return f"cannot connect ({exc.__class__.__name__})"
    return None
