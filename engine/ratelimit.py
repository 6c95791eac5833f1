"""Token buckets: per-server requests per second and per-client requests per minute."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def has_token(self, now: float | None = None) -> bool:
        self._refill(time.monotonic() if now is None else now)
        return self.tokens >= 1.0

    def take(self, now: float | None = None) -> bool:
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until the next token: the Retry-After a client is told."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class ClientRateLimiter:
    """Requests per minute per client key, with a bounded number of tracked clients.

    The least recently seen clients are forgotten first, so a flood of spoofed or
    one-shot clients costs bounded memory; a forgotten client starts with a full bucket.
    """

    def __init__(self, per_minute: int, max_clients: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, client: str, now: float | None = None) -> float | None:
        """None when allowed (and counted); else the seconds to wait before retrying."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.per_minute / 60.0, float(self.per_minute))
            self._buckets[client] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if bucket.take(now):
            return None
        return max(bucket.wait_time(), 0.001)

    def __len__(self) -> int:
        return len(self._buckets)
