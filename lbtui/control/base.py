"""The one interface the terminal app talks to, so widgets never touch engine internals.

Two implementations: ``InProcessControl`` (the engine lives in the same event loop) and
``RemoteControl`` (a headless lbtui's admin API). The views are plain slots dataclasses,
so the UI renders the same thing whichever side of the wire the balancer is on.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

EventCallback = Callable[["EventView"], None]


class ControlError(Exception):
    """An operator request the balancer refused (unknown server, bad weight...): shown, not raised."""


class Disconnected(ControlError):
    """The remote balancer did not answer; the app shows "disconnected, retrying"."""


class Link(str, Enum):
    """How the app is connected to the balancer it steers."""

    EMBEDDED = "embedded"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected, retrying"


@dataclass(slots=True)
class ServerView:
    """One row of the servers table."""

    name: str
    host: str
    port: int
    weight: int
    effective_weight: float
    state: str  # health: up / down
    status: str  # the health machine's progress: "up 2/3 fails", "ejected 30s"
    admin_state: str  # ready / drain / maint
    active_connections: int = 0
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ejected: bool = False
    rps_history: tuple[float, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def available(self) -> bool:
        """Would take new requests: ready, up, not ejected."""
        return self.admin_state == "ready" and self.state == "up" and not self.ejected

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], history: tuple[float, ...] = ()) -> ServerView:
        status = str(data.get("status") or data.get("state") or "up")
        return cls(
            name=str(data["name"]),
            host=str(data.get("host", "")),
            port=int(data.get("port", 0)),
            weight=int(data.get("weight", 1)),
            effective_weight=float(data.get("effective_weight", data.get("weight", 1))),
            state=str(data.get("state", "up")),
            status=status,
            admin_state=str(data.get("admin_state", "ready")),
            active_connections=int(data.get("active_connections", 0)),
            requests=int(data.get("requests", 0)),
            errors=int(data.get("errors", 0)),
            rps=float(data.get("rps", 0.0)),
            p50_ms=float(data.get("p50_ms", 0.0)),
            p99_ms=float(data.get("p99_ms", 0.0)),
            ejected=bool(data.get("ejected", status.startswith("ejected"))),
            rps_history=history,
        )


@dataclass(slots=True)
class TotalsView:
    """The totals bar: the whole balancer at a glance."""

    rps: float = 0.0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    algorithm: str = ""
    hash_key: str = ""
    healthy: int = 0
    total: int = 0
    panic: bool = False
    listeners: tuple[str, ...] = ()
    components: dict[str, str] = field(default_factory=dict)  # store / workers -> status

    @classmethod
    def from_stats(
        cls, stats: Mapping[str, Any], listeners: tuple[str, ...] = (), components: Mapping[str, str] | None = None
    ) -> TotalsView:
        return cls(
            rps=float(stats.get("rps", 0.0)),
            error_rate=float(stats.get("error_rate", 0.0)),
            p50_ms=float(stats.get("p50_ms", 0.0)),
            p99_ms=float(stats.get("p99_ms", 0.0)),
            requests=int(stats.get("requests", 0)),
            errors=int(stats.get("errors", 0)),
            algorithm=str(stats.get("algorithm", "")),
            hash_key=str(stats.get("hash_key", "")),
            healthy=int(stats.get("healthy", 0)),
            total=int(stats.get("total", 0)),
            panic=bool(stats.get("panic", False)),
            listeners=tuple(listeners),
            components=dict(components or {}),
        )


@dataclass(slots=True)
class RingView:
    """The hash space for drawing: sampled points (position 0..1, owner) and exact shares.

    ``kind`` is "ring" for consistent hashing or "maglev" (then the shares are the
    lookup table's and the points are table slots in order).
    """

    points: list[tuple[float, str]] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)
    kind: str = "ring"


@dataclass(slots=True)
class LocationView:
    """The key finder's answer for one key."""

    key: str
    hash: int | str
    position: float
    owner: str | None
    fallbacks: list[str]
    serving: str | None
    if_owner_fails: str | None
    algorithm: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocationView:
        return cls(
            key=str(data.get("key", "")),
            hash=data.get("hash", 0),
            position=float(data.get("position", 0.0)),
            owner=data.get("owner"),
            fallbacks=[str(f) for f in data.get("fallbacks") or []],
            serving=data.get("serving"),
            if_owner_fails=data.get("if_owner_fails"),
            algorithm=str(data.get("algorithm", "")),
        )


@dataclass(slots=True)
class EventView:
    """An engine, store or worker event as the log pane shows it."""

    kind: str
    server: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    source: str = "engine"
    at: float = 0.0

    @classmethod
    def from_any(cls, event: Any) -> EventView:
        data = event if isinstance(event, Mapping) else event.to_dict()
        return cls(
            kind=str(data.get("kind", "event")),
            server=data.get("server"),
            detail=dict(data.get("detail") or {}),
            source=str(data.get("source", "engine")),
            at=float(data.get("at", 0.0)),
        )

    def describe(self) -> str:
        who = f"{self.server}: " if self.server else ""
        parts = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{who}{self.kind}" + (f" ({parts})" if parts else "")

    @property
    def changes_ring(self) -> bool:
        """Events after which the ring view should be fetched again."""
        return self.kind in RING_EVENTS


@dataclass(slots=True)
class RequestView:
    """One sampled request for the log pane; ``among`` is how many it stands for."""

    at: float
    client: str
    method: str
    path: str
    status: int
    server: str | None
    total_ms: float
    among: int = 1

    def describe(self, max_path: int = 48) -> str:
        path = self.path if len(self.path) <= max_path else self.path[: max_path - 1] + "…"
        text = f"{self.method} {path} → {self.server or '-'} {self.status} {self.total_ms:.1f}ms from {self.client}"
        return text + (f" (1 of {self.among})" if self.among > 1 else "")


@dataclass(slots=True)
class MinuteView:
    """One minute of the analytics window (zeros for a minute without traffic)."""

    minute: int  # epoch minute
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    servers: dict[str, int] = field(default_factory=dict)

    @property
    def start(self) -> float:
        """Epoch seconds at the start of the minute."""
        return self.minute * 60.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinuteView:
        return cls(
            minute=int(data["minute"]),
            requests=int(data.get("requests", 0)),
            errors=int(data.get("errors", 0)),
            p50_ms=float(data.get("p50_ms", 0.0)),
            p99_ms=float(data.get("p99_ms", 0.0)),
            servers={str(k): int(v) for k, v in (data.get("servers") or {}).items()},
        )


@dataclass(slots=True)
class AnalyticsView:
    """The last hour per minute, as the analytics worker rolled it up.

    ``minutes`` covers the whole window oldest first, gaps filled with zero minutes.
    ``reason`` is empty when the figures are real, else why there are none (no worker,
    a worker error), so the view can say so instead of drawing an empty hour.
    """

    minutes: list[MinuteView] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    peak: MinuteView | None = None
    lowest: MinuteView | None = None
    servers: dict[str, int] = field(default_factory=dict)  # requests per server over the window
    current: int = 0  # the epoch minute the worker's clock is in (still being counted)
    reason: str = ""

    @property
    def available(self) -> bool:
        return not self.reason

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def shares(self) -> dict[str, float]:
        """Each server's share of the window's requests, largest first."""
        total = sum(self.servers.values())
        ranked = sorted(self.servers.items(), key=lambda item: (-item[1], item[0]))
        return {name: count / total for name, count in ranked} if total else {}

    @classmethod
    def unavailable(cls, reason: str) -> AnalyticsView:
        return cls(reason=reason)

    @classmethod
    def from_status(cls, component: Any) -> AnalyticsView:
        """From ``components["analytics"]`` of a gateway status (GET /api/status)."""
        if component is None:
            return cls.unavailable("no analytics worker on this balancer (it runs with the store)")
        if not isinstance(component, Mapping):
            return cls.unavailable(f"analytics status unreadable: {str(component)[:80]}")
        if "recent" not in component or "window" not in component:
            reason = component.get("error") or "this balancer's analytics worker reports no recent window"
            return cls.unavailable(str(reason))
        try:
            window = component["window"]
            first, last = int(window["first"]), int(window["last"])
            known = {m.minute: m for m in map(MinuteView.from_dict, component["recent"] or ())}
        except (KeyError, TypeError, ValueError) as exc:
            return cls.unavailable(f"analytics status unreadable: {exc.__class__.__name__}")
        minutes = [known.get(m) or MinuteView(m) for m in range(first, last + 1)]
        servers: dict[str, int] = {}
        for minute in minutes:
            for name, count in minute.servers.items():
                servers[name] = servers.get(name, 0) + count

        def pick(brief: Any) -> MinuteView | None:
            if not isinstance(brief, Mapping) or "minute" not in brief:
                return None
            return known.get(int(brief["minute"])) or MinuteView.from_dict(brief)

        return cls(
            minutes=minutes,
            requests=sum(m.requests for m in minutes),
            errors=sum(m.errors for m in minutes),
            peak=pick(component.get("peak_minute")),
            lowest=pick(component.get("lowest_minute")),
            servers=servers,
            current=int(window.get("current", last)),
        )


RING_EVENTS = frozenset(
    {
        "server_added",
        "server_removed",
        "weight_changed",
        "health_changed",
        "admin_state_changed",
        "ejected",
        "unejected",
        "algorithm_changed",
        "config_reloaded",
    }
)


class Control(ABC):
    """What the operator's terminal may read from and ask of a balancer."""

    embedded: bool = False
    """True when quitting the app stops the balancer (it then asks first)."""

    @property
    def link(self) -> Link:
        return Link.EMBEDDED if self.embedded else Link.CONNECTED

    @property
    def description(self) -> str:
        """Where the balancer is, for the title bar."""
        return "embedded"

    async def start(self) -> None:
        """Open connections and background readers; the app calls it once on mount."""

    async def close(self) -> None:
        """Release what ``start`` opened (not the balancer itself)."""

    @abstractmethod
    async def servers(self) -> list[ServerView]: ...

    @abstractmethod
    async def totals(self) -> TotalsView: ...

    async def snapshot(self) -> tuple[list[ServerView], TotalsView]:
        """Servers and totals for one refresh."""
        servers, totals = await asyncio.gather(self.servers(), self.totals())
        return servers, totals

    @abstractmethod
    async def ring(self, max_points: int = 4096) -> RingView: ...

    @abstractmethod
    async def locate(self, key: str) -> LocationView: ...

    @abstractmethod
    async def algorithms(self) -> list[str]: ...

    @abstractmethod
    async def drain(self, name: str) -> None: ...

    @abstractmethod
    async def maint(self, name: str) -> None: ...

    @abstractmethod
    async def ready(self, name: str) -> None: ...

    @abstractmethod
    async def set_health(self, name: str, up: bool) -> None: ...

    @abstractmethod
    async def set_weight(self, name: str, weight: int) -> None: ...

    @abstractmethod
    async def add_server(self, name: str, host: str, port: int, weight: int = 1) -> None: ...

    @abstractmethod
    async def remove_server(self, name: str) -> None: ...

    @abstractmethod
    async def set_algorithm(self, algorithm: str, hash_key: str | None = None) -> None: ...

    @abstractmethod
    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback`` with each event; returns the function that stops it."""

    def sampled_request(self) -> RequestView | None:
        """A sample of the request log when one is due (about two a second), else None.

        Only the embedded balancer has one: the admin API does not stream requests.
        """
        return None

    async def analytics(self) -> AnalyticsView:
        """The last hour per minute from the balancer's analytics worker, or why not."""
        return AnalyticsView.unavailable("analytics are not available through this connection")

    async def shutdown(self) -> None:
        """Embedded: stop the balancer gracefully. Remote: nothing (it keeps running)."""


def normalize_points(raw: Any) -> list[tuple[float, str]]:
    """Ring points as (position 0..1, owner) whatever shape the ring snapshot uses."""
    points: list[tuple[float, str]] = []
    for item in raw or ():
        if isinstance(item, Mapping):
            pos, owner = item.get("position", item.get("pos", 0.0)), item.get("owner", item.get("node"))
        elif isinstance(item, (tuple, list)):
            pos, owner = item[0], item[1]
        else:
            pos, owner = item.position, item.owner
        points.append((float(pos), str(owner)))
    if points and max(p for p, _ in points) > 1.0:
        top = max(p for p, _ in points)
        scale = float(2**32) if top < 2**32 else float(2**64)
        points = [(p / scale, o) for p, o in points]
    points.sort()
    return points


def summarize_component(value: Any) -> str:
    """One word or two for a worker's or the store's status dict."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        return str(value)
    if value.get("error") and not value.get("state"):
        return "error"
    for key in ("state", "status"):
        if isinstance(value.get(key), str):
            state = value[key]
            return f"{state} (error)" if value.get("last_error") and state not in ("error", "failed") else state
    if "connected" in value:
        return "connected" if value["connected"] else "disconnected"
    if "running" in value:
        return "running" if value["running"] else "stopped"
    return "ok"


def parse_status(status: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Listener addresses and component states from a gateway status (GET /api/status)."""
    listeners: list[str] = []
    for item in status.get("listeners") or ():
        if isinstance(item, Mapping):
            listeners.append(str(item.get("url") or f"{item.get('host')}:{item.get('port')}"))
        else:
            listeners.append(str(item))
    components = {str(k): summarize_component(v) for k, v in (status.get("components") or {}).items()}
    return tuple(listeners), components
