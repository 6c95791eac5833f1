"""A sampled request log: the proxy reports every request, the screen shows about two a second.

The observer runs on the proxy's hot path, so it only counts and keeps the latest
record (two attribute stores); the app's refresh tick takes a sample when one is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.accesslog import AccessRecord
from lbtui.control.base import RequestView

Observer = Callable[[AccessRecord], None]
# Registers an observer with the data plane and returns the function that removes it.
RequestSource = Callable[[Observer], Callable[[], None]]

SAMPLES_PER_SECOND = 2.0


class RequestSampler:
    """Counts requests and keeps the last one; ``take`` hands out at most ``rate`` a second."""

    __slots__ = ("seen", "latest", "_taken_seen", "_taken_at", "_interval", "_clock")

    def __init__(self, rate: float = SAMPLES_PER_SECOND, clock: Callable[[], float] = time.monotonic) -> None:
        self.seen = 0
        self.latest: AccessRecord | None = None
        self._taken_seen = 0
        self._taken_at = float("-inf")
        self._interval = 1.0 / rate
        self._clock = clock

    def __call__(self, record: AccessRecord) -> None:
        """The proxy's observer: as cheap as it can be."""
        self.seen += 1
        self.latest = record

    def take(self) -> RequestView | None:
        """The newest request if a sample is due and one arrived since the last sample."""
        now = self._clock()
        record = self.latest
        if record is None or self.seen == self._taken_seen or now - self._taken_at < self._interval:
            return None
        among = self.seen - self._taken_seen
        self._taken_seen = self.seen
        self._taken_at = now
        return RequestView(
            at=record.time,
            client=record.client,
            method=record.method,
            path=record.path,
            status=record.status,
            server=record.server,
            total_ms=record.total_ms,
            among=among,
        )
