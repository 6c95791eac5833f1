"""``lbtui run``: the balancer from a config file, headless or with the dashboard.

Flags override the file; with no file, the defaults (one HTTP listener on
127.0.0.1:8080, the admin API on 127.0.0.1:8404, no servers until one is added). SIGHUP
reloads the file, SIGINT and SIGTERM stop gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import engine
from engine.admin import AdminSecurityError
from engine.config import TOKEN_ENV, Config, ConfigError
from engine.gateway import Gateway
from lbtui.cli import UserError

T = TypeVar("T")
UiRunner = Callable[[Gateway], Awaitable[None]]
Setup = Callable[[Gateway], Awaitable[None] | None]

#: Module and function the dashboard provides: ``async def run_embedded(gateway) -> None``.
UI_ENTRY = ("lbtui.app", "run_embedded")
UI_CLOSE_GRACE = 5.0  # seconds the dashboard gets to close itself when a stop is requested


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the balancer from a config file",
        description="Run the balancer. Flags override the config file; without a file, defaults apply.",
        epilog=f"The admin token may also come from ${TOKEN_ENV}, which keeps it out of files and ps.",
    )
    add_common_arguments(parser)
    parser.add_argument("--config", "-c", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--mongodb-uri", metavar="URI", help="share state through MongoDB (overrides [store])"
    )
    parser.set_defaults(func=main)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, metavar="P", help="port of the first listener")
    parser.add_argument("--admin-port", type=int, metavar="A", help="port of the admin API")
    parser.add_argument("--headless", action="store_true", help="no dashboard: log to stderr instead")


def load_config(args: argparse.Namespace) -> Config:
    """The file (if any) with the command line's overrides; errors become one line."""
    try:
        config = Config.load(args.config)
        return config.with_overrides(
            port=args.port,
            admin_port=args.admin_port,
            mongodb_uri=getattr(args, "mongodb_uri", None),
        )
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def main(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.headless:
        configure_logging()
    return run_async(serve(config, headless=args.headless, setup=start_workers))


async def start_workers(gateway: Gateway) -> None:
    """The store, its sync, analytics and (when configured) the AWS workers."""
    from workers.runtime import attach

    await attach(gateway)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lbtui: %(message)s"))
    root = logging.getLogger("lbtui")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the proxy's speed depends on it)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def find_ui() -> UiRunner | None:
    """The dashboard's entry point, when the dashboard is installed."""
    module_name, attribute = UI_ENTRY
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    return getattr(module, attribute, None)


async def serve(
    config: Config,
    *,
    headless: bool,
    ui: UiRunner | None = None,
    setup: Setup | None = None,
    out: Any = None,
) -> int:
    """Start a Gateway for ``config``, run until stopped, stop gracefully.

    ``setup`` runs once everything listens (workers, the store, demo traffic register
    there, with ``gateway.own``/``gateway.on_stop``/``gateway.components``). Without
    ``headless``, ``ui`` (default: the dashboard, when installed) runs in this loop and
    the balancer stops when it returns.
    """
    out = out or sys.stdout
    gateway = Gateway(config)
    try:
        await gateway.start()
    except AdminSecurityError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen: {_os_reason(exc)}") from None
    undo_signals = gateway.install_signal_handlers()
    try:
        if setup is not None:
            result = setup(gateway)
            if result is not None:
                await result
        announce(gateway, out)
        if not headless:
            ui = ui or find_ui()
            if ui is None:
                print("lbtui: the dashboard is not installed; running headless", file=out, flush=True)
        if not headless and ui is not None:
            ui_task = asyncio.ensure_future(ui(gateway))
            stop_task = asyncio.ensure_future(gateway.wait_stop_requested())
            try:
                await asyncio.wait({ui_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                if not ui_task.done():  # a signal: let the dashboard close itself and restore the terminal
                    await asyncio.wait({ui_task}, timeout=UI_CLOSE_GRACE)
            finally:
                for task in (ui_task, stop_task):
                    task.cancel()
                await asyncio.gather(ui_task, stop_task, return_exceptions=True)
        else:
            await gateway.wait_stop_requested()
        print("lbtui: stopping (finishing in-flight requests)", file=out, flush=True)
    finally:
        undo_signals()
        await gateway.stop()
    print("lbtui: stopped", file=out, flush=True)
    return 0


def announce(gateway: Gateway, out: Any) -> None:
    """Tell the operator where everything listens."""
    for listener in gateway.listeners:
        print(
            f"lbtui: listening on {listener.url} ({listener.config.name}, {listener.config.mode})", file=out
        )
    if gateway.admin is not None:
        auth = "token required" if gateway.config.admin.token else "loopback, no token"
        print(f"lbtui: admin API on {gateway.admin.url} ({auth})", file=out)
    lb = gateway.lb
    source = gateway.config.source or "defaults"
    print(f"lbtui: {len(lb.servers)} servers, algorithm {lb.algorithm} (hash key {lb.hash_key})", file=out)
    print(f"lbtui: config {source}", file=out)
    if engine.COMPILED:
        print("lbtui: data plane compiled (mypyc)", file=out)
    else:
        print("lbtui: data plane running from source (not compiled: more CPU per request)", file=out)
    print("lbtui: SIGHUP reloads the config; Ctrl-C stops gracefully", file=out, flush=True)


def _os_reason(exc: OSError) -> str:
    text = str(exc)
    if text.startswith("[Errno"):
        text = text.partition("] ")[2] or text
    return text
