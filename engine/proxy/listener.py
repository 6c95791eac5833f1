"""What the HTTP and TCP proxies share: the listening socket, the connection registry,
one sweeper task for every timeout, the graceful stop and the access-record fan-out.

Subclasses say what a connection is (``protocol``) and add their own steps through the
small hooks below; the request path itself lives in their connection classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from engine.accesslog import AccessLog, AccessRecord
from engine.balancer import LoadBalancer
from engine.proxy.settings import ProxySettings

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What the registry needs of a client connection."""

    def check_timeouts(self, now: float) -> None: ...

    def abort(self) -> None: ...


class Listener:
    """A listening proxy that routes through ``lb``; one owned sweeper task."""

    kind: ClassVar[str] = "proxy"

    def __init__(
        self, lb: LoadBalancer, settings: ProxySettings | None = None, access_log: AccessLog | None = None
    ) -> None:
        self.lb = lb
        self.settings = settings or ProxySettings()
        self.access_log = access_log
        self.observers: list[Callable[[AccessRecord], None]] = []
        self.tls = False
        self.port = 0
        self.host = ""
        self.connections = 0
        self.accepted = 0
        self._conns: set[Any] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._emptied: asyncio.Event | None = None

    # -- hooks ----------------------------------------------------------------------------
    def protocol(self) -> asyncio.Protocol:
        """A new connection object for an accepted socket."""
        raise NotImplementedError

    def server_options(self, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
        return {}

    def begin_stop(self) -> None:
        """Stop accepting has happened; ask open connections to wind down."""

    def end_stop(self) -> None:
        """Every client connection is gone."""

    def before_sweep(self, now: float) -> None:
        """Once per sweep, before the connections' timeouts are checked."""

    def after_sweep(self, now: float) -> None:
        """Once per sweep, after the connections' timeouts are checked."""

    # -- lifecycle ------------------------------------------------------------------------
    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.get_running_loop()
        self.tls = ssl_context is not None
        self._server = await loop.create_server(
            self.protocol, host, port, ssl=ssl_context, backlog=1024, reuse_address=True,
            **self.server_options(ssl_context),
        )
        server: Any = self._server  # (uvloop's ``sockets`` is a list, asyncio's a tuple)
        sockname = server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._sweeper = loop.create_task(self._sweep(), name=f"lbtui-{self.kind}-sweeper:{self.port}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let open work finish within ``grace``, then close the rest."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        self._emptied = asyncio.Event()
        self.begin_stop()
        if self._conns:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), grace)
        for conn in list(self._conns):
            conn.abort()
        self.end_stop()
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
    def connection_opened(self, conn: Any) -> None:
        self._conns.add(conn)
        self.connections += 1
        self.accepted += 1

    def connection_closed(self, conn: Any) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.connections -= 1
        if not self._conns and self._emptied is not None:
            self._emptied.set()

    def publish(self, record: AccessRecord) -> None:
        """Hand a finished request (or connection) to the access log and observers; never raises."""
        if self.access_log is not None:
            self.access_log.write(record)
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # an observer's bug must not break the data plane
                log.exception("access-record observer failed")

    # -- timeouts -------------------------------------------------------------------------
    async def _sweep(self) -> None:
        """One periodic pass enforces every timeout, instead of a timer per request."""
        interval = self.settings.sweep_interval()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.before_sweep(now)
            for conn in list(self._conns):
                try:
                    conn.check_timeouts(now)
                except Exception:
                    log.exception("%s: timeout check failed", self.kind)
                    conn.abort()
            self.after_sweep(now)
