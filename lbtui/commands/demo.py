"""``lbtui demo``: sample backends, the balancer and the admin API, all on loopback.

A newcomer runs one command and gets something to watch and poke: N sample backends
(``cloud.backend``), a consistent-hash balancer in front of them keyed on the
``X-User`` header, steady zipf traffic (with the dashboard), and optionally TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from typing import Any


from engine.config import (
    AdminConfig,
    BalancerConfig,
    Config,
    HealthConfig,
    ListenerConfig,
    ServerConfig,
    StoreConfig,
)
from engine.gateway import Gateway
from lbtui.cli import UserError
from lbtui.commands.run import add_common_arguments, configure_logging, run_async, serve, start_workers

MAX_BACKENDS = 64
MAX_TRAFFIC_RPS = 2000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run sample backends behind the balancer, on loopback",
        description="Start sample backends and the balancer on 127.0.0.1, then watch and steer it.",
    )
    add_common_arguments(parser)
    parser.set_defaults(port=8080, admin_port=8404)
    parser.add_argument(
        "--backends", type=int, default=3, metavar="N", help="sample backends to start (default 3)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="terminate TLS with a fresh self-signed certificate"
    )
    parser.add_argument(
        "--traffic", type=float, default=None, metavar="RPS",
        help="steady zipf traffic to the balancer (default 50 with the dashboard, 0 headless)",
    )
    parser.add_argument(
        "--algorithm", default="consistent_hash", help="routing policy (default consistent_hash)"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not 1 <= args.backends <= MAX_BACKENDS:
        raise UserError(f"--backends must be from 1 to {MAX_BACKENDS}")
    if args.traffic is None:  # the dashboard should move on its own; headless stays quiet
        args.traffic = 0.0 if args.headless else 50.0
    if not 0 <= args.traffic <= MAX_TRAFFIC_RPS:
        raise UserError(f"--traffic must be from 0 to {MAX_TRAFFIC_RPS} requests per second")
    if args.headless:
        configure_logging()
    return run_async(demo(args))


def demo_config(
    ports: list[tuple[str, int]],
    *,
    port: int,
    admin_port: int,
    algorithm: str = "consistent_hash",
    tls: tuple[str, str] | None = None,
    store_path: str = "lbtui-demo-state.db",
) -> Config:
    """The demo's configuration: everything on loopback, HTTP health checks on /health."""
    try:
        return Config(
            listeners=(
                ListenerConfig(
                    "web", "127.0.0.1", port, "http", tls[0] if tls else None, tls[1] if tls else None
                ),
            ),
            balancer=BalancerConfig(algorithm=algorithm, hash_key="header:x-user", sticky=None),
            servers=tuple(ServerConfig(name, "127.0.0.1", p) for name, p in ports),
            health=HealthConfig(interval=2.0, timeout=1.0, rise=2, fall=2, http_path="/health"),
            admin=AdminConfig(host="127.0.0.1", port=admin_port),
            store=StoreConfig(path=store_path),
        ).with_overrides()
    except ValueError as exc:
        raise UserError(str(exc)) from None


async def demo(args: argparse.Namespace) -> int:
    try:
        from cloud.backend import start_backend
    except ImportError:
        raise UserError("the sample backend (cloud.backend) is not installed") from None
    from engine.balancer import canonical_algorithm

    try:
        algorithm = canonical_algorithm(args.algorithm)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    handles: list[Any] = []
    with contextlib.ExitStack() as stack:
        tls: tuple[str, str] | None = None
        # The demo's backends get fresh ports each run, so its state is fresh too.
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="lbtui-demo-"))
        if args.tls:
            from engine.proxy.tls import self_signed_pair

            tls = await asyncio.to_thread(self_signed_pair, directory)
        try:
            for index in range(args.backends):
                handles.append(await start_backend(f"backend-{index + 1}"))
            config = demo_config(
                [(h.name, h.port) for h in handles],
                port=args.port,
                admin_port=args.admin_port,
                algorithm=algorithm,
                tls=tls,
                store_path=f"{directory}/state.db",
            )

            async def setup(gateway: Gateway) -> None:
                await start_workers(gateway)
                listener = gateway.listeners[0]
                print(
                    f"lbtui demo: {len(handles)} backends on "
                    + ", ".join(f"{h.name}={h.port}" for h in handles)
                )
                curl = "curl -k" if tls else "curl"
                print(f"lbtui demo: try  {curl} -H 'X-User: alice' {listener.url}/echo")
                if args.traffic:
                    gateway.own(traffic(listener.url, args.traffic, tls is not None), "demo-traffic")
                    print(f"lbtui demo: sending {args.traffic:g} requests/s of demo traffic")

            return await serve(config, headless=args.headless, setup=setup)
        finally:
            await asyncio.gather(*(h.stop() for h in handles), return_exceptions=True)


async def traffic(url: str, rps: float, tls: bool, users: int = 1000) -> None:
    """The simulator's zipf traffic at ``rps`` until cancelled, in bounded runs.

    Keys follow a zipf skew (a few heavy users), so the ring view has something to show.
    """
    from lbtui.traffic.simulator import run_simulation

    stop = asyncio.Event()
    try:
        while True:
            await run_simulation(
                url + "/echo", rps=rps, duration=600.0, pattern="zipf", keys=users, clients=50,
                key_header="X-User", verify_tls=not tls, stop=stop,
            )
    finally:
        stop.set()
