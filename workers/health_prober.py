"""Health prober: the engine's active checks as an owned worker.

Results go through ``LoadBalancer.report_check`` (rise/fall), which publishes
``health_changed`` events with source ``"health"``; store sync pushes those to the
store, so status changes reach MongoDB (queued while it is down) without the prober
knowing about the store.
"""

from __future__ import annotations

from typing import Any

from engine.balancer import LoadBalancer
from engine.config import HealthConfig
from engine.health import HealthChecker
from workers.base import Worker


class HealthProber(Worker):
    name = "health"

    def __init__(self, lb: LoadBalancer, settings: HealthConfig = HealthConfig()) -> None:
        """``settings`` is the ``[health]`` table as loaded (``enabled`` is the caller's)."""
        super().__init__(settings.interval)
        self.lb = lb
        self.checker = HealthChecker(
            settings.interval, settings.timeout, settings.rise, settings.fall,
            servers=lambda: lb.servers, http_path=settings.http_path,
            expect_status=settings.expect_status, report=lb.report_check,
        )

    async def step(self) -> None:
        await self.checker.run_once()

    def details(self) -> dict[str, Any]:
        down = [s.name for s in self.lb.servers if not s.healthy]
        return {"rounds": self.checker.rounds, "down": down, "servers": len(self.lb.servers)}
