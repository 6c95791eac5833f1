"""Per-server and overall statistics: counters, a sliding request rate, latency percentiles.

Latency goes into a log-linear histogram (HDR style): 32 sub-buckets per power of two
of microseconds, so any percentile is within about 3% of the truth, memory is bounded
(at most a few hundred integers) and two histograms merge by adding counts, which is
how the overall figures and several lbtui instances combine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

_monotonic = time.monotonic

_SUB_BITS = 5
_SUB = 1 << _SUB_BITS  # sub-buckets per power of two
_VECTOR_MIN = 64  # from this many latencies on, one numpy pass beats the Python loop
FOLD_AT = 4096
"""Pending latencies folded at once on the request path: a fold of 40,000 (one second of
traffic) paused the event loop for 15 ms and set the proxy's p99; 4096 take ~0.2 ms."""


def _bucket_of(micros: int) -> int:
    if micros < _SUB:
        return micros if micros > 0 else 0
    shift = micros.bit_length() - _SUB_BITS - 1
    return ((shift + 1) << _SUB_BITS) + ((micros >> shift) - _SUB)


def _bucket_floor(index: int) -> int:
    """Smallest value in microseconds that lands in bucket ``index``."""
    if index < _SUB:
        return index
    shift = (index >> _SUB_BITS) - 1
    return ((index & (_SUB - 1)) + _SUB) << shift


class LatencyHistogram:
    """Bounded-memory, mergeable latency histogram with percentile queries."""

    __slots__ = ("counts", "total", "sum_micros", "max_micros")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum_micros = 0
        self.max_micros = 0

    def record(self, seconds: float) -> None:
        micros = int(seconds * 1_000_000)
        if micros < _SUB:  # _bucket_of, inlined: this runs twice per proxied request
            index = micros if micros > 0 else 0
        else:
            shift = micros.bit_length() - _SUB_BITS - 1
            index = ((shift + 1) << _SUB_BITS) + ((micros >> shift) - _SUB)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.total += 1
        self.sum_micros += micros
        if micros > self.max_micros:
            self.max_micros = micros

    def record_many(self, seconds: list[float]) -> None:
        """``record`` for each value, in one numpy pass when there are many."""
        if len(seconds) < _VECTOR_MIN:
            for value in seconds:
                self.record(value)
            return
        micros = (np.asarray(seconds, dtype=np.float64) * 1_000_000).astype(np.int64)  # int() truncates too
        index = np.maximum(micros, 0)
        large = index >= _SUB
        if large.any():
            big = index[large]
            shift = np.frexp(big.astype(np.float64))[1] - (_SUB_BITS + 1)  # exponent == bit_length
            index[large] = ((shift + 1) << _SUB_BITS) + (big >> shift) - _SUB
        counts = np.bincount(index)
        found = np.flatnonzero(counts)
        table = self.counts
        get = table.get
        for bucket, count in zip(found.tolist(), counts[found].tolist()):
            table[bucket] = get(bucket, 0) + count
        self.total += len(seconds)
        self.sum_micros += int(micros.sum())
        top = int(micros.max())
        if top > self.max_micros:
            self.max_micros = top

    def merge(self, other: LatencyHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total
        self.sum_micros += other.sum_micros
        self.max_micros = max(self.max_micros, other.max_micros)

    def percentile(self, p: float) -> float:
        """The p-th percentile (0-100) in seconds; 0.0 when empty."""
        return self.percentiles((p,))[0]

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """Several percentiles (ascending) in one pass over the sorted buckets."""
        if not self.total:
            return [0.0] * len(ps)
        ranks = [max(1, int(self.total * p / 100.0 + 0.999999)) for p in ps]
        result: list[float] = []
        seen = 0
        counts = self.counts
        for index in sorted(counts):
            seen += counts[index]
            while len(result) < len(ranks) and seen >= ranks[len(result)]:
                middle = (_bucket_floor(index) + _bucket_floor(index + 1)) / 2.0
                result.append(min(middle, self.max_micros) / 1_000_000)
            if len(result) == len(ranks):
                return result
        return result + [self.max_micros / 1_000_000] * (len(ranks) - len(result))

    def mean(self) -> float:
        return self.sum_micros / self.total / 1_000_000 if self.total else 0.0

    def buckets(self, bounds_seconds: Iterable[float]) -> list[tuple[float, int]]:
        """Cumulative counts at each bound: what a Prometheus histogram wants."""
        ordered = sorted(self.counts.items())
        result: list[tuple[float, int]] = []
        for bound in bounds_seconds:
            limit = bound * 1_000_000
            result.append((bound, sum(c for i, c in ordered if _bucket_floor(i) < limit)))
        return result

    def reset(self) -> None:
        self.counts.clear()
        self.total = self.sum_micros = self.max_micros = 0


class RateWindow:
    """Events per second over a sliding window of whole seconds."""

    __slots__ = ("_slots", "_second", "window")

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._slots = [0] * window
        self._second = -(window + 1)  # far in the past: the first add starts clean

    def _advance(self, now: int) -> None:
        gap = now - self._second
        if gap <= 0:
            return
        if gap >= self.window:
            self._slots = [0] * self.window
        else:
            for step in range(1, gap + 1):
                self._slots[(self._second + step) % self.window] = 0
        self._second = now

    def add(self, count: int = 1, now: float | None = None) -> None:
        second = int(_monotonic() if now is None else now)
        if second != self._second:
            self._advance(second)
        self._slots[second % self.window] += count

    def rate(self, now: float | None = None) -> float:
        """Average per second over the last complete window (the current second excluded)."""
        second = int(time.monotonic() if now is None else now)
        self._advance(second)
        current = self._slots[second % self.window]
        return (sum(self._slots) - current) / (self.window - 1)

    def count_last(self, seconds: int, now: float | None = None) -> int:
        """Events in the last ``seconds`` seconds, the current one included."""
        second = int(time.monotonic() if now is None else now)
        self._advance(second)
        span = min(seconds, self.window)
        return sum(self._slots[(second - i) % self.window] for i in range(span))


class TrafficStats:
    """What one server (or the whole balancer) has served.

    The proxy's hot path only bumps ``requests`` and appends a latency to ``pending``
    (no call into this class); the histogram and the rate window are brought up to date
    in a batch (``fold``) when the balancer ticks, when a second ends, or when anything
    reads ``latency`` or ``rate``, so readers never see stale figures. A server's folded
    latencies also go to its ``parent`` (the balancer's totals).
    """

    __slots__ = (
        "requests",
        "errors",
        "bytes_in",
        "bytes_out",
        "_latency",
        "_rate",
        "error_rate_window",
        "pending",
        "parent",
        "rated",
        "open_second",
        "source",
    )

    # bytes_in / bytes_out: for a server, bytes received from it (every byte read on its
    # connections, heads included) and sent to it (request heads and bodies as written,
    # chunk-size lines excluded); for the totals, the same summed over all servers.

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._latency = LatencyHistogram()
        self._rate = RateWindow()
        self.error_rate_window = RateWindow()
        # Latencies (seconds) of finished requests not yet in the histogram.
        self.pending: list[float] = []
        self.parent: TrafficStats | None = None
        # Requests already counted in the rate window; the rest were routed during
        # ``open_second`` (the balancer moves it on at each second boundary).
        self.rated = 0
        self.open_second = int(_monotonic())
        # Called before the totals are read, so every server's pending figures reach them.
        self.source: Callable[[], None] | None = None

    @property
    def latency(self) -> LatencyHistogram:
        if self.source is not None:
            self.source()
        if self.pending:
            self.fold_latency()
        return self._latency

    @property
    def rate(self) -> RateWindow:
        if self.requests != self.rated:
            self.fold_rate(self.open_second)
        return self._rate

    def fold_latency(self) -> None:
        """Move the pending latencies into the histogram (and the parent's pending)."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        parent = self.parent
        if parent is not None:
            parent.pending += pending
            if len(parent.pending) >= FOLD_AT:
                parent.fold_latency()
        self._latency.record_many(pending)

    def fold_rate(self, second: int) -> None:
        """Count the requests routed since the last fold in ``second``'s slot."""
        delta = self.requests - self.rated
        if delta:
            self.rated = self.requests
            self._rate.add(delta, second)

    def roll(self, second: int) -> None:
        """A new second began: settle the old one's requests and the pending latencies."""
        if self.requests != self.rated:
            self.fold_rate(self.open_second)
        self.open_second = second
        if self.pending:
            self.fold_latency()

    def start(self, now: float | None = None) -> None:
        """A request was sent to this server (counted at routing time, retries included)."""
        second = int(_monotonic() if now is None else now)
        if self.requests != self.rated:
            self.fold_rate(self.open_second)
        self.requests += 1
        self.rated += 1
        self._rate.add(1, second)

    def finish(self, seconds: float, error: bool) -> None:
        """The request ended: its latency and whether it failed."""
        self.pending.append(seconds)
        self.fold_latency()
        if error:
            self.errors += 1
            self.error_rate_window.add()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, float | int]:
        p50, p90, p99 = self.latency.percentiles((50, 90, 99))
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "rps": round(self.rate.rate(), 3),
            "p50_ms": round(p50 * 1000, 3),
            "p90_ms": round(p90 * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }
