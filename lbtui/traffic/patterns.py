"""Traffic shapes: which key (and which client) each request carries, and how fast they come.

A pattern answers two questions for the simulator: ``pick(rng)`` gives the next request's
key and client, and ``rate_factor(t)`` scales the base rate at ``t`` seconds into the run
(only ``burst`` varies it). Keys are strings ``k000042`` so they hash like real ids.
"""

from __future__ import annotations

import bisect
import enum
import math
import random
from dataclasses import dataclass


class PatternName(enum.StrEnum):
    UNIFORM = "uniform"
    HOTSPOT = "hotspot"
    ZIPF = "zipf"
    BURST = "burst"
    STICKY_CLIENTS = "sticky-clients"


@dataclass(slots=True, frozen=True)
class Pick:
    """The shape of one request: its key (None: unkeyed) and which simulated client sends it."""

    key: str | None
    client: int


def key_name(index: int) -> str:
    return f"k{index:06d}"


class Pattern:
    """Uniform keys over ``keys`` (or no key when ``keys`` is 0), at a constant rate."""

    name = PatternName.UNIFORM
    keyed = True

    def __init__(self, keys: int = 1000, clients: int = 1) -> None:
        if keys < 0 or clients < 1:
            raise ValueError("keys must be >= 0 and clients >= 1")
        self.keys = keys
        self.clients = clients

    def _key_index(self, rng: random.Random) -> int:
        return rng.randrange(self.keys)

    def pick(self, rng: random.Random) -> Pick:
        key = key_name(self._key_index(rng)) if self.keys and self.keyed else None
        return Pick(key, rng.randrange(self.clients))

    def rate_factor(self, t: float) -> float:
        return 1.0


class Hotspot(Pattern):
    """A few hot keys take most requests: ``hot_share`` of traffic on ``hot_fraction`` of keys."""

    name = PatternName.HOTSPOT

    def __init__(self, keys: int = 1000, clients: int = 1, hot_fraction: float = 0.01, hot_share: float = 0.8) -> None:
        super().__init__(keys, clients)
        self.hot = max(1, int(keys * hot_fraction)) if keys else 0
        self.hot_share = hot_share

    def _key_index(self, rng: random.Random) -> int:
        if rng.random() < self.hot_share:
            return rng.randrange(self.hot)
        return rng.randrange(self.keys)


class Zipf(Pattern):
    """Key rank r drawn with probability proportional to 1 / r**s (s=1.1: web-like skew)."""

    name = PatternName.ZIPF

    def __init__(self, keys: int = 1000, clients: int = 1, s: float = 1.1) -> None:
        super().__init__(keys, clients)
        weights = [1.0 / math.pow(rank, s) for rank in range(1, keys + 1)]
        total = sum(weights)
        running, self._cdf = 0.0, []
        for w in weights:
            running += w / total
            self._cdf.append(running)

    def _key_index(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self._cdf, rng.random()), self.keys - 1)


class Burst(Pattern):
    """Uniform keys; the rate alternates a short burst (``peak`` x) with a lull, same mean."""

    name = PatternName.BURST

    def __init__(self, keys: int = 1000, clients: int = 1, period: float = 2.0, duty: float = 0.25, peak: float = 3.0) -> None:
        super().__init__(keys, clients)
        self.period, self.duty, self.peak = period, duty, peak
        # Keep the mean rate equal to the base rate: duty*peak + (1-duty)*low == 1.
        self.low = max(0.0, (1 - duty * peak) / (1 - duty))

    def rate_factor(self, t: float) -> float:
        return self.peak if (t % self.period) < self.period * self.duty else self.low


class StickyClients(Pattern):
    """``clients`` browsers, each keeping its cookies; requests carry no key header."""

    name = PatternName.STICKY_CLIENTS
    keyed = False

    def __init__(self, keys: int = 0, clients: int = 50) -> None:
        super().__init__(keys, clients)


class Sequential(Pattern):
    """Every key once, in order (client i sends key i): for exact before/after maps."""

    name = PatternName.UNIFORM

    def __init__(self, keys: int = 1000, clients: int = 1) -> None:
        super().__init__(keys, clients)
        self._next = 0

    def pick(self, rng: random.Random) -> Pick:
        index = self._next % max(1, self.keys)
        self._next += 1
        return Pick(key_name(index) if self.keys else None, index % self.clients)


PATTERNS: dict[str, type[Pattern]] = {
    PatternName.UNIFORM: Pattern,
    PatternName.HOTSPOT: Hotspot,
    PatternName.ZIPF: Zipf,
    PatternName.BURST: Burst,
    PatternName.STICKY_CLIENTS: StickyClients,
}


def make_pattern(name: str, keys: int = 1000, clients: int = 1) -> Pattern:
    """The named pattern, or ValueError listing the valid names."""
    try:
        cls = PATTERNS[PatternName(name)]
    except ValueError:
        raise ValueError(f"unknown pattern {name!r}; choose one of {', '.join(PATTERNS)}") from None
    return cls(keys=keys, clients=clients)
