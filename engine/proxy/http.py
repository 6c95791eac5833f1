"""The HTTP/1.1 reverse proxy: listener, connection registry, timeouts and graceful stop.

The per-request work lives in ``client.ClientConnection`` (callbacks on llhttp events)
and ``pool.UpstreamConnection``. This module owns what spans connections: the listening
socket, the upstream pool, a single sweeper task that enforces every timeout (one
periodic pass instead of a timer per request), and the access-record fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable

from engine.accesslog import AccessLog, AccessRecord
from engine.balancer import LoadBalancer
from engine.proxy.client import ClientConnection
from engine.proxy.pool import UpstreamPool
from engine.proxy.settings import ProxySettings

log = logging.getLogger(__name__)


class HttpProxy:
    """Reverse proxy for HTTP/1.1 routing every request through ``lb``."""

    def __init__(
        self, lb: LoadBalancer, settings: ProxySettings | None = None, access_log: AccessLog | None = None
    ) -> None:
        self.lb = lb
        self.settings = settings or ProxySettings()
        self.access_log = access_log
        self.observers: list[Callable[[AccessRecord], None]] = []
        self.pool = UpstreamPool(self.settings.pool_size, self.settings.idle_timeout, lb.totals)
        self.tls = False
        self.port = 0
        self.host = ""
        self.active_requests = 0
        # Wall clock = monotonic + offset: access records get their time without a
        # time.time() call per request (the sweeper refreshes it against clock steps).
        self.wall_offset = time.time() - time.monotonic()
        self.connections = 0
        self.accepted = 0
        self._conns: set[ClientConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._emptied: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.get_running_loop()
        self.tls = ssl_context is not None
        self._server = await loop.create_server(
            lambda: ClientConnection(self),
            host,
            port,
            ssl=ssl_context,
            backlog=1024,
            reuse_address=True,
            ssl_handshake_timeout=self.settings.header_timeout if ssl_context is not None else None,
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._sweeper = loop.create_task(self._sweep(), name=f"lbtui-proxy-sweeper:{self.port}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish within ``grace``, then close the rest."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        self._emptied = asyncio.Event()
        for conn in list(self._conns):
            conn.shutdown()
        if self._conns:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), grace)
        for conn in list(self._conns):
            conn.abort()
        self.pool.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    @property
    def listening(self) -> bool:
        return self._server is not None

    # -- called by connections -------------------------------------------------------------
    def connection_opened(self, conn: ClientConnection) -> None:
        self._conns.add(conn)
        self.connections += 1
        self.accepted += 1
        if self._server is None:  # accepted while stopping
            conn.shutdown()

    def connection_closed(self, conn: ClientConnection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.connections -= 1
        if not self._conns and self._emptied is not None:
            self._emptied.set()

    def publish(self, record: AccessRecord) -> None:
        """Hand a finished request to the access log and observers; never raises."""
        if self.access_log is not None:
            self.access_log.write(record)
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # an observer's bug must not break the data plane
                log.exception("access-record observer failed")

    # -- timeouts -------------------------------------------------------------------------
    async def _sweep(self) -> None:
        interval = self.settings.sweep_interval()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.pool.now = now
            self.wall_offset = time.time() - now
            for conn in list(self._conns):
                try:
                    conn.check_timeouts(now)
                except Exception:
                    log.exception("proxy: timeout check failed")
                    conn.abort()
            self.pool.sweep(now)
