"""The runtime: build the store and the workers from the configuration and run them
beside the engine.

``attach(gateway)`` is the hook ``lbtui run``/``demo`` pass as ``setup``: it builds a
``Node`` for the gateway's balancer, starts it, shows every worker in
``gateway.components`` (the dashboard's and admin API's status) and stops it with the
gateway. Nothing here blocks start-up: the store is connected by the sync worker, which
retries with backoff while the balancer already routes on the configured servers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cloud.aws import AwsClients, AwsSettings
from cloud.store import Store, open_store
from engine.balancer import LoadBalancer
from workers.analytics import AnalyticsWorker
from workers.autoscaler import Autoscaler, AutoscaleSettings
from workers.base import Worker
from workers.discovery import Discovery, DiscoverySettings
from workers.health_prober import HealthProber
from workers.store_sync import StoreSync
from workers.strategist import Strategist, StrategistSettings

if TYPE_CHECKING:
    from engine.config import Config
    from engine.gateway import Gateway

log = logging.getLogger("lbtui.workers")


class Node:
    """One balancer's background side: the store, its workers, and the AWS clients."""

    def __init__(
        self, lb: LoadBalancer, store: Store | None, workers: list[Worker], aws: AwsClients | None = None,
    ) -> None:
        self.lb = lb
        self.store = store
        self.workers = {w.name: w for w in workers}
        self.aws = aws
        self.started = False

    async def start(self) -> None:
        for worker in self.workers.values():
            worker.start()
        self.started = True

    async def stop(self) -> None:
        """Stop workers (store sync last, so it pushes what the others changed), then close."""
        order = sorted(self.workers.values(), key=lambda w: isinstance(w, StoreSync))
        for worker in order:
            try:
                await worker.stop()
            except Exception as exc:  # noqa: BLE001 - one broken worker must not keep the rest running
                log.warning("%s did not stop cleanly: %s", worker.name, exc)
        if self.store is not None:
            await self.store.close()
        if self.aws is not None:
            await self.aws.close()
        self.started = False

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: worker.status() for name, worker in self.workers.items()}


def build_node(
    config: Config, lb: LoadBalancer, *, store: Store | None = None, probe_health: bool = False,
    node_id: str | None = None,
) -> Node:
    """Map the ``[store]`` and ``[aws]`` sections onto workers.

    ``probe_health`` adds the health prober for a balancer without its own checker (the
    Gateway runs the engine's checker already; its results reach the store through the
    sync worker either way).
    """
    s = config.store
    store = store or open_store(s.mongodb_uri, database=s.database, path=s.path)
    workers: list[Worker] = [StoreSync(lb, store, interval=s.sync_interval, node_id=node_id)]
    if probe_health and config.health.enabled:
        workers.append(HealthProber(lb, config.health))
    a = config.aws
    aws: AwsClients | None = None
    if a.enabled:
        aws = AwsClients(AwsSettings(
            region=a.region, endpoint_url=a.endpoint_url,
            access_key_id=a.access_key_id, secret_access_key=a.secret_access_key))
        workers.append(Strategist(lb, aws, StrategistSettings(
            poll_interval=a.poll_interval, period=a.period, lookback=a.lookback, min_weight=a.min_weight,
            max_weight=a.max_weight, hysteresis=a.hysteresis, smoothing=a.smoothing)))
        if a.discovery:
            workers.append(Discovery(lb, aws, DiscoverySettings(
                tag_key=a.tag_key, tag_value=a.tag_value, port=a.port, interval=a.poll_interval)))
        x = a.autoscale
        if x.enabled:
            workers.append(Autoscaler(lb, aws, AutoscaleSettings(
                enabled=True, min=x.min, max=x.max, scale_up_rps=x.scale_up_rps, scale_down_rps=x.scale_down_rps,
                cooldown=x.cooldown, image_id=x.image_id, instance_type=x.instance_type,
                schedule_start=x.schedule_start or None, schedule_stop=x.schedule_stop or None,
                tag_key=a.tag_key, tag_value=a.tag_value, interval=min(a.poll_interval, 15.0))))
    return Node(lb, store, workers, aws)


async def attach(gateway: Gateway, *, store: Store | None = None) -> Node:
    """Start the workers for a running Gateway and tie their lifetime and status to it.

    The analytics worker shares the node's store and observes every HTTP listener.
    """
    node = build_node(gateway.config, gateway.lb, store=store)
    analytics = AnalyticsWorker(node.store)
    for listener in gateway.listeners:
        if hasattr(listener.proxy, "observers"):
            analytics.attach(listener.proxy)
    node.workers[analytics.name] = analytics
    await node.start()
    for name, worker in node.workers.items():
        gateway.components[name] = worker.status
    gateway.on_stop("workers", node.stop)
    return node
