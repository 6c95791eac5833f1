"""The load balancer: servers, the active policy, and every rule around a pick.

``route`` is the whole routing decision for one request: stickiness, the policy, the
per-server rate limit, health, drain, ejection and panic mode. ``begin`` and ``finish``
bracket each request so in-flight counts, latency percentiles, passive outlier
detection and drain completion stay true. Every change an operator would care about is
published on ``events``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from engine import events as ev
from engine.affinity import SessionAffinity, parse_cookies
from engine.events import Event, EventBus
from engine.hash_policies import ConsistentHashPolicy, MaglevPolicy
from engine.hashring import KeyLocation
from engine.outlier import OutlierDetector
from engine.policies import (
    LeastConnections,
    LeastRequest,
    PeakEwma,
    Policy,
    RandomPick,
    RoundRobin,
    WeightedRoundRobin,
)
from engine.ratelimit import ClientRateLimiter, TokenBucket
from engine.server import AdminState, Health, Server, bump_generation, server_name_problem, state_generation
from engine.server import _generation as _GENERATION  # read inline on the hot path
from engine.stats import FOLD_AT, TrafficStats

ALGORITHMS: dict[str, type[Policy]] = {
    "round_robin": RoundRobin,
    "weighted_round_robin": WeightedRoundRobin,
    "least_connections": LeastConnections,
    "least_request": LeastRequest,
    "peak_ewma": PeakEwma,
    "random": RandomPick,
    "consistent_hash": ConsistentHashPolicy,
    "bounded_hash": ConsistentHashPolicy,
    "maglev": MaglevPolicy,
}
ALIASES = {
    "rr": "round_robin",
    "wrr": "weighted_round_robin",
    "weighted": "weighted_round_robin",
    "leastconn": "least_connections",
    "least_conn": "least_connections",
    "p2c": "least_request",
    "ewma": "peak_ewma",
    "hash": "consistent_hash",
    "ring": "consistent_hash",
}
_monotonic = time.monotonic
_READY = AdminState.READY  # a module constant: Enum member access costs ~0.1 us in 3.11
HASH_KEY_KINDS = ("client_ip", "path", "uri", "header", "cookie", "query")


def canonical_algorithm(name: str) -> str:
    """The canonical algorithm name, or ValueError listing the valid ones."""
    key = ALIASES.get(name, name)
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return key


@dataclass(frozen=True, slots=True)
class HashKey:
    """Which part of a request the key-based policies hash: e.g. ``header:X-User``."""

    kind: str = "client_ip"
    name: str = ""

    @classmethod
    def parse(cls, spec: str) -> HashKey:
        kind, _, name = spec.partition(":")
        kind = kind.strip().lower()
        if kind not in HASH_KEY_KINDS:
            raise ValueError(f"hash key {spec!r}: kind must be one of {', '.join(HASH_KEY_KINDS)}")
        if kind in ("header", "cookie", "query") and not name:
            raise ValueError(f"hash key {spec!r}: {kind} needs a name, e.g. {kind}:session")
        return cls(kind, name.strip().lower() if kind == "header" else name.strip())

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    def extract(self, request: Mapping[str, Any]) -> str | None:
        """The key of one request, or None when the request has no such part."""
        explicit = request.get("key")
        if explicit is not None:
            return str(explicit)
        kind = self.kind
        if kind == "client_ip":
            return request.get("client_ip")
        path = request.get("path")
        if kind == "uri":
            return path
        if kind == "path":
            return path.partition("?")[0] if path else None
        if kind == "header":
            return (request.get("headers") or {}).get(self.name)
        if kind == "cookie":
            cookies = request.get("cookies")
            if cookies is None:
                cookies = parse_cookies((request.get("headers") or {}).get("cookie", ""))
            return cookies.get(self.name)
        if kind == "query" and path and "?" in path:
            for name, value in parse_qsl(path.partition("?")[2], keep_blank_values=True):
                if name == self.name:
                    return value
        return None


class LoadBalancer:
    """Seed API: ``route``, ``add_server``, ``remove_server``, ``stats``; and the rest."""

    def __init__(
        self,
        servers: Iterable[Server] = (),
        algorithm: str = "round_robin",
        sticky: bool = False,
        rate_limit: int | None = None,
        *,
        sticky_method: str = "ip",
        session_ttl: int = 3600,
        hash_key: str = "client_ip",
        balance_factor: float | None = None,
        client_rate_limit: int | None = None,
        outlier: OutlierDetector | None = None,
        panic_threshold: float = 0.0,
        slow_start: float = 0.0,
        events: EventBus | None = None,
    ) -> None:
        self.events = events or EventBus()
        self.servers: list[Server] = []
        self._by_name: dict[str, Server] = {}
        self.hash_key = HashKey.parse(hash_key)
        self.balance_factor = balance_factor
        self.rate_limit = rate_limit
        self._server_buckets: dict[str, TokenBucket] = {}
        self.client_limiter = ClientRateLimiter(client_rate_limit) if client_rate_limit else None
        self.outlier = outlier or OutlierDetector()
        self.panic_threshold = panic_threshold
        self.slow_start = slow_start
        self.panic = False
        self.in_flight = 0
        # Told of every pick, before the request is in flight (the scenario runner's
        # bounded-load probe): a hook, since compiled callers cannot be wrapped.
        self.on_pick: Callable[[Server], None] | None = None
        self.totals = TrafficStats()
        self.totals.source = self.flush  # reading the totals folds every server's pending figures
        self._second_end = 0.0  # end of the second the request counters are open for
        self._ewma = False  # PeakEwma figures are kept only while that policy is active
        self.sticky = sticky
        self.affinity = SessionAffinity(sticky_method, session_ttl, resolve=self.get_server) if sticky else None
        for server in servers:
            self._admit(server)
        # The ring is always kept, whatever the policy: IP stickiness, the key finder and
        # the dashboard's ring view all read it.
        self.ring = ConsistentHashPolicy(self.servers)
        self._ewma = False
        self.algorithm = canonical_algorithm(algorithm)
        self.policy = self._make_policy(self.algorithm)
        self._generation = -1
        self._eligible: list[Server] = []
        self._next_expiry = math.inf
        self._draining: set[str] = set()

    # -- membership -------------------------------------------------------------------
    def _admit(self, server: Server) -> None:
        # Every path (config, admin API, dashboard, discovery, store) ends here; the name
        # travels in the sticky cookie, so it is checked here once for all of them.
        if server.name != f"{server.host}:{server.port}" and (problem := server_name_problem(server.name)):
            raise ValueError(f"server name {problem}")
        if server.name in self._by_name:
            raise ValueError(f"a server named {server.name!r} already exists")
        self.servers.append(server)
        self._by_name[server.name] = server
        server.stats.parent = self.totals
        if self.rate_limit:
            self._server_buckets[server.name] = TokenBucket(float(self.rate_limit))

    def _membership_changed(self) -> None:
        self.ring.update(self.servers)
        self.policy.update(self.servers)
        bump_generation()

    def get_server(self, name: str) -> Server | None:
        return self._by_name.get(name)

    def require(self, name: str) -> Server:
        """The named server, or KeyError with a message an operator can read."""
        server = self._by_name.get(name)
        if server is None:
            raise KeyError(f"no server named {name!r}")
        return server

    def add_server(self, server: Server, source: str = "operator") -> Server:
        self._admit(server)
        if self.slow_start:
            self._start_slow(server)
        self._membership_changed()
        self._publish(ev.SERVER_ADDED, server, source, address=server.address, weight=server.weight)
        return server

    def remove_server(self, server: Server | str, source: str = "operator") -> Server:
        target = self.require(server if isinstance(server, str) else server.name)
        self.in_flight -= target.active_connections
        self.servers.remove(target)
        del self._by_name[target.name]
        self._server_buckets.pop(target.name, None)
        self._draining.discard(target.name)
        if self.affinity is not None:
            self.affinity.forget_server(target)
        self._membership_changed()
        self._publish(ev.SERVER_REMOVED, target, source)
        return target

    def set_weight(self, name: str, weight: int, source: str = "operator") -> None:
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 1000:
            raise ValueError(f"weight must be a whole number from 0 to 1000, not {weight!r}")
        server = self.require(name)
        if server.weight == weight:
            return
        old, server.weight = server.weight, weight
        self._membership_changed()
        self._publish(ev.WEIGHT_CHANGED, server, source, old=old, new=weight)

    def set_admin_state(self, name: str, state: AdminState | str, source: str = "operator") -> None:
        server = self.require(name)
        new = AdminState(state)
        if server.admin_state is new:
            return
        old, server.admin_state = server.admin_state, new
        if new is AdminState.DRAIN:
            self._draining.add(name)
        else:
            self._draining.discard(name)
        if new is AdminState.READY and old is AdminState.MAINT and self.slow_start:
            self._start_slow(server)
        bump_generation()
        self._publish(ev.ADMIN_STATE_CHANGED, server, source, old=old.value, new=new.value)
        if new is AdminState.DRAIN:
            self._check_drained(server)

    def drain(self, name: str, source: str = "operator") -> None:
        self.set_admin_state(name, AdminState.DRAIN, source)

    def maint(self, name: str, source: str = "operator") -> None:
        self.set_admin_state(name, AdminState.MAINT, source)

    def ready(self, name: str, source: str = "operator") -> None:
        self.set_admin_state(name, AdminState.READY, source)

    def is_drained(self, name: str) -> bool:
        server = self.require(name)
        return server.admin_state is not AdminState.READY and server.active_connections == 0

    def set_algorithm(self, algorithm: str, source: str = "operator", **options: Any) -> None:
        name = canonical_algorithm(algorithm)
        if "hash_key" in options:
            self.hash_key = HashKey.parse(options.pop("hash_key"))
        if "balance_factor" in options:
            self.balance_factor = options.pop("balance_factor")
        old = self.algorithm
        self.algorithm, self.policy = name, self._make_policy(name)
        self._publish(ev.ALGORITHM_CHANGED, None, source, old=old, new=name, hash_key=str(self.hash_key))

    def _make_policy(self, name: str) -> Policy:
        ewma = name == "peak_ewma"
        if ewma and not self._ewma:  # figures from an earlier spell of the policy are stale
            for server in self.servers:
                server.ewma_latency = server.ewma_stamp = 0.0
        self._ewma = ewma
        if name in ("consistent_hash", "bounded_hash"):
            factor = self.balance_factor or (1.25 if name == "bounded_hash" else None)
            policy = ConsistentHashPolicy(self.servers, balance_factor=factor, ring=self.ring.ring)
            policy.in_flight = lambda: self.in_flight
            return policy
        return ALGORITHMS[name](self.servers)

    def _start_slow(self, server: Server) -> None:
        server.slow_start_from = time.monotonic()
        server.slow_start_window = self.slow_start

    # -- health -----------------------------------------------------------------------
    def report_check(self, server: Server, ok: bool, error: str = "", source: str = "health") -> Health | None:
        """Feed one active check result through the server's rise/fall machine."""
        changed = server.health.observe(ok, error)
        if changed is not None:
            if changed is Health.UP and self.slow_start:
                self._start_slow(server)
            bump_generation()
            self._publish(ev.HEALTH_CHANGED, server, source, state=changed.value, error=error)
        return changed

    def set_health(self, name: str, up: bool, source: str = "operator") -> None:
        """Force a health state (an operator's "fail", or state synced from the store)."""
        server = self.require(name)
        if server.health.force(Health.UP if up else Health.DOWN):
            bump_generation()
            self._publish(ev.HEALTH_CHANGED, server, source, state=server.health.state.value)

    # -- routing ----------------------------------------------------------------------
    def eligible(self, now: float | None = None) -> list[Server]:
        """Servers that may take a new request now (all ready ones in panic mode)."""
        if now is None:
            now = time.monotonic()
        if self._generation == state_generation() and now < self._next_expiry:
            return self._eligible
        self._generation = state_generation()
        ready = [s for s in self.servers if s.admin_state is AdminState.READY]
        up = [s for s in ready if s.health.state is Health.UP and not s.is_ejected(now)]
        expiries = [s.ejected_until for s in ready if s.ejected_until > now]
        self._next_expiry = min(expiries, default=math.inf)
        panic = bool(ready) and self.panic_threshold > 0 and len(up) < self.panic_threshold * len(ready)
        if panic != self.panic:
            self.panic = panic
            self._publish(ev.PANIC_CHANGED, None, "engine", panic=panic, healthy=len(up), total=len(ready))
        self._eligible = ready if panic else up
        return self._eligible

    def route(
        self, request: Mapping[str, Any] | None = None, exclude: Collection[Server] = (), now: float | None = None
    ) -> Server | None:
        """Choose the server for one request, or None when nothing may serve it (503).

        ``now`` is the caller's monotonic clock if it has just read it (the proxy reads
        it once per socket read); otherwise the clock is read here, once per route.
        """
        if now is None:
            now = _monotonic()
        if now >= self._second_end:
            self._roll(now)
        if self._generation == _GENERATION[0] and now < self._next_expiry:
            candidates = self._eligible  # eligible()'s cached answer, without the call
        else:
            candidates = self.eligible(now)
        if exclude or self.affinity is not None or self._server_buckets or self.on_pick is not None:
            return self._route_among(candidates, request if request is not None else {}, exclude)
        # The usual request: no retry, no sticky session, no per-server rate limit.
        policy = self.policy
        if not candidates:
            return None
        server = policy.pick(candidates, self.hash_key.extract(request or {}) if policy.uses_key else None)
        if server is not None:
            # Counted only; the rate window is settled when the second ends (_roll).
            server.stats.requests += 1
            self.totals.requests += 1
        return server

    def _route_among(
        self, candidates: list[Server], request: Mapping[str, Any], exclude: Collection[Server]
    ) -> Server | None:
        """``route`` with exclusions (a retry), sticky sessions, per-server rate limits or ``on_pick``."""
        if exclude:
            candidates = [s for s in candidates if s not in exclude]
        if not candidates:
            return None
        affinity = self.affinity
        if affinity is not None and not exclude:
            pinned = affinity.get_server(request)
            if pinned is not None and pinned in candidates and self._take_token(pinned):
                pinned.stats.requests += 1
                self.totals.requests += 1
                if self.on_pick is not None:
                    self.on_pick(pinned)
                return pinned
        key = self.hash_key.extract(request) if self.policy.uses_key else None
        sticky_ip = affinity is not None and affinity.method == "ip" and request.get("client_ip")
        buckets = self._server_buckets
        while candidates:
            if sticky_ip and not exclude:
                server = self.ring.pick(candidates, request["client_ip"])
            else:
                server = self.policy.pick(candidates, key)
            if server is None:
                return None
            if not buckets or self._take_token(server):
                if affinity is not None and isinstance(request, dict):
                    affinity.pin(request, server)
                server.stats.requests += 1
                self.totals.requests += 1
                if self.on_pick is not None:
                    self.on_pick(server)
                return server
            candidates = [s for s in candidates if s is not server]
        return None

    def _take_token(self, server: Server) -> bool:
        bucket = self._server_buckets.get(server.name)
        return bucket is None or bucket.take()

    def _count(self, server: Server, now: float | None = None) -> None:
        server.stats.start(now)
        self.totals.start(now)

    def check_client(self, client: str) -> float | None:
        """Per-client rate limit: None to serve, else seconds for Retry-After (429)."""
        limiter = self.client_limiter
        return None if limiter is None else limiter.check(client)

    def begin(self, server: Server) -> None:
        """A routed request is now in flight on ``server``."""
        server.active_connections += 1
        self.in_flight += 1

    def finish(self, server: Server, status: int | None, seconds: float, failed: bool = False) -> None:
        """A request ended: update load, latency, passive health and drain state.

        A good answer costs a few int operations and one list append; the histograms are
        folded in batches (``flush``), and outlier detection runs only on the error path.
        """
        if server.active_connections > 0:
            server.active_connections -= 1
            self.in_flight -= 1
        if failed or status is None or status >= 500:
            self._finish_bad(server, status, seconds, failed)
        else:
            pending = server.stats.pending
            pending.append(seconds)
            if len(pending) >= FOLD_AT:  # bounded: each fold is a short pause, not a long one
                server.stats.fold_latency()
            if server.consecutive_errors:  # a good answer ends a failure streak (outlier.observe's rule)
                server.consecutive_errors = 0
            if self._ewma:
                PeakEwma.observe(server, seconds, _monotonic())
        if server.admin_state is not _READY and server.name in self._draining:
            self._check_drained(server)

    def _finish_bad(self, server: Server, status: int | None, seconds: float, failed: bool) -> None:
        stats = server.stats
        stats.pending.append(seconds)
        if stats.parent is not self.totals:  # a server this balancer does not hold
            self.totals.pending.append(seconds)
        if failed or (status is not None and status >= 500):
            stats.errors += 1
            stats.error_rate_window.add()
            self.totals.errors += 1
            self.totals.error_rate_window.add()
        if not failed and self._ewma:
            PeakEwma.observe(server, seconds, _monotonic())
        ejected_for = self.outlier.observe(server, status, failed, self.servers)
        if ejected_for is not None:
            self._publish(ev.EJECTED, server, "outlier", seconds=round(ejected_for, 1), ejections=server.ejections)

    def flush(self) -> None:
        """Fold every server's pending latencies into its histogram and the totals'."""
        for server in self.servers:
            if server.stats.pending:
                server.stats.fold_latency()

    def _roll(self, now: float) -> None:
        """A new second: settle the last one's request counts in the rate windows."""
        second = int(now)
        self._second_end = second + 1.0
        for server in self.servers:
            server.stats.roll(second)
        self.totals.roll(second)

    def _check_drained(self, server: Server) -> None:
        if server.active_connections == 0 and server.name in self._draining:
            self._draining.discard(server.name)
            self._publish(ev.DRAINED, server, "engine")

    def tick(self) -> None:
        """Periodic housekeeping: announce servers whose ejection ended."""
        now = time.monotonic()
        self._roll(now)
        for server in self.servers:
            if server.ejected_until and server.ejected_until <= now:
                server.ejected_until = 0.0
                bump_generation()
                self._publish(ev.UNEJECTED, server, "outlier")

    # -- views --------------------------------------------------------------------------
    def locate(self, key: str, fallbacks: int = 3) -> dict[str, Any]:
        """Where a key lands on the ring, who serves it now, and who would if the owner failed."""
        location: KeyLocation = self.ring.ring.locate(key, fallbacks)
        candidates = self.eligible()
        serving = self.policy.pick(candidates, key) if self.policy.uses_key else None
        if_owner_fails = None
        if location.owner is not None:
            others = [s for s in candidates if s.name != location.owner]
            chosen = self.ring.pick(others, key)
            if_owner_fails = chosen.name if chosen else None
        return {
            "key": key,
            "hash": location.hash,
            "position": location.position,
            "owner": location.owner,
            "fallbacks": list(location.fallbacks),
            "serving": serving.name if serving else None,
            "if_owner_fails": if_owner_fails,
            "algorithm": self.algorithm,
        }

    def stats(self) -> dict[str, Any]:
        self.flush()
        totals = self.totals.to_dict()
        return {
            "algorithm": self.algorithm,
            "hash_key": str(self.hash_key),
            "panic": self.panic,
            "requests_per_server": {s.name: s.stats.requests for s in self.servers},
            "connections_per_server": {s.name: s.active_connections for s in self.servers},
            "error_rate_per_server": {s.name: round(s.stats.error_rate, 6) for s in self.servers},
            "servers": [s.to_dict() for s in self.servers],
            "healthy": sum(1 for s in self.servers if s.healthy),
            "total": len(self.servers),
            **totals,
        }

    def _publish(self, kind: str, server: Server | None, source: str, **detail: Any) -> None:
        self.events.publish(Event(kind, server.name if server else None, detail, source))
