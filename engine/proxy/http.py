"""The HTTP/1.1 reverse proxy: the listener plus what spans HTTP connections.

The per-request work lives in ``client.ClientConnection`` (callbacks on llhttp events)
and ``pool.UpstreamConnection``. This module adds to the shared ``Listener`` the
upstream pool, the wall-clock offset access records use, and the HTTP way to stop:
idle keep-alive connections close at once, busy ones after their response.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from engine.accesslog import AccessLog
from engine.balancer import LoadBalancer
from engine.proxy.batch import HeldWrites
from engine.proxy.client import ClientConnection
from engine.proxy.listener import Listener
from engine.proxy.pool import UpstreamPool
from engine.proxy.settings import ProxySettings


class HttpProxy(Listener):
    """Reverse proxy for HTTP/1.1 routing every request through ``lb``."""

    kind = "proxy"

    def __init__(
        self, lb: LoadBalancer, settings: ProxySettings | None = None, access_log: AccessLog | None = None
    ) -> None:
        super().__init__(lb, settings, access_log)
        self.pool = UpstreamPool(self.settings.pool_size, self.settings.idle_timeout, lb.totals)
        self.writes = HeldWrites()  # one flush per loop iteration (engine/proxy/batch.py)
        self.active_requests = 0
        # Wall clock = monotonic + offset: access records get their time without a
        # time.time() call per request (the sweeper refreshes it against clock steps).
        self.wall_offset = time.time() - time.monotonic()

    def protocol(self) -> asyncio.Protocol:
        return ClientConnection(self)

    def server_options(self, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
        return {"ssl_handshake_timeout": self.settings.header_timeout if ssl_context is not None else None}

    def connection_opened(self, conn: ClientConnection) -> None:
        super().connection_opened(conn)
        if self._server is None:  # accepted while stopping
            conn.shutdown()

    def begin_stop(self) -> None:
        for conn in list(self._conns):
            conn.shutdown()

    def end_stop(self) -> None:
        self.pool.close_all()

    def before_sweep(self, now: float) -> None:
        self.pool.now = now
        self.wall_offset = time.time() - now

    def after_sweep(self, now: float) -> None:
        self.pool.sweep(now)
