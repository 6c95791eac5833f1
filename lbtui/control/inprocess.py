"""Control over a LoadBalancer in the same process and event loop (``lbtui demo``/``run``).

Only the balancer's public operator API is used. Engine errors (unknown server, bad
weight) become ``ControlError`` so the app shows them as one line.

Reads run four times a second in the proxy's own event loop, so they are kept cheap:
what changes from one moment to the next (state, weight, connections, counts) is read
every time, while what only moves once a second anyway (requests/s over whole seconds,
all-time latency percentiles, the sparkline sample, the gateway's status) is computed
at most once a second and reused in between.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from engine.accesslog import AccessRecord
from engine.balancer import ALGORITHMS, LoadBalancer
from engine.gateway import Gateway
from engine.proxy.http import HttpProxy
from engine.maglev import Maglev
from engine.server import Server
from lbtui.control.base import (
    AnalyticsView,
    Control,
    ControlError,
    EventCallback,
    EventView,
    LocationView,
    RequestView,
    RingView,
    ServerView,
    TotalsView,
    normalize_points,
    parse_status,
)
from lbtui.control.sampler import RequestSampler, RequestSource

HISTORY = 12  # sparkline samples kept per server, one per second
STATS_SECONDS = 1.0  # rates, percentiles and the gateway status are recomputed this often
STAGGER = 4  # per-server figures are spread over this many refreshes (four a second)

# A gateway status dict (what GET /api/status answers): its listeners and components.
StatusProvider = Callable[[], Mapping[str, Any]]


def observe_requests(gateway: Gateway, observer: Callable[[AccessRecord], None]) -> Callable[[], None]:
    """Hook ``observer`` on every HTTP proxy of ``gateway``; returns the undo."""
    proxies = [x.proxy for x in gateway.listeners if isinstance(x.proxy, HttpProxy)]
    for proxy in proxies:
        proxy.observers.append(observer)

    def remove() -> None:
        for proxy in proxies:
            if observer in proxy.observers:
                proxy.observers.remove(observer)

    return remove


class InProcessControl(Control):
    """The embedded balancer: reads are synchronous snapshots, actions call the engine."""

    embedded = True

    def __init__(
        self,
        lb: LoadBalancer,
        *,
        listeners: Sequence[str] = (),
        status: StatusProvider | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_source: RequestSource | None = None,
    ) -> None:
        self.lb = lb
        self._request_source = request_source
        # A sample stands for the requests routed since the last one.
        self.sampler = RequestSampler(clock=clock, count=lambda: lb.totals.requests)
        self.listeners = tuple(listeners)
        self._status = status
        self._on_shutdown = on_shutdown
        self._clock = clock
        self._history: dict[str, deque[float]] = {}
        self._sampled_at = float("-inf")
        # The last full figures per server (Server.to_dict) and for the totals, reused
        # between the once-a-second recomputations.
        self._rows: dict[str, dict[str, Any]] = {}
        self._due: dict[str, float] = {}  # when each server's full figures are next due
        self._totals: dict[str, Any] = {}
        self._totals_at = float("-inf")
        self._status_view: tuple[tuple[str, ...], dict[str, str]] = ((), {})
        self._status_at = float("-inf")

    async def start(self) -> None:
        if self._request_source is not None:
            self.sampler.start(self._request_source)

    async def close(self) -> None:
        self.sampler.stop()

    @classmethod
    def for_gateway(cls, gateway: Gateway, **options: Any) -> InProcessControl:
        """The control of a running Gateway, sampling the requests of its HTTP listeners."""
        return cls(gateway.lb, status=gateway.status, request_source=partial(observe_requests, gateway), **options)

    # -- reads --------------------------------------------------------------------------
    def sampled_request(self) -> RequestView | None:
        return self.sampler.take()

    async def servers(self) -> list[ServerView]:
        now = self._clock()
        servers = self.lb.servers
        rows, histories, due = self._rows, self._history, self._due
        if now - self._sampled_at >= STATS_SECONDS:  # forget servers that left
            self._sampled_at = now
            alive = {s.name for s in servers}
            for name in [n for n in histories if n not in alive]:
                del histories[name]
                rows.pop(name, None)
                due.pop(name, None)
        views = []
        for index, server in enumerate(servers):
            name = server.name
            row = rows.get(name)
            at = due.get(name)
            sample = row is None or at is None or now >= at
            if sample:
                row = rows[name] = server.to_dict()
                # Each server's full figures come once a second, a quarter of the pool per
                # refresh (phases kept across pauses), so no refresh carries them all.
                if at is None:
                    due[name] = now + STATS_SECONDS * (1 + (index % STAGGER) / STAGGER)
                else:
                    due[name] = at + STATS_SECONDS * (int((now - at) / STATS_SECONDS) + 1)
            else:  # between samples: only the figures that move faster than once a second
                stats = server.stats
                status = server.status()
                row.update(
                    weight=server.weight,
                    effective_weight=server.effective_weight,
                    state=server.health.state.value,
                    status=status,
                    admin_state=server.admin_state.value,
                    ejected=status.startswith("ejected"),
                    active_connections=server.active_connections,
                    requests=stats.requests,
                    errors=stats.errors,
                )
            history = histories.get(name)
            if history is None:
                history = histories[name] = deque(maxlen=HISTORY)
            if sample:
                history.append(float(row.get("rps", 0.0)))
            views.append(ServerView.from_dict(row, tuple(history)))
        return views

    async def totals(self) -> TotalsView:
        lb = self.lb
        now = self._clock()
        if now - self._totals_at >= STATS_SECONDS or not self._totals:
            self._totals_at = now
            # The overall figures alone: ``lb.stats()`` would also build every server's
            # dict, which ``servers()`` has just done.
            self._totals = lb.totals.to_dict()
        else:
            self._totals.update(requests=lb.totals.requests, errors=lb.totals.errors)
        servers = lb.servers
        stats = dict(self._totals, algorithm=lb.algorithm, hash_key=str(lb.hash_key), panic=lb.panic,
                     healthy=sum(1 for s in servers if s.healthy), total=len(servers))
        listeners, components = self._status_parts(now)
        return TotalsView.from_stats(stats, listeners, components)

    def _status_parts(self, now: float) -> tuple[tuple[str, ...], dict[str, str]]:
        """Listeners and component states, from the gateway's status at most once a second."""
        if self._status is None:
            return self.listeners, {}
        if now - self._status_at >= STATS_SECONDS:
            self._status_at = now
            listeners, components = self.listeners, {}
            try:
                found, components = parse_status(self._status())
            except Exception as exc:  # a component's bug must not blank the dashboard
                components = {"status": f"unavailable ({exc.__class__.__name__})"}
            else:
                listeners = listeners or found
            self._status_view = (listeners, components)
        return self._status_view

    async def analytics(self) -> AnalyticsView:
        if self._status is None:
            return AnalyticsView.unavailable("no analytics: this balancer runs without its workers")
        try:
            components = self._status().get("components") or {}
        except Exception as exc:  # noqa: BLE001 - a component's bug must not break the view
            return AnalyticsView.unavailable(f"status unavailable ({exc.__class__.__name__})")
        return AnalyticsView.from_status(components.get("analytics"))

    async def ring(self, max_points: int = 4096) -> RingView:
        if self.lb.algorithm == "maglev":
            return self._maglev_view(max_points)
        snapshot = self.lb.ring.ring.snapshot(max_points)
        return RingView(normalize_points(snapshot.points), dict(snapshot.shares), "ring")

    def _maglev_view(self, max_points: int) -> RingView:
        # Maglev serves only the eligible servers: show the table the next pick would use.
        available = {s.name: s.weight for s in self.lb.eligible()}
        table = Maglev(available, getattr(self.lb.policy, "table_size", 65537)) if available else None
        if table is None:
            return RingView([], {}, "maglev")
        snapshot = table.snapshot(max_points)
        return RingView(normalize_points(snapshot.points), dict(snapshot.shares), "maglev")

    async def locate(self, key: str) -> LocationView:
        return LocationView.from_dict(self.lb.locate(key))

    async def algorithms(self) -> list[str]:
        return list(ALGORITHMS)

    # -- actions ------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except KeyError as exc:
            raise ControlError(str(exc.args[0]) if exc.args else "not found") from None
        except ValueError as exc:
            raise ControlError(str(exc)) from None

    async def drain(self, name: str) -> None:
        self._call(self.lb.drain, name)

    async def maint(self, name: str) -> None:
        self._call(self.lb.maint, name)

    async def ready(self, name: str) -> None:
        self._call(self.lb.ready, name)

    async def set_health(self, name: str, up: bool) -> None:
        self._call(self.lb.set_health, name, up)

    async def set_weight(self, name: str, weight: int) -> None:
        self._call(self.lb.set_weight, name, weight)

    async def add_server(self, name: str, host: str, port: int, weight: int = 1) -> None:
        self._call(self.lb.add_server, Server(host, port, weight, name=name))

    async def remove_server(self, name: str) -> None:
        self._call(self.lb.remove_server, name)

    async def set_algorithm(self, algorithm: str, hash_key: str | None = None) -> None:
        options = {"hash_key": hash_key} if hash_key else {}
        self._call(self.lb.set_algorithm, algorithm, **options)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        return self.lb.events.subscribe(lambda event: callback(EventView.from_any(event)))

    async def shutdown(self) -> None:
        if self._on_shutdown is not None:
            await self._on_shutdown()
