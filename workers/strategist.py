"""Weight strategist: CloudWatch CPU per instance becomes the servers' weights.

The formula, per server with an ``instance_id`` (all figures per poll):

    cpu      = newest CPUUtilization average (percent) in the lookback window
    smoothed = cpu                                          on the first sample
             = smoothing * smoothed_prev + (1 - smoothing) * cpu   afterwards (EWMA)
    target   = clamp(round(max_weight * (1 - smoothed / 100)), min_weight, max_weight)
    apply target only if |target - weight| > hysteresis * max_weight

So a busy instance (90% CPU) heads for 10% of max_weight and an idle one (10%) for 90%:
traffic moves away from hot instances. The hysteresis band (10% of max_weight by
default, i.e. 10 CPU points) keeps noise from rebuilding the ring; smoothing damps
spikes. Missing data keeps the last weight. AWS errors and throttling keep every
weight as it is, back off exponentially and show in ``status``. Weights go to the
engine with ``source="strategist"``; store sync carries them to the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.aws import AwsClients, AwsError, cpu_by_instance
from engine.balancer import LoadBalancer
from workers.base import Worker

CpuFetcher = Callable[[Sequence[str]], Awaitable[dict[str, float | None]]]


@dataclass(frozen=True, slots=True)
class StrategistSettings:
    poll_interval: float = 60.0
    period: int = 60
    lookback: int = 300
    min_weight: int = 1
    max_weight: int = 100
    hysteresis: float = 0.1
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.min_weight <= self.max_weight <= 1000:
            raise ValueError("weights must satisfy 0 <= min_weight <= max_weight <= 1000")
        if not 0 <= self.smoothing < 1:
            raise ValueError("smoothing must be in [0, 1)")
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis must be in [0, 1)")


def target_weight(smoothed_cpu: float, settings: StrategistSettings) -> int:
    raw = round(settings.max_weight * (1.0 - smoothed_cpu / 100.0))
    return max(settings.min_weight, min(settings.max_weight, raw))


class Strategist(Worker):
    name = "strategist"

    def __init__(
        self,
        lb: LoadBalancer,
        aws: AwsClients | None = None,
        settings: StrategistSettings = StrategistSettings(),
        *,
        fetch: CpuFetcher | None = None,
    ) -> None:
        super().__init__(settings.poll_interval, max_backoff=max(settings.poll_interval * 10, 60.0))
        if fetch is None:
            if aws is None:
                raise ValueError("the strategist needs AWS clients or a fetch function")
            client = aws

            async def fetch_cloudwatch(ids: Sequence[str]) -> dict[str, float | None]:
                return await cpu_by_instance(client, ids, period=settings.period, lookback=settings.lookback)

            fetch = fetch_cloudwatch
        self.lb = lb
        self.settings = settings
        self._fetch = fetch
        self.smoothed: dict[str, float] = {}
        self.targets: dict[str, int] = {}
        self.missing: list[str] = []
        self.changes = 0
        self.throttled = False

    def details(self) -> dict[str, Any]:
        return {
            "instances": len(self.smoothed),
            "cpu": {k: round(v, 1) for k, v in self.smoothed.items()},
            "targets": dict(self.targets),
            "missing": list(self.missing),
            "changes": self.changes,
            "throttled": self.throttled,
        }

    async def step(self) -> None:
        by_instance = {s.meta["instance_id"]: s.name for s in self.lb.servers if s.meta.get("instance_id")}
        if not by_instance:
            return
        try:
            cpu = await self._fetch(list(by_instance))
        except AwsError as exc:
            self.throttled = exc.throttled
            raise  # weights stay; the base class backs off and reports
        self.throttled = False
        s = self.settings
        missing = []
        for instance_id, name in by_instance.items():
            value = cpu.get(instance_id)
            if value is None:
                missing.append(name)  # no data: keep the last weight
                continue
            previous = self.smoothed.get(name)
            smoothed = value if previous is None else s.smoothing * previous + (1 - s.smoothing) * value
            self.smoothed[name] = smoothed
            target = self.targets[name] = target_weight(smoothed, s)
            server = self.lb.get_server(name)
            if server is not None and abs(target - server.weight) > s.hysteresis * s.max_weight:
                self.lb.set_weight(name, target, source="strategist")
                self.changes += 1
        self.missing = missing
        for name in [n for n in self.smoothed if n not in by_instance.values()]:
            del self.smoothed[name]
            self.targets.pop(name, None)
