"""EC2 calls lbtui needs: find the pool by tag, launch into it, terminate from it.

``Instance`` is a plain value so ``cloud`` stays free of the engine. The backend address
comes from the ``lbtui:address`` tag (host:port) when present; otherwise the private IP
and a configured port, and with no port configured the instance has no address (it is
never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud.aws.clients import AWS_ERRORS, AwsClients, as_aws_error

ADDRESS_TAG = "lbtui:address"
LIVE_STATES = ("pending", "running")


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    state: str
    private_ip: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    launched_at: float = 0.0

    def address(self, port: int | None) -> tuple[str, int] | None:
        """(host, port) from the address tag, else private IP + ``port``; None if unknown."""
        tagged = self.tags.get(ADDRESS_TAG)
        if tagged:
            host, sep, port_text = tagged.rpartition(":")
            if sep and host and port_text.isdigit():
                return host.strip("[]"), int(port_text)
            return None
        if self.private_ip and port:
            return self.private_ip, port
        return None


def _instance(raw: Mapping[str, Any]) -> Instance:
    tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])}
    launched = raw.get("LaunchTime")
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", "unknown"),
        private_ip=raw.get("PrivateIpAddress"),
        tags=tags,
        launched_at=launched.timestamp() if launched is not None else 0.0,
    )


async def describe_pool(
    clients: AwsClients, tag_key: str, tag_value: str, states: Sequence[str] = LIVE_STATES,
) -> list[Instance]:
    """Instances tagged ``tag_key=tag_value`` in the given states (paginated)."""
    client = await clients.client("ec2")
    filters = [{"Name": f"tag:{tag_key}", "Values": [tag_value]}]
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    found: list[Instance] = []
    token: str | None = None
    try:
        while True:
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": 500}
            if token:
                kwargs["NextToken"] = token
            response = await client.describe_instances(**kwargs)
            for reservation in response.get("Reservations", []):
                found.extend(_instance(raw) for raw in reservation.get("Instances", []))
            token = response.get("NextToken")
            if not token:
                return found
    except AWS_ERRORS as exc:
        raise as_aws_error("EC2 DescribeInstances", exc) from exc


async def run_instances(
    clients: AwsClients, *, image_id: str, instance_type: str, count: int, tags: Mapping[str, str],
) -> list[Instance]:
    """Launch ``count`` instances carrying ``tags``."""
    client = await clients.client("ec2")
    try:
        response = await client.run_instances(
            ImageId=image_id, InstanceType=instance_type, MinCount=count, MaxCount=count,
            TagSpecifications=[{
                "ResourceType": "instance",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }],
        )
    except AWS_ERRORS as exc:
        raise as_aws_error("EC2 RunInstances", exc) from exc
    return [_instance(raw) for raw in response.get("Instances", [])]


async def terminate_instances(clients: AwsClients, instance_ids: Sequence[str]) -> None:
    if not instance_ids:
        return
    client = await clients.client("ec2")
    try:
        await client.terminate_instances(InstanceIds=list(instance_ids))
    except AWS_ERRORS as exc:
        raise as_aws_error("EC2 TerminateInstances", exc) from exc
