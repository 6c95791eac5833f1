"""Scripted stories, run end to end on loopback: each prints what happened and checks it.

``remap``    consistent hashing moves about 1/N of the keys when a server joins, and
             exactly those keys come back when it leaves.
``failover`` a backend dies under load; retries hide it from clients while the health
             checks and outlier detection take it out.
``hotspot``  zipf-skewed keys with and without bounded loads: peak-to-mean of in-flight
             requests and of requests served.
``stress``   the bookstore under mixed CRUD with TLS, sticky sessions, rate limits and
             health checks all on (see ``stress.py``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine import events as ev
from engine.balancer import LoadBalancer
from engine.server import Server
from engine.proxy.settings import ProxySettings
from lbtui.traffic.cluster import Cluster
from lbtui.traffic.patterns import Sequential, Zipf
from lbtui.traffic.simulator import SimulationResult, run_simulation

Say = Callable[[str], None]


@dataclass(slots=True)
class ScenarioReport:
    """What a scenario measured, and whether its claims held."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "figures": self.figures, "checks": self.checks}


class Narrator:
    """Collects the story's lines and hands each to ``say`` as it happens."""

    def __init__(self, report: ScenarioReport, say: Say | None) -> None:
        self.report = report
        self.say = say

    def __call__(self, line: str = "") -> None:
        self.report.lines.append(line)
        if self.say is not None:
            self.say(line)

    def check(self, label: str, ok: bool) -> None:
        self.report.checks[label] = ok
        self(f"  [{'ok' if ok else 'FAILED'}] {label}")


def _spread(counts: Counter[str] | dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{name} {n / total:.1%}" for name, n in sorted(counts.items()))


def peak_to_mean(values: list[int] | list[float]) -> float:
    mean = sum(values) / len(values) if values else 0
    return max(values) / mean if mean else 0.0


# -- remap ----------------------------------------------------------------------------------
async def remap(*, keys: int = 10_000, servers: int = 4, rps: float = 4000, say: Say | None = None) -> ScenarioReport:
    report = ScenarioReport("remap")
    out = Narrator(report, say)
    out(f"remap: {keys:,} keys through consistent_hash (hash key header X-Key) over {servers} servers")

    async def sweep(cluster: Cluster) -> SimulationResult:
        return await run_simulation(
            cluster.url + "/",
            rps=rps,
            duration=max(30.0, keys / rps * 4),
            pattern=Sequential(keys),
            max_requests=keys,
            concurrency=64,
        )

    lb_options = {"hash_key": "header:x-key"}
    async with Cluster(servers, "consistent_hash", lb_options=lb_options) as cluster:
        before = await sweep(cluster)
        out(f"  1. every key once: {before.completed:,} answers, {before.failed} failed; spread {_spread(before.servers)}")
        new = await cluster.add_backend()
        added = await sweep(cluster)
        moved = [k for k, s in added.key_servers.items() if before.key_servers.get(k) != s]
        to_new = sum(1 for k in moved if added.key_servers[k] == new.name)
        share, ideal = len(moved) / keys, 1 / (servers + 1)
        out(f"  2. added {new.name}: {len(moved):,} keys moved = {share:.2%} (ideal 1/{servers + 1} = {ideal:.2%},"
            f" ratio {share / ideal:.2f}); {to_new:,} of them to {new.name}")
        await cluster.remove_backend(new.name)
        after = await sweep(cluster)
        back = sum(1 for k, s in after.key_servers.items() if before.key_servers.get(k) == s)
        out(f"  3. removed {new.name}: {back:,} of {keys:,} keys are on their original server again")
        failed = before.failed + added.failed + after.failed
        report.figures = {
            "keys": keys,
            "servers": servers,
            "moved": len(moved),
            "moved_share": round(share, 6),
            "ideal_share": round(ideal, 6),
            "ratio": round(share / ideal, 4),
            "moved_to_new": to_new,
            "returned": back,
            "failed": failed,
            "spread_before": dict(before.servers),
        }
        out.check("moved share within 1.5x of 1/N", 1 / 1.5 <= share / ideal <= 1.5)
        out.check("every moved key went to the new server", to_new == len(moved))
        out.check("every key came back after the removal", back == keys)
        out.check("no request failed", failed == 0)
    return report


# -- failover -----------------------------------------------------------------------------
async def failover(
    *, servers: int = 3, rps: float = 300, duration: float = 4.0, say: Say | None = None
) -> ScenarioReport:
    report = ScenarioReport("failover")
    out = Narrator(report, say)
    out(f"failover: {rps:g} GET/s for {duration:g}s over {servers} backends (round robin, checks every 0.25s,"
        " fall 2); one backend is killed a third of the way in")
    settings = ProxySettings(connect_timeout=1.0, retries=2)
    async with Cluster(servers, "round_robin", settings=settings, health_interval=0.25) as cluster:
        victim = sorted(cluster.handles)[1]
        traffic = asyncio.create_task(run_simulation(cluster.url + "/", rps=rps, duration=duration, keys=0))
        try:
            await asyncio.sleep(duration / 3)
            killed_at = await cluster.kill_backend(victim)
            out(f"  killed {victim} at t={duration / 3:.1f}s (connections reset, port closed)")
            detected = await _wait_for_event(cluster, victim, killed_at, timeout=5.0)
            result = await traffic
        finally:
            if not traffic.done():  # an error above: stop the traffic before the cluster goes
                traffic.cancel()
                await asyncio.gather(traffic, return_exceptions=True)
        detect_s = detected.at - killed_at if detected else None
        if detected:
            out(f"  detected: {detected.event.kind} ({detected.event.source}) after {detect_s * 1000:.0f} ms")
        stats = cluster.lb.stats()
        out(f"  clients: {result.completed:,} requests, {result.failed} failed,"
            f" p99 {result.percentile_ms(99):.1f} ms; served by {_spread(result.servers)}")
        attempts = stats["error_rate_per_server"]
        out(f"  balancer: attempts that failed on {victim} and were retried elsewhere:"
            f" {cluster.lb.get_server(victim).stats.errors}")
        report.figures = {
            "requests": result.completed,
            "client_errors": result.failed,
            "detect_ms": round(detect_s * 1000, 1) if detect_s is not None else None,
            "detected_by": detected.event.kind if detected else None,
            "victim": victim,
            "servers": dict(result.servers),
            "error_rate_per_server": attempts,
        }
        out.check("zero client-visible errors for idempotent requests", result.failed == 0)
        out.check("the dead backend was detected", detected is not None)
    return report


async def _wait_for_event(cluster: Cluster, server: str, after: float, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind in (ev.EJECTED, ev.HEALTH_CHANGED):
            found = cluster.first_event(kind, server, after)
            if found and (kind == ev.EJECTED or found.event.detail.get("state") == "down"):
                return found
        await asyncio.sleep(0.02)
    return None


# -- hotspot ------------------------------------------------------------------------------
class LoadProbe:
    """Sees each pick's in-flight load against the bounded-load cap (``lb.on_pick``)."""

    def __init__(self, lb: LoadBalancer, factor: float) -> None:
        self.lb, self.factor = lb, factor
        self.picks = 0
        self.peak_ratio = 0.0  # busiest server / mean, once there is at least one request per server
        self.peak_load = 0
        self.over_cap = 0
        lb.on_pick = self.picked

    def picked(self, server: Server) -> None:
        """Called before the request is in flight: loads are as the policy saw them."""
        servers = self.lb.servers
        in_flight = sum(s.active_connections for s in servers)
        if servers:
            load = server.active_connections + 1
            mean = (in_flight + 1) / len(servers)
            cap = math.ceil(self.factor * mean)
            self.picks += 1
            if in_flight + 1 >= len(servers):
                busiest = max(s.active_connections + (s is server) for s in servers)
                self.peak_ratio = max(self.peak_ratio, busiest / mean)
            self.peak_load = max(self.peak_load, load)
            self.over_cap += load > cap

    def close(self) -> None:
        self.lb.on_pick = None


async def hotspot(
    *, servers: int = 4, keys: int = 1000, rps: float = 400, duration: float = 3.0, factor: float = 1.25,
    latency_ms: float = 20.0, say: Say | None = None,
) -> ScenarioReport:
    report = ScenarioReport("hotspot")
    out = Narrator(report, say)
    out(f"hotspot: zipf(s=1.1) over {keys:,} keys, {rps:g} req/s for {duration:g}s per run, {servers} backends"
        f" answering in {latency_ms:g} ms; consistent hashing, then bounded loads (c={factor:g})")
    backend_options = {"latency_ms": latency_ms}
    async with Cluster(servers, "consistent_hash", lb_options={"hash_key": "header:x-key"},
                       backend_options=backend_options) as cluster:
        for label, algorithm in (("unbounded", "consistent_hash"), ("bounded", "bounded_hash")):
            cluster.lb.set_algorithm(algorithm, balance_factor=factor if algorithm == "bounded_hash" else None)
            probe = LoadProbe(cluster.lb, factor)
            try:
                result = await run_simulation(
                    cluster.url + "/", rps=rps, duration=duration, pattern=Zipf(keys, s=1.1), seed=7, concurrency=256
                )
            finally:
                probe.close()
            counts = [result.servers.get(name, 0) for name in cluster.handles]
            figures = {
                "requests": result.completed,
                "failed": result.failed,
                "requests_peak_to_mean": round(peak_to_mean(counts), 3),
                "inflight_peak_to_mean": round(probe.peak_ratio, 3),
                "inflight_peak": probe.peak_load,
                "picks_over_cap": probe.over_cap,
                "keys_changed_server": result.keys_changed,
                "p99_ms": round(result.percentile_ms(99), 2),
            }
            report.figures[label] = figures
            out(f"  {label:9}: requests peak/mean {figures['requests_peak_to_mean']:.2f}, in-flight peak/mean"
                f" {figures['inflight_peak_to_mean']:.2f} (peak {probe.peak_load}), picks above"
                f" ceil({factor:g} x mean): {probe.over_cap} of {probe.picks}; keys that spilled to another"
                f" server: {result.keys_changed}; p99 {figures['p99_ms']} ms")
        bounded, unbounded = report.figures["bounded"], report.figures["unbounded"]
        out.check("bounded loads never exceed the cap", bounded["picks_over_cap"] == 0)
        out.check("bounded loads lower the requests peak-to-mean",
                  bounded["requests_peak_to_mean"] <= unbounded["requests_peak_to_mean"])
        out.check("no request failed", bounded["failed"] == 0 and unbounded["failed"] == 0)
    return report


async def stress(*, say: Say | None = None, **options: Any) -> ScenarioReport:
    from lbtui.traffic.stress import run_stress

    return await run_stress(say=say, **options)


SCENARIOS: dict[str, Callable[..., Awaitable[ScenarioReport]]] = {
    "remap": remap,
    "failover": failover,
    "hotspot": hotspot,
    "stress": stress,
}
