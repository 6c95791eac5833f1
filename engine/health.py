"""Active health checks: TCP connect or HTTP GET, with interval, timeout, rise and fall.

Every probe has a timeout; the loop is one owned task (``start``/``stop``), probing all
servers concurrently each interval. Results go through each server's rise/fall machine
(``LoadBalancer.report_check`` when a balancer is attached), so one bad probe never
flaps a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.server import Health, Server

Callback = Callable[[Server], None]
log = logging.getLogger("lbtui.health")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    error: str = ""


class HealthChecker:
    """Seed API: ``check``, ``start``, ``stop``, ``on_healthy``, ``on_unhealthy``."""

    def __init__(
        self,
        interval: float = 5.0,
        timeout: float = 2.0,
        healthy_threshold: int = 2,
        unhealthy_threshold: int = 3,
        *,
        servers: Iterable[Server] | Callable[[], Iterable[Server]] = (),
        http_path: str | None = None,
        expect_status: int | tuple[int, int] = (200, 399),
        report: Callable[[Server, bool, str], Health | None] | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        self.interval = interval
        self.timeout = timeout
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self._servers = servers
        self.http_path = http_path
        low, high = (expect_status, expect_status) if isinstance(expect_status, int) else expect_status
        self.expect_low, self.expect_high = low, high
        self._report = report
        self._on_healthy: list[Callback] = []
        self._on_unhealthy: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def on_healthy(self, callback: Callback) -> None:
        self._on_healthy.append(callback)

    def on_unhealthy(self, callback: Callback) -> None:
        self._on_unhealthy.append(callback)

    def servers(self) -> list[Server]:
        source = self._servers
        return list(source() if callable(source) else source)

    # -- one probe ------------------------------------------------------------------
    def check(self, server: Server) -> bool:
        """A blocking TCP connect with the timeout, for scripts outside an event loop."""
        try:
            with socket.create_connection((server.host, server.port), timeout=self.timeout):
                return True
        except OSError:
            return False

    async def probe(self, server: Server) -> ProbeResult:
        """One non-blocking probe: TCP connect, or HTTP GET when ``http_path`` is set."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(server.host, server.port)
                if self.http_path is None:
                    return ProbeResult(True)
                request = (
                    f"GET {self.http_path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                    "User-Agent: lbtui-health\r\nConnection: close\r\n\r\n"
                )
                writer.write(request.encode("latin-1"))
                await writer.drain()
                line = await reader.readline()
                parts = line.split(b" ", 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                    return ProbeResult(False, "bad HTTP response")
                status = int(parts[1])
                if self.expect_low <= status <= self.expect_high:
                    return ProbeResult(True)
                return ProbeResult(False, f"HTTP {status}")
        except TimeoutError:
            return ProbeResult(False, f"timeout after {self.timeout:g}s")
        except OSError as exc:
            return ProbeResult(False, exc.strerror or exc.__class__.__name__)
        except ValueError as exc:
            # A host name IDNA cannot encode (a label over 63 characters) or a status
            # line longer than the stream limit: this server's failure, not the loop's.
            return ProbeResult(False, f"{exc.__class__.__name__}: {exc}"[:200])
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def observe(self, server: Server, ok: bool, error: str = "") -> Health | None:
        """Apply one result through the rise/fall machine and fire callbacks on a change."""
        server.health.rise = self.healthy_threshold
        server.health.fall = self.unhealthy_threshold
        if self._report is not None:
            changed = self._report(server, ok, error)
        else:
            changed = server.health.observe(ok, error)
        if changed is Health.UP:
            for callback in self._on_healthy:
                callback(server)
        elif changed is Health.DOWN:
            for callback in self._on_unhealthy:
                callback(server)
        return changed

    async def run_once(self) -> None:
        servers = self.servers()
        results = await asyncio.gather(*(self.probe(s) for s in servers), return_exceptions=True)
        for server, result in zip(servers, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and interpreter exit are not a probe's result
            if isinstance(result, Exception):
                # One server's unexpected probe failure must not skip the others.
                result = ProbeResult(False, f"probe failed: {result.__class__.__name__}")
            self.observe(server, result.ok, result.error)
        self.rounds += 1

    # -- the loop -------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - a bug in one round must not end health checking for good
                log.exception("health check round failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start probing in the running event loop; the checker owns the task."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="health-checker")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
