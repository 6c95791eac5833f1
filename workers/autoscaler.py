"""Autoscaler (off by default): launch and retire EC2 instances by load per instance.

Each round:
- instances retiring (drained by us) are terminated once the engine reports them drained
  (or at once when they never registered as servers);
- the bounds are [min, max], or [0, 0] outside the optional daily schedule
  (``schedule_start``/``schedule_stop`` as "HH:MM" local time; a window may wrap midnight);
- below the bounds: launch; above: retire, whatever the cooldown;
- otherwise, outside the cooldown: launch one when load per instance exceeds
  ``scale_up_rps``, retire one (the newest) when it falls below ``scale_down_rps``.

Retiring means draining in the engine first; the terminate follows on a later round.
``load`` is requests per second across the pool (the engine's total by default; tests
script it).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud.aws import AwsClients, Instance, describe_pool, run_instances, terminate_instances
from engine.balancer import LoadBalancer
from engine.server import AdminState, Server
from workers.base import Worker


def parse_hhmm(text: str) -> dt.time:
    try:
        hours, minutes = text.split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError as exc:
        raise ValueError(f"schedule time {text!r} must be HH:MM") from exc


@dataclass(frozen=True, slots=True)
class AutoscaleSettings:
    enabled: bool = False
    min: int = 1
    max: int = 4
    scale_up_rps: float = 100.0
    scale_down_rps: float = 20.0
    cooldown: float = 300.0
    image_id: str = ""
    instance_type: str = "t3.micro"
    schedule_start: str | None = None
    schedule_stop: str | None = None
    tag_key: str = "lbtui:pool"
    tag_value: str = ""
    interval: float = 15.0
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError("autoscale needs 0 <= min <= max")
        if self.scale_down_rps >= self.scale_up_rps:
            raise ValueError("autoscale scale_down_rps must be below scale_up_rps")
        if self.enabled and not (self.image_id and self.tag_value):
            raise ValueError("autoscale needs image_id and [aws] tag_value")
        if (self.schedule_start is None) != (self.schedule_stop is None):
            raise ValueError("autoscale schedule needs both schedule_start and schedule_stop")
        for text in (self.schedule_start, self.schedule_stop):
            if text is not None:
                parse_hhmm(text)


class Autoscaler(Worker):
    name = "autoscaler"

    def __init__(
        self,
        lb: LoadBalancer,
        aws: AwsClients,
        settings: AutoscaleSettings,
        *,
        load: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        super().__init__(settings.interval, max_backoff=max(settings.interval * 10, 60.0))
        self.lb = lb
        self.aws = aws
        self.settings = settings
        self._load = load or (lambda: float(lb.totals.rate.rate()))
        self._clock = clock
        self._wall = wall_clock
        self._last_action = -float("inf")
        self.retiring: set[str] = set()
        self.count = 0
        self.load_per_instance = 0.0
        self.last_action = ""
        self.launched = 0
        self.terminated = 0

    def details(self) -> dict[str, Any]:
        lo, hi = self.bounds()
        return {
            "instances": self.count,
            "load_per_instance": round(self.load_per_instance, 2),
            "bounds": [lo, hi],
            "retiring": sorted(self.retiring),
            "last_action": self.last_action,
            "launched": self.launched,
            "terminated": self.terminated,
        }

    def bounds(self) -> tuple[int, int]:
        s = self.settings
        if s.schedule_start is None or s.schedule_stop is None:
            return s.min, s.max
        start, stop, now = parse_hhmm(s.schedule_start), parse_hhmm(s.schedule_stop), self._wall().time()
        active = start <= now < stop if start <= stop else (now >= start or now < stop)
        return (s.min, s.max) if active else (0, 0)

    def _server_of(self, instance_id: str) -> Server | None:
        for server in self.lb.servers:
            if server.meta.get("instance_id") == instance_id:
                return server
        return None

    async def step(self) -> None:
        s = self.settings
        instances = await describe_pool(self.aws, s.tag_key, s.tag_value)
        live_ids = {i.instance_id for i in instances}
        await self._finish_retiring(live_ids)
        active = [i for i in instances if i.instance_id not in self.retiring]
        self.count = len(active)
        self.load_per_instance = self._load() / max(1, self.count)
        lo, hi = self.bounds()
        if self.count < lo:
            await self._launch(lo - self.count, "below minimum")
        elif self.count > hi:
            self._retire(active, self.count - hi, "above maximum")
        elif self._clock() - self._last_action < s.cooldown:
            return
        elif self.load_per_instance > s.scale_up_rps and self.count < hi:
            await self._launch(1, f"load {self.load_per_instance:.1f} rps/instance > {s.scale_up_rps:g}")
        elif self.load_per_instance < s.scale_down_rps and self.count > lo:
            self._retire(active, 1, f"load {self.load_per_instance:.1f} rps/instance < {s.scale_down_rps:g}")

    async def _launch(self, count: int, why: str) -> None:
        s = self.settings
        tags = {s.tag_key: s.tag_value, **s.extra_tags}
        launched = await run_instances(self.aws, image_id=s.image_id, instance_type=s.instance_type,
                                       count=count, tags=tags)
        self.launched += len(launched)
        self._last_action = self._clock()
        self.last_action = f"launched {', '.join(i.instance_id for i in launched)} ({why})"

    def _retire(self, active: list[Instance], count: int, why: str) -> None:
        newest_first = sorted(active, key=lambda i: i.launched_at, reverse=True)
        for instance in newest_first[:count]:
            self.retiring.add(instance.instance_id)
            server = self._server_of(instance.instance_id)
            if server is not None and server.admin_state is AdminState.READY:
                self.lb.drain(server.name, source="autoscaler")
        self._last_action = self._clock()
        self.last_action = f"retiring {', '.join(sorted(self.retiring))} ({why})"

    async def _finish_retiring(self, live_ids: set[str]) -> None:
        self.retiring &= live_ids
        done = []
        for instance_id in sorted(self.retiring):
            server = self._server_of(instance_id)
            if server is None or self.lb.is_drained(server.name):
                done.append(instance_id)
        if done:
            await terminate_instances(self.aws, done)
            self.retiring -= set(done)
            self.terminated += len(done)
            self.last_action = f"terminated {', '.join(done)} (drained)"
