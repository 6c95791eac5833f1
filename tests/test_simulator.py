"""The simulator: bounds, patterns, loopback guard, and agreement with the balancer's stats."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from lbtui.traffic.cluster import Cluster
from lbtui.traffic.patterns import Burst, Hotspot, Zipf, make_pattern
from lbtui.traffic.simulator import TargetRefused, check_target, run_simulation


async def test_counts_agree_with_the_balancers_own_stats() -> None:
    async with Cluster(3, "round_robin") as cluster:
        result = await run_simulation(cluster.url + "/", rps=500, duration=5, max_requests=600, keys=50)
        stats = cluster.lb.stats()
    assert result.sent == result.completed == 600 and result.failed == 0
    assert stats["requests"] == 600
    assert dict(result.servers) == stats["requests_per_server"]
    assert sorted(result.servers.values()) == [200, 200, 200]  # round robin, exactly
    assert result.statuses == Counter({200: 600})
    assert 0 < result.percentile_ms(50) <= result.percentile_ms(99)


async def test_keys_that_change_server_mid_run_are_counted() -> None:
    async with Cluster(3, "consistent_hash", lb_options={"hash_key": "header:x-key"}) as cluster:
        stop = asyncio.Event()
        task = asyncio.create_task(run_simulation(cluster.url + "/", rps=400, duration=10, keys=200, stop=stop, seed=1))
        async def until(n: int) -> None:
            while cluster.lb.totals.requests < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(until(600), 10)
        await cluster.add_backend()
        await asyncio.wait_for(until(cluster.lb.totals.requests + 800), 10)
        stop.set()
        result = await task
    assert result.failed == 0
    moved_to_new = {k for k in result.key_moves if result.key_servers[k] == "web4"}
    assert result.keys_changed == len(moved_to_new) > 0  # only keys the new server took moved
    assert result.keys_changed < len(result.key_servers) / 2


async def test_runs_are_bounded_in_time_and_rate() -> None:
    async with Cluster(1) as cluster:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await run_simulation(cluster.url + "/", rps=100, duration=0.5, max_requests=10_000)
        elapsed = loop.time() - started
    assert 0.4 <= elapsed < 3
    assert 40 <= result.sent <= 55  # ~rps x duration, never the count cap


async def test_sticky_clients_keep_their_cookies() -> None:
    lb_options = {"sticky": True, "sticky_method": "cookie"}
    async with Cluster(3, "round_robin", lb_options=lb_options) as cluster:
        result = await run_simulation(
            cluster.url + "/", rps=400, duration=5, max_requests=300, pattern="sticky-clients", clients=12,
            concurrency=1, client_ips=True,
        )
    assert result.failed == 0 and result.clients_changed == 0
    assert len(result.servers) == 3  # distinct client addresses spread over all servers


@pytest.mark.parametrize("host", ["10.1.2.3", "8.8.8.8", "[2001:db8::1]"])
async def test_non_loopback_targets_are_refused(host: str) -> None:
    with pytest.raises(TargetRefused, match="allow-remote"):
        await check_target(f"http://{host}:80/")
    await check_target(f"http://{host}:80/", allow_remote=True)  # only resolution is skipped


async def test_loopback_names_and_addresses_pass() -> None:
    for url in ("http://127.0.0.1:1/", "http://127.9.9.9:1/", "http://[::1]:1/", "http://localhost:1/"):
        await check_target(url)
    with pytest.raises(TargetRefused):
        await check_target("ftp://127.0.0.1/")


def test_patterns_have_the_promised_shapes() -> None:
    rng = random.Random(3)
    zipf_pattern, hot_pattern = Zipf(1000), Hotspot(1000, hot_fraction=0.01)
    zipf = Counter(zipf_pattern.pick(rng).key for _ in range(20_000))
    assert zipf.most_common(1)[0][0] == "k000000" and zipf["k000000"] > 20_000 * 0.1
    hot = Counter(hot_pattern.pick(rng).key for _ in range(10_000))
    assert sum(hot[f"k{i:06d}"] for i in range(10)) > 10_000 * 0.75
    burst = Burst()
    mean = sum(burst.rate_factor(t / 100) for t in range(200)) / 200
    assert burst.rate_factor(0.1) == 3.0 and abs(mean - 1.0) < 0.05
    assert make_pattern("sticky-clients", clients=5).pick(rng).key is None
    with pytest.raises(ValueError, match="choose one of"):
        make_pattern("spiky")


def test_cli_refuses_remote_and_bad_numbers(capsys) -> None:
    from lbtui.cli import main

    assert main(["simulate", "--target", "http://10.0.0.1/", "--duration", "1"]) == 2
    assert "allow-remote" in capsys.readouterr().err
    assert main(["simulate", "--target", "http://127.0.0.1:1/", "--rps", "0"]) == 2
