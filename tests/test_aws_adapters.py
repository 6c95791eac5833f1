"""The AWS adapters against moto's server mode (never real AWS, never 10.x addresses)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from cloud.aws import (
    AwsClients,
    AwsError,
    AwsSettings,
    cpu_by_instance,
    describe_pool,
    run_instances,
    terminate_instances,
)
from tests.cloud_support import free_port, moto_endpoint, moto_server  # noqa: F401  (fixtures)

AMI = "ami-12c6146b"


@pytest.fixture
async def aws(moto_endpoint: str) -> AsyncIterator[AwsClients]:  # noqa: F811
    clients = AwsClients(AwsSettings(endpoint_url=moto_endpoint))
    try:
        yield clients
    finally:
        await clients.close()


async def put_cpu(aws: AwsClients, instance_id: str, value: float, at: dt.datetime | None = None) -> None:
    cw = await aws.client("cloudwatch")
    await cw.put_metric_data(Namespace="AWS/EC2", MetricData=[{
        "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
        "Value": value, "Unit": "Percent", "Timestamp": at or dt.datetime.now(dt.UTC)}])


async def test_cpu_by_instance_batches_and_maps_missing_to_none(aws: AwsClients) -> None:
    await put_cpu(aws, "i-aaa", 90.0)
    await put_cpu(aws, "i-bbb", 10.0)
    cpu = await cpu_by_instance(aws, ["i-aaa", "i-bbb", "i-none"], period=60, lookback=300)
    assert cpu == {"i-aaa": 90.0, "i-bbb": 10.0, "i-none": None}


async def test_pool_by_tag_with_address_tag(aws: AwsClients) -> None:
    tags = {"lbtui:pool": "web", "lbtui:address": "127.0.0.1:9001"}
    [inst] = await run_instances(aws, image_id=AMI, instance_type="t3.micro", count=1, tags=tags)
    await run_instances(aws, image_id=AMI, instance_type="t3.micro", count=1, tags={"lbtui:pool": "other"})
    [found] = await describe_pool(aws, "lbtui:pool", "web")
    assert found.instance_id == inst.instance_id
    assert found.address(port=None) == ("127.0.0.1", 9001)
    # Without the tag the private IP needs a configured port; it is never guessed.
    untagged = found.__class__(found.instance_id, "running", "10.1.2.3", {})
    assert untagged.address(None) is None and untagged.address(80) == ("10.1.2.3", 80)
    await terminate_instances(aws, [inst.instance_id])
    assert await describe_pool(aws, "lbtui:pool", "web") == []


async def test_unreachable_endpoint_is_an_aws_error() -> None:
    clients = AwsClients(AwsSettings(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=0.3,
                                     read_timeout=0.5, max_attempts=1))
    try:
        with pytest.raises(AwsError) as info:
            await cpu_by_instance(clients, ["i-1"])
        assert "GetMetricData" in str(info.value)
    finally:
        await clients.close()
