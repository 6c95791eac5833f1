"""The L4 proxy: splice bytes between a client and a backend, routed by client IP.

Same policies as the HTTP proxy (the client IP is the hash key, so consistent hashing
pins a client to a server), connect timeout with failover to the next server,
per-client rate limit (a refused client is simply closed), idle timeout, half-close
passed through, and flow control both ways. With an access log, one record per
connection when it ends (method "TCP", the client and server, bytes both ways, the
connect time as ``upstream_ms`` and the connection's lifetime as ``total_ms``).
"""

from __future__ import annotations

import asyncio
import time

from engine.accesslog import AccessRecord
from engine.proxy.listener import Listener
from engine.server import Server

_monotonic = time.monotonic
BUFFER_LIMIT = 256 * 1024


class _Upstream(asyncio.Protocol):
    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.stamp = _monotonic()
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.stamp = _monotonic()
        client = self.client
        size = len(data)
        client.bytes_out += size
        if client.server is not None:
            client.server.stats.bytes_in += size
            client.lb.totals.bytes_in += size
        if client.transport is not None and not client.closed:
            client.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        client = self.client
        if client.transport is not None and not client.closed and client.transport.can_write_eof():
            client.transport.write_eof()
            if client.eof:
                client.close()
            return True
        client.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.closed:
            self.client.transport.resume_reading()


class TcpClient(asyncio.Protocol):
    """One client connection of the TCP proxy."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.lb = proxy.lb
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.server: Server | None = None
        self.ip = ""
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.stamp = _monotonic()
        self.started = self.stamp
        self.accepted = self.stamp
        self.wall = time.time()
        self.connect_ms = 0.0
        self.status = 0  # for the access record: 0 spliced, 429 refused, 502 no server reached
        self.task: asyncio.Task[None] | None = None
        self.in_flight = False
        self.failed = False
        self.closed = False
        self.eof = False
        self.bytes_in = 0
        self.bytes_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "unknown"
        self.proxy.connection_opened(self)
        if self.lb.check_client(self.ip) is not None:
            self.status = 429
            self.close()
            return
        transport.pause_reading()  # type: ignore[attr-defined]  # a socket transport reads
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        request = {"client_ip": self.ip, "key": self.ip, "path": "", "headers": {}}
        tried: list[Server] = []
        loop = asyncio.get_running_loop()
        settings = self.proxy.settings
        while len(tried) <= settings.retries:
            server = self.lb.route(request, exclude=tried)
            if server is None:
                break
            tried.append(server)
            self.lb.begin(server)
            began = _monotonic()
            try:
                _, upstream = await asyncio.wait_for(
                    loop.create_connection(lambda: _Upstream(self), server.host, server.port),
                    settings.connect_timeout,
                )
            except (TimeoutError, OSError):
                self.lb.finish(server, None, _monotonic() - began, failed=True)
                continue
            self.task = None
            if self.closed:
                self.lb.finish(server, None, _monotonic() - began)
                if upstream.transport is not None:
                    upstream.transport.close()
                return
            self.server, self.upstream, self.in_flight, self.started = server, upstream, True, began
            self.stamp = _monotonic()
            self.connect_ms = (self.stamp - began) * 1000.0
            if self.buffer and upstream.transport is not None:
                server.stats.bytes_out += self.buffered
                self.lb.totals.bytes_out += self.buffered
                upstream.transport.writelines(self.buffer)
                self.buffer, self.buffered = [], 0
            if self.eof and upstream.transport is not None and upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            if self.transport is not None:
                self.transport.resume_reading()
            return
        self.task = None
        self.status = 502
        self.close()

    def data_received(self, data: bytes) -> None:
        self.stamp = _monotonic()
        size = len(data)
        self.bytes_in += size
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            server = self.server
            if server is not None:
                server.stats.bytes_out += size
                self.lb.totals.bytes_out += size
            upstream.transport.write(data)
            return
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > BUFFER_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        upstream = self.upstream
        if upstream is None:
            return True  # forwarded once connected
        if upstream.transport is not None and upstream.transport.can_write_eof():
            upstream.transport.write_eof()
            if upstream.eof:
                self.close()
            return True
        self.close()
        return None

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def upstream_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.failed = True
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()
        self.proxy.connection_closed(self)
        proxy = self.proxy
        if proxy.access_log is not None or proxy.observers:
            server = self.server
            proxy.publish(
                AccessRecord(
                    self.wall,
                    self.ip,
                    "TCP",
                    "",
                    self.status,
                    server.name if server is not None else None,
                    self.bytes_in,
                    self.bytes_out,
                    self.connect_ms,
                    (_monotonic() - self.accepted) * 1000.0,
                )
            )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.close()
        if self.in_flight and self.server is not None:
            self.in_flight = False
            self.lb.finish(self.server, None, _monotonic() - self.started, failed=self.failed)

    def abort(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abort()
        if self.transport is not None:
            self.transport.abort()
        self.close()

    def check_timeouts(self, now: float) -> None:
        last = max(self.stamp, self.upstream.stamp if self.upstream is not None else 0.0)
        if now - last > self.proxy.settings.idle_timeout:
            self.close()


class TcpProxy(Listener):
    """Plain TCP load balancing with the engine's policies."""

    kind = "tcp"

    @property
    def active_requests(self) -> int:
        return self.connections

    def protocol(self) -> asyncio.Protocol:
        return TcpClient(self)
