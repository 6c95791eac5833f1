"""A sampled request log: the screen shows about two requests a second, at no cost to the rest.

Handing every request to an observer costs the proxy a record and a call per request
(a few percent of its throughput). So the sampler is attached to the proxy only while
it wants a sample: the first request after arming is kept, and the observer detaches
itself right after (on the next loop iteration, never while the proxy walks its
observer list). The app's refresh tick takes the sample when one is due and arms the
sampler again. How many requests a sample stands for comes from ``count`` (the
balancer's request counter) when given, else from the records seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.accesslog import AccessRecord
from lbtui.control.base import RequestView

Observer = Callable[[AccessRecord], None]
# Registers an observer with the data plane and returns the function that removes it.
RequestSource = Callable[[Observer], Callable[[], None]]

SAMPLES_PER_SECOND = 2.0


class RequestSampler:
    """Keeps a recent request; ``take`` hands out at most ``rate`` a second."""

    __slots__ = ("seen", "latest", "_taken_seen", "_taken_count", "_taken_at", "_interval", "_clock", "_count",
                 "_source", "_undo", "_detaching")

    def __init__(
        self,
        rate: float = SAMPLES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        count: Callable[[], int] | None = None,
    ) -> None:
        self.seen = 0
        self.latest: AccessRecord | None = None
        self._taken_seen = 0
        self._taken_count = count() if count is not None else 0
        self._taken_at = float("-inf")
        self._interval = 1.0 / rate
        self._clock = clock
        self._count = count
        self._source: RequestSource | None = None
        self._undo: Callable[[], None] | None = None
        self._detaching = False

    @property
    def attached(self) -> bool:
        """True while the proxy hands this sampler its requests."""
        return self._undo is not None

    def start(self, source: RequestSource) -> None:
        """Sample the requests of ``source`` from now on (armed at once)."""
        self._source = source
        self._arm()

    def stop(self) -> None:
        """Detach for good."""
        self._source = None
        self._disarm()

    def __call__(self, record: AccessRecord) -> None:
        """The proxy's observer: keep the record, then get out of the proxy's way."""
        self.seen += 1
        self.latest = record
        if self._undo is not None and not self._detaching:
            self._detaching = True
            try:
                asyncio.get_running_loop().call_soon(self._disarm)
            except RuntimeError:  # no loop (called directly): detach now
                self._disarm()

    def take(self) -> RequestView | None:
        """A recent request if a sample is due and one arrived since the last sample."""
        now = self._clock()
        record = self.latest
        if record is None or self.seen == self._taken_seen or now - self._taken_at < self._interval:
            return None
        if self._count is not None:
            count = self._count()
            among = max(1, count - self._taken_count)
            self._taken_count = count
        else:
            among = self.seen - self._taken_seen
        self._taken_seen = self.seen
        self._taken_at = now
        self._arm()  # ready for the next one
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

    def _arm(self) -> None:
        if self._source is not None and self._undo is None:
            self._detaching = False
            self._undo = self._source(self)

    def _disarm(self) -> None:
        undo, self._undo = self._undo, None
        self._detaching = False
        if undo is not None:
            undo()
