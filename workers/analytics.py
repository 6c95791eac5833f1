"""Analytics: per-minute rollups of the proxy's access records, kept in the store.

The proxy calls ``observe`` for every finished request; it only appends the record to a
list, so the data plane pays one list append. The worker step (every few seconds) swaps
that list out and folds it into one accumulator per epoch minute: requests, status
classes and codes, bytes, and per-server counts and latency histograms. Each step
re-puts the minutes it touched (the store replaces a rollup by minute), so reports see
the current minute too; finished minutes are then forgotten. Retention prunes old ones.

The rollup also carries each latency histogram (``latency``: bucket counts), so hourly
and daily summaries can merge minutes into true percentiles rather than averaging them.

For the dashboard, the worker also keeps the last hour in memory (one small summary per
minute, refreshed when a fold touches it) and shows it in ``status()`` under ``recent``
with the window's peak and lowest minutes. The dashboard polls status about four times a
second, so that part is built once per fold (or minute change) and then reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from engine.accesslog import AccessRecord
from engine.stats import LatencyHistogram
from workers.base import Worker

MINUTE = 60
DEFAULT_RETENTION_MINUTES = 7 * 24 * 60
#: Minutes kept in memory while the store is unreachable; older ones are dropped (counted).
MAX_OPEN_MINUTES = 24 * 60
#: Records kept between steps; beyond this the proxy's records are counted but dropped.
MAX_PENDING = 2_000_000
#: Minutes of per-minute summaries kept in memory for the dashboard (``status()["recent"]``).
RECENT_MINUTES = 60
#: Servers listed per recent minute; the rest are summed under ``OTHER`` to bound the status.
RECENT_SERVERS = 50
OTHER = "(other)"


class RollupStore(Protocol):
    """The part of ``cloud.store.Store`` analytics needs."""

    async def put_rollup(self, doc: Mapping[str, Any]) -> None: ...
    async def list_rollups(self, since: int = 0) -> list[dict[str, Any]]: ...
    async def prune_rollups(self, before: int) -> int: ...


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def histogram_to_doc(hist: LatencyHistogram) -> dict[str, Any]:
    """A JSON- and BSON-safe form of a histogram (string bucket keys)."""
    return {
        "counts": {str(k): v for k, v in hist.counts.items()},
        "total": hist.total,
        "sum_us": hist.sum_micros,
        "max_us": hist.max_micros,
    }


def histogram_from_doc(doc: Mapping[str, Any] | None) -> LatencyHistogram:
    hist = LatencyHistogram()
    if not doc:
        return hist
    hist.counts = {int(k): int(v) for k, v in (doc.get("counts") or {}).items()}
    hist.total = int(doc.get("total", sum(hist.counts.values())))
    hist.sum_micros = int(doc.get("sum_us", 0))
    hist.max_micros = int(doc.get("max_us", 0))
    return hist


def ms(hist: LatencyHistogram, p: float) -> float:
    return round(hist.percentile(p) * 1000, 3)


class MinuteRollup:
    """Everything counted for one minute, before it becomes a store document."""

    __slots__ = ("bytes_in", "bytes_out", "codes", "errors", "latency", "minute", "requests", "servers", "status")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.requests = 0
        self.errors = 0
        self.status: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.latency = LatencyHistogram()
        self.servers: dict[str, list[Any]] = {}  # name -> [requests, errors, LatencyHistogram]

    def add(self, record: AccessRecord) -> None:
        status = record.status
        error = status >= 500 or status == 0
        self.requests += 1
        self.errors += error
        cls, code = status_class(status), str(status)
        self.status[cls] = self.status.get(cls, 0) + 1
        self.codes[code] = self.codes.get(code, 0) + 1
        self.bytes_in += record.bytes_in
        self.bytes_out += record.bytes_out
        seconds = record.total_ms / 1000
        self.latency.record(seconds)
        if record.server:
            entry = self.servers.get(record.server)
            if entry is None:
                entry = self.servers[record.server] = [0, 0, LatencyHistogram()]
            entry[0] += 1
            entry[1] += error
            entry[2].record(record.upstream_ms / 1000)

    def summary(self) -> dict[str, Any]:
        """The few figures the dashboard draws for this minute (JSON-safe, no histograms)."""
        ranked = sorted(self.servers.items(), key=lambda item: (-item[1][0], item[0]))
        servers = {name: entry[0] for name, entry in ranked[:RECENT_SERVERS]}
        if len(ranked) > RECENT_SERVERS:
            servers[OTHER] = sum(entry[0] for _, entry in ranked[RECENT_SERVERS:])
        return {
            "minute": self.minute,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": ms(self.latency, 50),
            "p99_ms": ms(self.latency, 99),
            "servers": servers,
        }

    def to_doc(self) -> dict[str, Any]:
        return {
            "minute": self.minute,
            "requests": self.requests,
            "errors": self.errors,
            "status": dict(self.status),
            "codes": dict(self.codes),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "p50_ms": ms(self.latency, 50),
            "p90_ms": ms(self.latency, 90),
            "p99_ms": ms(self.latency, 99),
            "latency": histogram_to_doc(self.latency),
            "servers": {
                name: {
                    "requests": count,
                    "errors": errors,
                    "p50_ms": ms(hist, 50),
                    "p99_ms": ms(hist, 99),
                    "latency": histogram_to_doc(hist),
                }
                for name, (count, errors, hist) in sorted(self.servers.items())
            },
        }


class AnalyticsWorker(Worker):
    """Rolls access records up per minute into the store, and prunes past retention."""

    name = "analytics"

    def __init__(
        self,
        store: RollupStore,
        *,
        interval: float = 5.0,
        retention_minutes: int = DEFAULT_RETENTION_MINUTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval)
        if retention_minutes < 1:
            raise ValueError("analytics: retention must be at least one minute")
        self.store = store
        self.retention_minutes = retention_minutes
        self.clock = clock
        self._pending: list[AccessRecord] = []
        self._open: dict[int, MinuteRollup] = {}
        self._dirty: set[int] = set()
        self._last_prune = -1
        self.records = 0
        self.dropped = 0
        self.minutes_written = 0
        self._recent: dict[int, dict[str, Any]] = {}  # minute -> summary, the last hour only
        self._recent_cache: dict[str, Any] | None = None
        self._recent_cached_for = -1  # the current minute the cache was built in

    def observe(self, record: AccessRecord) -> None:
        """The proxy's observer: one append, nothing else on the hot path."""
        pending = self._pending
        if len(pending) < MAX_PENDING:
            pending.append(record)
        else:
            self.dropped += 1

    def attach(self, proxy: Any) -> None:
        """Register on an ``HttpProxy`` (anything with an ``observers`` list)."""
        if self.observe not in proxy.observers:
            proxy.observers.append(self.observe)

    def detach(self, proxy: Any) -> None:
        if self.observe in proxy.observers:
            proxy.observers.remove(self.observe)

    def fold(self) -> int:
        """Move pending records into their minutes; returns how many were folded."""
        batch, self._pending = self._pending, []
        open_minutes = self._open
        touched: set[int] = set()
        for record in batch:
            minute = int(record.time // MINUTE)
            rollup = open_minutes.get(minute)
            if rollup is None:
                rollup = open_minutes[minute] = MinuteRollup(minute)
            rollup.add(record)
            touched.add(minute)
        self._dirty |= touched
        self.records += len(batch)
        if touched:
            self._remember(touched)
        while len(open_minutes) > MAX_OPEN_MINUTES:
            oldest = min(open_minutes)
            self.dropped += open_minutes.pop(oldest).requests
            self._dirty.discard(oldest)
        return len(batch)

    async def flush(self) -> int:
        """Fold, write every touched minute, forget finished ones; returns minutes written."""
        self.fold()
        current = int(self.clock() // MINUTE)
        written = 0
        for minute in sorted(self._dirty):
            await self.store.put_rollup(self._open[minute].to_doc())
            self._dirty.discard(minute)
            written += 1
        self.minutes_written += written
        # A record can arrive late by the length of a request; keep the previous minute open.
        for minute in [m for m in self._open if m < current - 1 and m not in self._dirty]:
            del self._open[minute]
        return written

    async def prune(self) -> int:
        current = int(self.clock() // MINUTE)
        self._last_prune = current
        return await self.store.prune_rollups(current - self.retention_minutes)

    async def setup(self) -> None:
        """Hold the first write back one interval.

        The store sync worker connects the shared store when the node starts; a write
        before that fails and shows a spurious error with a backoff. Records keep folding
        into the dashboard's window either way (``fold`` runs before any write).
        """
        await self._pause(self.interval, self._stopping)

    async def step(self) -> None:
        await self.flush()
        if int(self.clock() // MINUTE) != self._last_prune:
            await self.prune()

    async def teardown(self) -> None:
        """Write what is left; a store outage at shutdown is reported, not raised."""
        try:
            await self.flush()
        except Exception as exc:  # shutdown must finish even when the store is gone
            self.last_error = f"final flush: {exc.__class__.__name__}: {exc}"[:300]
            self.last_error_at = time.time()

    # -- the last hour, for the dashboard ----------------------------------------------
    def _remember(self, minutes: Iterable[int]) -> None:
        """Refresh the summaries of the minutes a fold touched, then forget the too old."""
        for minute in minutes:
            rollup = self._open.get(minute)
            if rollup is not None:
                self._recent[minute] = rollup.summary()
        self._trim(self._window_end())
        self._recent_cache = None

    def _window_end(self) -> int:
        current = int(self.clock() // MINUTE)
        # A record stamped ahead of our clock (another host's clock) still shows.
        return max(current, max(self._recent, default=current))

    def _trim(self, end: int) -> None:
        for minute in [m for m in self._recent if m <= end - RECENT_MINUTES]:
            del self._recent[minute]

    def recent(self) -> dict[str, Any]:
        """The last hour as the dashboard shows it; built once per fold or minute change.

        ``recent`` lists only minutes with traffic (the view fills the gaps with zeros
        from ``window``). ``peak_minute`` is the busiest of them; ``lowest_minute`` the
        quietest finished one, because the minute still running would nearly always win.
        The returned dict is shared between calls: read it, do not change it.
        """
        current = int(self.clock() // MINUTE)
        if self._recent_cache is not None and self._recent_cached_for == current:
            return self._recent_cache
        end = self._window_end()
        self._trim(end)
        minutes = [self._recent[m] for m in sorted(self._recent)]
        finished = [m for m in minutes if m["minute"] < current]
        peak = max(minutes, key=lambda m: (m["requests"], m["minute"]), default=None)
        lowest = min(finished, key=lambda m: (m["requests"], m["minute"]), default=None)
        self._recent_cache = {
            "window": {"first": end - RECENT_MINUTES + 1, "last": end, "current": current},
            "recent": minutes,
            "peak_minute": _brief(peak),
            "lowest_minute": _brief(lowest),
        }
        self._recent_cached_for = current
        return self._recent_cache

    def details(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "pending": len(self._pending),
            "open_minutes": len(self._open),
            "minutes_written": self.minutes_written,
            "dropped": self.dropped,
            **self.recent(),
        }


def _brief(summary: Mapping[str, Any] | None) -> dict[str, int] | None:
    return None if summary is None else {"minute": summary["minute"], "requests": summary["requests"],
                                         "errors": summary["errors"]}


class InMemoryRollupStore:
    """A stand-in rollup store for tests and demos without a store (same contract)."""

    def __init__(self) -> None:
        self.rollups: dict[int, dict[str, Any]] = {}

    async def put_rollup(self, doc: Mapping[str, Any]) -> None:
        self.rollups[int(doc["minute"])] = dict(doc)

    async def list_rollups(self, since: int = 0) -> list[dict[str, Any]]:
        return [self.rollups[m] for m in sorted(self.rollups) if m >= since]

    async def prune_rollups(self, before: int) -> int:
        old = [m for m in self.rollups if m < before]
        for m in old:
            del self.rollups[m]
        return len(old)
