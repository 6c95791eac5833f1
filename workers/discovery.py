"""EC2 discovery: the tagged pool in EC2 becomes the balancer's server list.

Each poll describes instances tagged ``tag_key=tag_value`` (pending or running). A new
instance is added as a server named by its instance id. An instance that left the pool
(terminated, stopped, untagged) is drained first and removed only once its in-flight
requests are done. The address comes from the ``lbtui:address`` tag, else the private
IP and the configured port; an instance with neither is reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.aws import AwsClients, describe_pool
from engine.balancer import LoadBalancer
from engine.server import AdminState, Server
from workers.base import Worker


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    tag_key: str = "lbtui:pool"
    tag_value: str = ""
    port: int | None = None
    interval: float = 30.0
    weight: int = 10


class Discovery(Worker):
    name = "discovery"

    def __init__(self, lb: LoadBalancer, aws: AwsClients, settings: DiscoverySettings) -> None:
        if not settings.tag_value:
            raise ValueError("discovery needs [aws] tag_value to know which instances form the pool")
        super().__init__(settings.interval, max_backoff=max(settings.interval * 10, 60.0))
        self.lb = lb
        self.aws = aws
        self.settings = settings
        self.retiring: set[str] = set()
        self.unaddressable: list[str] = []
        self.added = 0
        self.removed = 0

    def details(self) -> dict[str, Any]:
        return {
            "pool": f"{self.settings.tag_key}={self.settings.tag_value}",
            "servers": sum(1 for s in self.lb.servers if s.meta.get("instance_id")),
            "retiring": sorted(self.retiring),
            "unaddressable": list(self.unaddressable),
            "added": self.added,
            "removed": self.removed,
        }

    async def step(self) -> None:
        s = self.settings
        instances = await describe_pool(self.aws, s.tag_key, s.tag_value)
        live: dict[str, tuple[str, int]] = {}
        unaddressable = []
        for instance in instances:
            address = instance.address(s.port)
            if address is None:
                unaddressable.append(instance.instance_id)
            else:
                live[instance.instance_id] = address
        self.unaddressable = unaddressable
        known = {srv.meta["instance_id"]: srv for srv in self.lb.servers if srv.meta.get("instance_id")}
        for instance_id, (host, port) in live.items():
            server = known.get(instance_id)
            if server is None:
                new = Server(host, port, weight=s.weight, name=instance_id)
                new.meta["instance_id"] = instance_id
                self.lb.add_server(new, source="discovery")
                self.added += 1
            elif instance_id in self.retiring:  # came back before it was removed
                self.retiring.discard(instance_id)
                self.lb.ready(server.name, source="discovery")
        for instance_id, server in known.items():
            if instance_id in live:
                continue
            if server.admin_state is AdminState.READY:
                self.lb.drain(server.name, source="discovery")
            self.retiring.add(instance_id)
            if self.lb.is_drained(server.name):
                self.lb.remove_server(server.name, source="discovery")
                self.retiring.discard(instance_id)
                self.removed += 1
        self.retiring &= set(known)
