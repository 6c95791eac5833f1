"""Run one lbtui for the proxy benchmark: the real Gateway, on uvloop, from a TOML file.

Why a launcher and not ``lbtui run``: the benchmark needs the bound port of a listener
that asked for port 0, and it must be sure uvloop drives the loop. Everything else is
the production path: ``Config.load`` -> ``Gateway`` (balancer with its policy, stats
with percentiles, access log thread, active health checks, admin API, 1 s tick).

Prints one line ``READY {"listeners": [...], "admin": ..., "pid": ...}`` on stdout
once bound, then serves until SIGTERM or SIGINT and stops gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from pathlib import Path

# The repository root, so `engine` imports without an installed distribution.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _raise_nofile() -> int:
    """Lift the soft descriptor limit to the hard one: the memory test holds 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(config_path: str) -> None:
    from engine.config import Config
    from engine.gateway import Gateway

    config = Config.load(config_path)
    gateway = Gateway(config, stop_grace=2.0)
    await gateway.start()
    undo = gateway.install_signal_handlers()
    try:
        ready = {
            "pid": os.getpid(),
            "loop": type(asyncio.get_running_loop()).__module__,
            "listeners": [x.to_dict() for x in gateway.listeners],
            "admin": gateway.admin.url if gateway.admin is not None else None,
        }
        print("READY " + json.dumps(ready), flush=True)
        await gateway.serve()
    finally:
        undo()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="lbtui TOML configuration")
    args = parser.parse_args()
    _raise_nofile()
    try:
        import uvloop
    except ImportError:
        print("uvloop is not installed: pip install uvloop", file=sys.stderr)
        return 2
    try:
        uvloop.run(_serve(args.config))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - the benchmark shows this line, not a traceback
        print(f"lbtui_bench_server: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
