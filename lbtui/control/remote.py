"""Control over a headless lbtui through its admin API (``lbtui attach URL``).

The balancer keeps running when this screen closes, and several operators can attach
at once. Every call has a timeout; a lost connection raises ``Disconnected`` (the app
shows "disconnected, retrying") and the event stream reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from engine.balancer import ALGORITHMS as ENGINE_ALGORITHMS
from lbtui.control.base import (
    AnalyticsView,
    Control,
    ControlError,
    Disconnected,
    EventCallback,
    EventView,
    Link,
    LocationView,
    RingView,
    ServerView,
    TotalsView,
    normalize_points,
    parse_status,
)

HISTORY = 12
ALGORITHMS = list(ENGINE_ALGORITHMS)  # the engine's list: a new policy shows up here by itself


class RemoteControl(Control):
    """Talks JSON to ``/api/*`` and reads ``/api/events`` (Server-Sent Events)."""

    embedded = False

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 3.0,
                 status_every: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.status_every = status_every
        self._session: aiohttp.ClientSession | None = None
        self._connected = False
        self._subscribers: list[EventCallback] = []
        self._stream: asyncio.Task[None] | None = None
        self._history: dict[str, deque[float]] = {}
        self._sampled_at = -1.0
        self._status: tuple[tuple[str, ...], dict[str, str]] = ((), {})
        self._status_at = -1e9

    @property
    def link(self) -> Link:
        return Link.CONNECTED if self._connected else Link.DISCONNECTED

    @property
    def description(self) -> str:
        return f"attached to {self.base_url}"

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        self._stream = asyncio.create_task(self._read_events(), name="lbtui-remote-events")

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            await asyncio.gather(self._stream, return_exceptions=True)
            self._stream = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ---------------------------------------------------------------------------
    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise Disconnected("not started")
        try:
            async with self._session.request(
                method, self.base_url + path, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._connected = False
            raise Disconnected(f"{self.base_url}: {exc.__class__.__name__}") from None
        self._connected = True
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"error": text[:200]}
        if status >= 400:
            reason = data.get("error") if isinstance(data, dict) else None
            raise ControlError(reason or f"HTTP {status}")
        return data

    # -- reads --------------------------------------------------------------------------
    async def servers(self) -> list[ServerView]:
        data = await self._request("GET", "/api/servers")
        rows = data.get("servers", []) if isinstance(data, dict) else data
        now = time.monotonic()
        sample = now - self._sampled_at >= 1.0
        if sample:
            self._sampled_at = now
        views = []
        for row in rows:
            history = self._history.setdefault(str(row["name"]), deque(maxlen=HISTORY))
            if sample:
                history.append(float(row.get("rps", 0.0)))
            views.append(ServerView.from_dict(row, tuple(history)))
        return views

    async def totals(self) -> TotalsView:
        stats = await self._request("GET", "/api/stats")
        now = time.monotonic()
        if now - self._status_at >= self.status_every:  # components change slowly
            self._status_at = now
            with contextlib.suppress(ControlError):
                self._status = parse_status(await self._request("GET", "/api/status"))
        listeners, components = self._status
        return TotalsView.from_stats(stats, listeners, components)

    async def analytics(self) -> AnalyticsView:
        """From GET /api/status; the view asks at most once a second."""
        status = await self._request("GET", "/api/status")
        components = status.get("components") if isinstance(status, dict) else None
        return AnalyticsView.from_status((components or {}).get("analytics"))

    async def ring(self, max_points: int = 4096) -> RingView:
        data = await self._request("GET", f"/api/ring?max_points={max_points}")
        if data.get("algorithm") == "maglev" and data.get("maglev_shares"):
            return RingView([], dict(data["maglev_shares"]), "maglev")
        return RingView(normalize_points(data.get("points")), dict(data.get("shares") or {}), "ring")

    async def locate(self, key: str) -> LocationView:
        return LocationView.from_dict(await self._request("GET", f"/api/route?key={quote(key, safe='')}"))

    async def algorithms(self) -> list[str]:
        return list(ALGORITHMS)

    # -- actions ------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return f"/api/servers/{quote(name, safe='')}"

    async def drain(self, name: str) -> None:
        await self._request("POST", self._path(name) + "/drain")

    async def maint(self, name: str) -> None:
        await self._request("POST", self._path(name) + "/maint")

    async def ready(self, name: str) -> None:
        await self._request("POST", self._path(name) + "/ready")

    async def set_health(self, name: str, up: bool) -> None:
        await self._request("POST", self._path(name) + "/health", {"up": up})

    async def set_weight(self, name: str, weight: int) -> None:
        await self._request("PUT", self._path(name) + "/weight", {"weight": weight})

    async def add_server(self, name: str, host: str, port: int, weight: int = 1) -> None:
        await self._request("POST", "/api/servers", {"name": name, "host": host, "port": port, "weight": weight})

    async def remove_server(self, name: str) -> None:
        await self._request("DELETE", self._path(name))

    async def set_algorithm(self, algorithm: str, hash_key: str | None = None) -> None:
        body: dict[str, Any] = {"algorithm": algorithm}
        if hash_key:
            body["hash_key"] = hash_key
        await self._request("PUT", "/api/algorithm", body)

    # -- events -------------------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _publish(self, event: EventView) -> None:
        for callback in tuple(self._subscribers):
            callback(event)

    async def _read_events(self) -> None:
        """Follow /api/events for the life of the app, reconnecting with backoff."""
        backoff = 0.25
        announced_loss = False
        while True:
            try:
                assert self._session is not None
                timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=60)
                async with self._session.get(self.base_url + "/api/events", timeout=timeout) as response:
                    if response.status != 200:
                        raise ControlError(f"event stream: HTTP {response.status}")
                    self._connected = True
                    if announced_loss:
                        self._publish(EventView("reconnected", None, {"url": self.base_url}, "attach", time.time()))
                        announced_loss = False
                    backoff = 0.25
                    async for raw in response.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if line.startswith("data:"):
                            with contextlib.suppress(ValueError, TypeError, AttributeError):
                                self._publish(EventView.from_any(json.loads(line[5:].strip())))
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ControlError) as exc:
                if not announced_loss:
                    self._publish(EventView("disconnected", None, {"reason": exc.__class__.__name__}, "attach",
                                            time.time()))
                    announced_loss = True
                self._connected = False
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)
