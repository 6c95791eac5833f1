"""Passive outlier detection, as Envoy's: real responses eject a misbehaving server.

N consecutive failures (connect errors, resets, timeouts, or 5xx when configured) eject
the server for ``base_ejection`` seconds times the number of times it has been ejected
(capped), and never more than ``max_ejection_percent`` of the pool at once, so a bad
deploy that breaks every server does not empty the pool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.server import Server, bump_generation


@dataclass(slots=True)
class OutlierDetector:
    consecutive_errors: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejection_percent: float = 50.0
    count_5xx: bool = True
    enabled: bool = True

    def is_failure(self, status: int | None, failed: bool) -> bool:
        return failed or (self.count_5xx and status is not None and status >= 500)

    def observe(self, server: Server, status: int | None, failed: bool, pool: Sequence[Server]) -> float | None:
        """Feed one response; returns the ejection time in seconds when it ejected."""
        if not self.is_failure(status, failed):
            server.consecutive_errors = 0
            return None
        server.consecutive_errors += 1
        if not self.enabled or server.consecutive_errors < self.consecutive_errors:
            return None
        now = time.monotonic()
        if server.is_ejected(now):
            return None
        ejected = sum(1 for s in pool if s.is_ejected(now))
        if pool and (ejected + 1) * 100.0 > self.max_ejection_percent * len(pool):
            return None
        server.ejections += 1
        duration = min(self.base_ejection * server.ejections, self.max_ejection)
        server.ejected_until = now + duration
        server.consecutive_errors = 0
        bump_generation()
        return duration
