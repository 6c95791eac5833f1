"""Strategist, discovery and autoscaler against moto's server mode and real local backends.

moto invents 10.x private IPs: nothing here connects to them. Instances carry
``lbtui:address=127.0.0.1:PORT`` of a backend this test started, and discovery has no
fallback port, so an untagged instance is reported, never dialled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence

import pytest

from cloud.aws import AwsClients, AwsError, AwsSettings, describe_pool, run_instances, terminate_instances
from engine.balancer import LoadBalancer
from engine.config import HealthConfig
from engine.server import AdminState, Server
from tests.cloud_support import Backend, backends, moto_endpoint, moto_server, wait_for  # noqa: F401
from workers.autoscaler import Autoscaler, AutoscaleSettings
from workers.discovery import Discovery, DiscoverySettings
from workers.health_prober import HealthProber
from workers.strategist import Strategist, StrategistSettings

AMI = "ami-12c6146b"
POOL = "web"


@pytest.fixture
async def aws(moto_endpoint: str) -> AsyncIterator[AwsClients]:  # noqa: F811
    clients = AwsClients(AwsSettings(endpoint_url=moto_endpoint))
    try:
        yield clients
    finally:
        await clients.close()


async def put_cpu(aws: AwsClients, values: dict[str, float]) -> None:
    cw = await aws.client("cloudwatch")
    now = dt.datetime.now(dt.UTC)
    await cw.put_metric_data(Namespace="AWS/EC2", MetricData=[
        {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": iid}],
         "Value": value, "Unit": "Percent", "Timestamp": now}
        for iid, value in values.items()])


def instance_server(name: str, instance_id: str, port: int, weight: int = 50) -> Server:
    server = Server("127.0.0.1", port, weight=weight, name=name)
    server.meta["instance_id"] = instance_id
    return server


# -- strategist ---------------------------------------------------------------------------------
async def test_strategist_moves_weights_away_from_busy_instances(aws: AwsClients) -> None:
    lb = LoadBalancer([instance_server("a", "i-aaa", 9001), instance_server("b", "i-bbb", 9002),
                       instance_server("c", "i-ccc", 9003)])
    await put_cpu(aws, {"i-aaa": 90.0, "i-bbb": 10.0})  # no data for c
    settings = StrategistSettings(poll_interval=0.3, period=60, lookback=300)
    strategist = Strategist(lb, aws, settings)
    changes: list[tuple[str | None, str]] = []
    lb.events.subscribe(lambda e: changes.append((e.server, e.source)))
    strategist.start()
    try:
        # Within two poll intervals (plus the request time to moto).
        await wait_for(lambda: lb.require("a").weight < 50 and lb.require("b").weight > 50,
                       2 * settings.poll_interval + 1.0, "weights to move")
    finally:
        await strategist.stop()
    assert lb.require("a").weight == 10 and lb.require("b").weight == 90  # first sample: no history
    assert lb.require("c").weight == 50  # missing data keeps the last weight
    assert set(changes) == {("a", "strategist"), ("b", "strategist")}
    assert strategist.status()["missing"] == ["c"]


async def test_strategist_ignores_noise_inside_the_hysteresis_band() -> None:
    lb = LoadBalancer([instance_server("a", "i-aaa", 9001, weight=50), instance_server("b", "i-bbb", 9002, 50)])
    readings = iter([{"i-aaa": 50.0, "i-bbb": 50.0}, {"i-aaa": 57.0, "i-bbb": 43.0},
                     {"i-aaa": 44.0, "i-bbb": 58.0}, {"i-aaa": 90.0, "i-bbb": 10.0}])

    async def fetch(ids: Sequence[str]) -> dict[str, float | None]:
        return next(readings)

    strategist = Strategist(lb, settings=StrategistSettings(hysteresis=0.1, smoothing=0.5), fetch=fetch)
    for _ in range(3):
        assert await strategist.run_once()
        assert (lb.require("a").weight, lb.require("b").weight) == (50, 50)
    # A real shift moves them, damped by smoothing: 0.5*47 + 0.5*90 = 68.5% -> weight 32.
    assert await strategist.run_once()
    assert lb.require("a").weight < 40 and lb.require("b").weight > 60


async def test_strategist_keeps_weights_and_backs_off_on_aws_errors() -> None:
    lb = LoadBalancer([instance_server("a", "i-aaa", 9001, weight=42)])
    calls = 0

    async def throttled(ids: Sequence[str]) -> dict[str, float | None]:
        nonlocal calls
        calls += 1
        raise AwsError("CloudWatch GetMetricData: Throttling: Rate exceeded", code="Throttling", throttled=True)

    strategist = Strategist(lb, settings=StrategistSettings(poll_interval=1.0), fetch=throttled)
    assert not await strategist.run_once()
    assert not await strategist.run_once()
    status = strategist.status()
    assert lb.require("a").weight == 42
    assert status["throttled"] and "Throttling" in status["last_error"] and not status["ok"]
    assert strategist.backoff_delay() == 2.0  # doubles per consecutive failure


# -- discovery ------------------------------------------------------------------------------------
async def test_discovery_registers_tagged_instances_and_retires_after_draining(
    aws: AwsClients, backends: list[Backend]  # noqa: F811
) -> None:
    lb = LoadBalancer([], "round_robin")
    discovery = Discovery(lb, aws, DiscoverySettings(tag_value=POOL, interval=0.2))
    [inst] = await run_instances(aws, image_id=AMI, instance_type="t3.micro", count=1,
                                 tags={"lbtui:pool": POOL, "lbtui:address": f"127.0.0.1:{backends[0].port}"})
    # An untagged one in the pool: moto gave it a 10.x IP, which must never be used.
    [ghost] = await run_instances(aws, image_id=AMI, instance_type="t3.micro", count=1, tags={"lbtui:pool": POOL})
    assert await discovery.run_once()
    [server] = lb.servers
    assert (server.name, server.host, server.port) == (inst.instance_id, "127.0.0.1", backends[0].port)
    assert discovery.status()["unaddressable"] == [ghost.instance_id]

    # The registered backend is real: an active check finds it up.
    prober = HealthProber(lb, HealthConfig(interval=0.1, timeout=1.0, rise=1, fall=1, http_path="/"))
    assert await prober.run_once() and server.healthy

    # Terminated with a request in flight: drained first, removed once it finished.
    lb.begin(server)
    await terminate_instances(aws, [inst.instance_id])
    assert await discovery.run_once()
    assert server.admin_state is AdminState.DRAIN and lb.get_server(server.name) is server
    assert lb.route({}) is None  # no new requests to a draining server
    lb.finish(server, 200, 0.01)
    assert await discovery.run_once()
    assert lb.servers == [] and discovery.status()["removed"] == 1


# -- autoscaler -----------------------------------------------------------------------------------
async def test_autoscaler_launches_and_retires_under_scripted_load(
    aws: AwsClients, backends: list[Backend]  # noqa: F811
) -> None:
    lb = LoadBalancer([], "round_robin")
    load = {"rps": 0.0}
    clock = {"now": 1000.0}
    settings = AutoscaleSettings(
        enabled=True, min=1, max=3, scale_up_rps=100, scale_down_rps=20, cooldown=60, image_id=AMI,
        tag_value=POOL, interval=0.2, extra_tags={"lbtui:address": f"127.0.0.1:{backends[0].port}"})
    scaler = Autoscaler(lb, aws, settings, load=lambda: load["rps"], clock=lambda: clock["now"])
    discovery = Discovery(lb, aws, DiscoverySettings(tag_value=POOL))

    async def pool_size() -> int:
        return len(await describe_pool(aws, "lbtui:pool", POOL))

    async def round_() -> None:
        assert await scaler.run_once(), scaler.last_error
        assert await discovery.run_once(), discovery.last_error

    await round_()
    assert await pool_size() == 1  # below the minimum: launched at once
    load["rps"] = 500.0
    await round_()
    assert await pool_size() == 1  # busy, but inside the cooldown
    clock["now"] += 61
    await round_()
    assert await pool_size() == 2 and scaler.launched == 2
    clock["now"] += 61
    await round_()
    assert await pool_size() == 3
    clock["now"] += 61
    await round_()
    assert await pool_size() == 3  # at the maximum

    load["rps"] = 30.0  # 10 per instance: below scale_down_rps
    clock["now"] += 61
    newest = scaler.status()["instances"]
    await round_()
    [retiring] = scaler.retiring
    server = lb.require(retiring)
    assert server.admin_state is AdminState.DRAIN and await pool_size() == 3 and newest == 3
    await round_()  # drained (nothing in flight): terminated, then discovery retires it
    assert await pool_size() == 2 and lb.get_server(retiring) is None
    assert scaler.terminated == 1

    clock["now"] += 61
    await round_()
    await round_()
    assert await pool_size() == 1  # never below the minimum
    clock["now"] += 61
    await round_()
    assert await pool_size() == 1


async def test_autoscaler_schedule_empties_the_pool_outside_its_window(aws: AwsClients) -> None:
    lb = LoadBalancer([], "round_robin")
    wall = {"now": dt.datetime(2026, 1, 5, 9, 0)}
    settings = AutoscaleSettings(enabled=True, min=2, max=2, cooldown=0, image_id=AMI, tag_value=POOL,
                                 schedule_start="08:30", schedule_stop="17:00")
    scaler = Autoscaler(lb, aws, settings, load=lambda: 50.0, wall_clock=lambda: wall["now"])
    assert await scaler.run_once()
    assert len(await describe_pool(aws, "lbtui:pool", POOL)) == 2
    wall["now"] = dt.datetime(2026, 1, 5, 17, 30)
    assert await scaler.run_once()  # retire both (not registered: nothing to drain)
    assert await scaler.run_once()  # terminate
    assert await describe_pool(aws, "lbtui:pool", POOL) == []
    assert scaler.bounds() == (0, 0)


def test_autoscale_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="scale_down_rps"):
        AutoscaleSettings(scale_up_rps=10, scale_down_rps=10)
    with pytest.raises(ValueError, match="HH:MM"):
        AutoscaleSettings(schedule_start="9am", schedule_stop="17:00")
    with pytest.raises(ValueError, match="image_id"):
        AutoscaleSettings(enabled=True, tag_value=POOL)
