"""Routing policies: small, pure, synchronous pickers.

Each policy answers one question: of these candidate servers (already filtered to the
ones that may take a request), which one gets this request? ``next()`` is the seed API:
it filters the policy's own server list and picks. Policies keep only the state their
algorithm needs (a counter, smooth-WRR credits, EWMA figures live on the Server).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import ClassVar

from engine.server import Server


class Policy:
    """Base class: subclasses implement ``pick``."""

    name: ClassVar[str] = ""
    uses_key: ClassVar[bool] = False

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        self.servers: list[Server] = list(servers)

    def update(self, servers: Sequence[Server]) -> None:
        """Membership or weights changed."""
        self.servers = list(servers)

    def next(self) -> Server | None:
        return self.pick([s for s in self.servers if s.available])

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


class WeightedRoundRobin(Policy):
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, no bursts."""

    name = "weighted_round_robin"

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        super().__init__(servers)
        self._credit: dict[int, float] = {}

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        alive = {id(s) for s in servers}
        self._credit = {k: v for k, v in self._credit.items() if k in alive}

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
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
        best: Server | None = None
        best_load = math.inf
        for offset in range(count):
            server = candidates[(start + offset) % count]
            weight = server.effective_weight
            if weight <= 0:
                continue
            load = server.active_connections / weight
            if load < best_load:
                best, best_load = server, load
        return best


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

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if not candidates:
            return None
        weights = [s.effective_weight for s in candidates]
        if sum(weights) <= 0:
            return None
        return self._random.choices(candidates, weights=weights)[0]
