"""Picks per second for every policy, and the cost of the per-request stats path.

Run: python tests/bench/bench_policies.py [--servers 100] [--picks 200000]

Each figure is also given as a ratio to a baseline measured in the same run (a bare
``list[i % n]`` pick, and a bare counter increment for the stats path), because these
machines are noisy and only ratios compare across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import LoadBalancer, Server  # noqa: E402
from engine.balancer import ALGORITHMS  # noqa: E402


def timed(fn: Callable[[], None], repeats: int = 5) -> float:
    """Median seconds of ``repeats`` runs of fn."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--picks", type=int, default=200_000)
    args = parser.parse_args()
    n, picks = args.servers, args.picks
    servers = [Server("127.0.0.1", 10_000 + i, weight=1 + i % 5, name=f"s{i}") for i in range(n)]
    requests = [{"client_ip": f"10.0.{i // 250 % 250}.{i % 250}", "path": f"/item/{i}", "headers": {"x-key": f"user-{i}"}} for i in range(1024)]

    def baseline() -> None:
        pool = servers
        for i in range(picks):
            pool[i % n]

    base = timed(baseline)
    print(f"{n} servers, {picks} picks per run, median of 5 runs")
    print(f"{'policy':<24}{'picks/s':>14}{'us/pick':>10}{'x baseline':>12}")
    print(f"{'baseline list[i % n]':<24}{picks / base:>14,.0f}{base / picks * 1e6:>10.3f}{1.0:>12.1f}")
    for name in sorted(ALGORITHMS):
        lb = LoadBalancer(servers, algorithm=name, hash_key="header:x-key")

        def run(lb: LoadBalancer = lb) -> None:
            route = lb.route
            for i in range(picks):
                route(requests[i & 1023])

        seconds = timed(run)
        print(f"{'route ' + name:<24}{picks / seconds:>14,.0f}{seconds / picks * 1e6:>10.3f}{seconds / base:>12.1f}")
        for s in servers:
            s.stats.requests = 0

    lb = LoadBalancer(servers)
    target = servers[0]

    def counter() -> None:
        box = [0]
        for _ in range(picks):
            box[0] += 1

    def stats_path() -> None:
        begin, finish = lb.begin, lb.finish
        for i in range(picks):
            begin(target)
            finish(target, 200, 0.0005 + (i & 63) * 1e-5)

    c = timed(counter)
    s = timed(stats_path)
    print(f"{'counter increment':<24}{picks / c:>14,.0f}{c / picks * 1e6:>10.3f}{1.0:>12.1f}")
    print(f"{'begin+finish (stats)':<24}{picks / s:>14,.0f}{s / picks * 1e6:>10.3f}{s / c:>12.1f}")


if __name__ == "__main__":
    main()
