"""A whole loopback deployment for scenarios and tests: backends, balancer, proxy, checks.

Everything listens on 127.0.0.1 with ports the OS picks, and ``stop`` tears it all down
(tasks cancelled, sockets closed), so a scenario can be run from a test or a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from cloud.backend import BackendHandle, start_backend
from engine.balancer import LoadBalancer
from engine.events import Event
from engine.health import HealthChecker
from engine.proxy.http import HttpProxy
from engine.proxy.settings import ProxySettings
from engine.proxy.tls import self_signed_pair, server_context
from engine.server import Server

HOST = "127.0.0.1"


@dataclass(slots=True)
class TimedEvent:
    at: float  # time.monotonic() when it was published
    event: Event


@dataclass(slots=True)
class Cluster:
    """Backends behind an ``HttpProxy`` routed by one ``LoadBalancer``."""

    backends: int = 3
    algorithm: str = "round_robin"
    lb_options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)
    settings: ProxySettings | None = None
    tls: bool = False
    health_interval: float | None = None  # seconds between active checks; None: no checks
    prefix: str = "web"
    lb: LoadBalancer = field(init=False)
    proxy: HttpProxy = field(init=False)
    handles: dict[str, BackendHandle] = field(default_factory=dict, init=False)
    events: list[TimedEvent] = field(default_factory=list, init=False)
    ca_file: str | None = field(default=None, init=False)
    _checker: HealthChecker | None = field(default=None, init=False)
    _ticker: asyncio.Task[None] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)
    _unsubscribe: Any = field(default=None, init=False)
    _counter: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.proxy.port}"

    @property
    def workdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lbtui-scenario-")
        return self._tmp.name

    async def start(self) -> Cluster:
        self.lb = LoadBalancer([], self.algorithm, **self.lb_options)
        self._unsubscribe = self.lb.events.subscribe(lambda e: self.events.append(TimedEvent(time.monotonic(), e)))
        try:
            for _ in range(self.backends):
                await self.add_backend()
            self.proxy = HttpProxy(self.lb, self.settings or ProxySettings())
            context = None
            if self.tls:
                cert, key = await asyncio.to_thread(self_signed_pair, self.workdir)
                context, self.ca_file = server_context(cert, key), cert
            await self.proxy.start(HOST, 0, context)
            if self.health_interval:
                self._checker = HealthChecker(
                    self.health_interval,
                    timeout=max(2.0, self.health_interval),  # a busy CI box must not fail a probe
                    healthy_threshold=2,
                    unhealthy_threshold=2,
                    servers=lambda: list(self.lb.servers),
                    http_path="/health",
                    report=self.lb.report_check,
                )
                self._checker.start()
            self._ticker = asyncio.create_task(self._tick(), name="lbtui-scenario-tick")
        except BaseException:
            await self.stop()
            raise
        return self

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.lb.tick()

    def next_name(self) -> str:
        self._counter += 1
        return f"{self.prefix}{self._counter}"

    async def add_backend(self, name: str | None = None, **options: Any) -> BackendHandle:
        name = name or self.next_name()
        handle = await start_backend(name, HOST, 0, **{**self.backend_options, **options})
        self.handles[name] = handle
        self.lb.add_server(Server(HOST, handle.port, name=name), source="scenario")
        return handle

    async def remove_backend(self, name: str) -> None:
        """Take a server out of the balancer, then stop its backend."""
        self.lb.remove_server(name, source="scenario")
        handle = self.handles.pop(name)
        await handle.stop()

    async def kill_backend(self, name: str) -> float:
        """Kill a backend abruptly (the balancer is not told); returns when, in monotonic time."""
        killed_at = time.monotonic()
        await self.handles[name].kill()
        return killed_at

    def first_event(self, kind: str, server: str, after: float) -> TimedEvent | None:
        for timed in self.events:
            if timed.at >= after and timed.event.kind == kind and timed.event.server == server:
                return timed
        return None

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._checker is not None:
            await self._checker.aclose()
            self._checker = None
        proxy = getattr(self, "proxy", None)
        if proxy is not None:
            await proxy.stop(1.0)
        for handle in list(self.handles.values()):
            await handle.stop()
        self.handles.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> Cluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
