"""Routing policies: small, pure, synchronous pickers.

Each policy answers one question: of these candidate servers (already filtered to the
ones that may take a request), which one gets this request? ``next()`` is the seed API:
it filters the policy's own server list and picks. Policies keep only the state their
algorithm needs (a counter, smooth-WRR credits, EWMA figures live on the Server).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from itertools import accumulate
from collections.abc import Iterable, Sequence
from typing import ClassVar

from engine.server import Server


class Policy:
    """Base class: subclasses implement ``pick``."""

    name: ClassVar[str] = ""
    uses_key: ClassVar[bool] = False

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        self.servers: list[Server] = list(servers)
        self._last_available: list[Server] = []

    def update(self, servers: Sequence[Server]) -> None:
        """Membership or weights changed."""
        self.servers = list(servers)

    def next(self) -> Server | None:
        fresh = [s for s in self.servers if s.available]
        # Hand the same list object back while nothing changed, so per-list caches hold.
        if fresh != self._last_available:
            self._last_available = fresh
        return self.pick(self._last_available)

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        raise NotImplementedError


class RoundRobin(Policy):
    """Each candidate in turn: 0, 1, 2, 0, 1, 2, ..."""

    name = "round_robin"

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        super().__init__(servers)
        self._counter = 0

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if not candidates:
            return None
        server = candidates[self._counter % len(candidates)]
        self._counter += 1
        return server


def _static_weights(candidates: Sequence[Server]) -> list[float] | None:
    """The candidates' weights, or None while any of them is in slow start (time-varying)."""
    if any(s.slow_start_window for s in candidates):
        return None
    return [float(s.weight) for s in candidates]


class WeightedRoundRobin(Policy):
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, no bursts.

    The smooth algorithm is O(n) per pick. While the candidate list and the weights stay
    the same, one full cycle of its picks is computed once and replayed, which is the
    same sequence at O(1) per pick; slow start (time-varying weights) uses the live loop.
    """

    name = "weighted_round_robin"
    max_schedule: ClassVar[int] = 10_000

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        super().__init__(servers)
        self._credit: dict[int, float] = {}
        self._for: Sequence[Server] | None = None
        self._last_seen: Sequence[Server] | None = None
        self._schedule: list[Server] = []
        self._position = 0

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        alive = {id(s) for s in servers}
        self._credit = {k: v for k, v in self._credit.items() if k in alive}
        self._for = self._last_seen = None

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if candidates is self._for and self._schedule:
            position = self._position
            self._position = position + 1
            return self._schedule[position % len(self._schedule)]
        if candidates is self._last_seen:
            # Seen twice in a row: one cycle from the current credits continues the exact
            # sequence, and after a full cycle every credit is back where it started.
            weights = _static_weights(candidates)
            if weights is not None and 0 < sum(weights) <= self.max_schedule:
                schedule = [self._smooth_pick(candidates) for _ in range(int(sum(weights)))]
                self._for, self._schedule, self._position = candidates, [s for s in schedule if s], 1
                if self._schedule:
                    return self._schedule[0]
        self._for, self._last_seen = None, candidates
        return self._smooth_pick(candidates)

    def _smooth_pick(self, candidates: Sequence[Server]) -> Server | None:
        credit = self._credit
        best: Server | None = None
        best_credit = -math.inf
        total = 0.0
        for server in candidates:
            weight = server.effective_weight
            if weight <= 0:
                continue
            value = credit.get(id(server), 0.0) + weight
            credit[id(server)] = value
            total += weight
            if value > best_credit:
                best, best_credit = server, value
        if best is not None:
            credit[id(best)] = best_credit - total
        return best


class LeastConnections(Policy):
    """Fewest active connections per unit of weight; ties go round robin."""

    name = "least_connections"

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        super().__init__(servers)
        self._counter = 0
        self._for: Sequence[Server] | None = None
        self._uniform = False
        self._inverse: list[float] = []

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._for = None

    def connect(self, server: Server) -> None:
        server.active_connections += 1

    def disconnect(self, server: Server) -> None:
        server.active_connections = max(0, server.active_connections - 1)

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        count = len(candidates)
        if not count:
            return None
        start = self._counter % count
        self._counter += 1
        if candidates is not self._for:
            weights = _static_weights(candidates)
            self._for = candidates if weights is not None else None
            self._uniform = weights is not None and min(weights) == max(weights) > 0
            self._inverse = [1.0 / w if w > 0 else math.inf for w in weights or ()]
        conns = [s.active_connections for s in candidates]
        if self._for is not candidates:  # slow start: weights move with time
            loads: list[float] = [
                c / w if (w := s.effective_weight) > 0 else math.inf for c, s in zip(conns, candidates)
            ]
        elif self._uniform:
            loads = conns  # type: ignore[assignment]
        else:
            loads = [c * inv if c else (0.0 if inv != math.inf else math.inf) for c, inv in zip(conns, self._inverse)]
        best = min(loads)
        if best == math.inf:
            return None
        try:
            return candidates[loads.index(best, start)]
        except ValueError:
            return candidates[loads.index(best)]


class LeastRequest(Policy):
    """Power of two choices: sample two candidates, keep the less loaded (Envoy's default)."""

    name = "least_request"

    def __init__(self, servers: Iterable[Server] = (), seed: int | None = None) -> None:
        super().__init__(servers)
        self._random = random.Random(seed)

    def _cost(self, server: Server) -> float:
        return (server.active_connections + 1) / max(server.effective_weight, 1e-9)

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        count = len(candidates)
        if count <= 1:
            return candidates[0] if count else None
        first = self._random.randrange(count)
        second = self._random.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return a if self._cost(a) <= self._cost(b) else b


class PeakEwma(LeastRequest):
    """Latency-aware power of two choices: cost = peak-EWMA latency x (in-flight + 1).

    As in Finagle and Linkerd: a slow response raises the estimate at once (the peak),
    fast ones pull it down gradually, so a server that starts to struggle loses traffic
    before its error rate shows it. Servers with no samples yet cost the least.
    """

    name = "peak_ewma"
    decay_seconds: ClassVar[float] = 10.0

    @staticmethod
    def observe(server: Server, seconds: float, now: float) -> None:
        """Fold one response time into the server's peak EWMA."""
        if seconds > server.ewma_latency:
            server.ewma_latency = seconds
        else:
            elapsed = max(now - server.ewma_stamp, 0.0)
            w = math.exp(-elapsed / PeakEwma.decay_seconds)
            server.ewma_latency = server.ewma_latency * w + seconds * (1.0 - w)
        server.ewma_stamp = now

    def _cost(self, server: Server) -> float:
        return server.ewma_latency * (server.active_connections + 1) / max(server.effective_weight, 1e-9)


class RandomPick(Policy):
    """Uniform random, weighted by effective weight."""

    name = "random"

    def __init__(self, servers: Iterable[Server] = (), seed: int | None = None) -> None:
        super().__init__(servers)
        self._random = random.Random(seed)
        self._for: Sequence[Server] | None = None
        self._cumulative: list[float] = []

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if not candidates:
            return None
        if candidates is not self._for:
            weights = _static_weights(candidates)
            self._for = candidates if weights is not None else None
            self._cumulative = list(accumulate(weights or [s.effective_weight for s in candidates]))
        total = self._cumulative[-1]
        if total <= 0:
            return None
        return candidates[bisect_right(self._cumulative, self._random.random() * total)]
