"""The sample backend: a small aiohttp service that says who served each request.

It is what ``lbtui demo``, the scenarios and the tests put behind the balancer, so every
response carries ``X-Served-By`` and the echo endpoint reports exactly what arrived
(headers, body length and SHA-256, read in a stream, never buffered whole). It also hosts
the bookstore (``cloud.bookstore``) and can be told to be slow or to fail a share of
requests, live, through ``/_admin/faults``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cloud.bookstore import (
    CART_KEY,
    NAME_KEY,
    REPO_KEY,
    BookRepository,
    CartStore,
    add_bookstore_routes,
    open_repository,
)

SERVED_BY = "X-Served-By"
FAULTS_KEY: web.AppKey[Faults] = web.AppKey("faults", object)  # type: ignore[arg-type]
STREAM_CHUNK = 64 * 1024
#: Paths the fault injector never touches, so an operator can always reach the admin knobs.
EXEMPT_PREFIXES = ("/_admin",)


@dataclass(slots=True)
class Faults:
    """Live-tunable misbehaviour: added latency, a share of 500s, a failing health check."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    healthy: bool = True
    injected_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "healthy": self.healthy,
            "injected_errors": self.injected_errors,
        }

    def update(self, data: Any) -> list[dict[str, str]]:
        """Validate then apply ``{latency_ms, error_rate, healthy}``; return reasons on error."""
        if not isinstance(data, dict):
            return [{"field": "", "reason": "expected a JSON object"}]
        errors: list[dict[str, str]] = []
        unknown = set(data) - {"latency_ms", "error_rate", "healthy"}
        for field in sorted(unknown):
            errors.append({"field": field, "reason": "unknown field"})
        latency = data.get("latency_ms", self.latency_ms)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency <= 60_000:
            errors.append({"field": "latency_ms", "reason": "must be a number from 0 to 60000"})
        rate = data.get("error_rate", self.error_rate)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            errors.append({"field": "error_rate", "reason": "must be a number from 0 to 1"})
        healthy = data.get("healthy", self.healthy)
        if not isinstance(healthy, bool):
            errors.append({"field": "healthy", "reason": "must be true or false"})
        if not errors:
            self.latency_ms, self.error_rate, self.healthy = float(latency), float(rate), healthy
        return errors


class BackendHandle:
    """A running backend: where it listens and how to stop (or kill) it."""

    __slots__ = ("_runner", "_stopped", "app", "faults", "host", "name", "port", "repository")

    def __init__(self, name: str, host: str, port: int, app: web.Application, runner: web.AppRunner) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.app = app
        self.faults: Faults = app[FAULTS_KEY]
        self.repository: BookRepository = app[REPO_KEY]
        self._runner = runner
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish briefly, close the store."""
        if self._stopped:
            return
        self._stopped = True
        await self._runner.cleanup()

    async def kill(self) -> None:
        """Die like ``kill -9``: close the listener and reset every open connection now."""
        if self._stopped:
            return
        self._stopped = True
        for site in list(self._runner.sites):
            server = getattr(site, "_server", None)
            if server is not None:
                server.close()
        server_obj = self._runner.server
        if server_obj is not None:
            for handler in server_obj.connections:
                transport = handler.transport
                if transport is not None:
                    transport.abort()
        # A dead process waits for nobody: skip the graceful wait for in-flight handlers.
        self._runner._shutdown_timeout = 0.0  # no public setter after construction
        await self._runner.cleanup()


@web.middleware
async def _fault_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Apply the configured latency and error share to everything but the admin knobs."""
    if request.path.startswith(EXEMPT_PREFIXES):
        return await handler(request)
    faults = request.app[FAULTS_KEY]
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    if request.path != "/health" and faults.error_rate > 0 and random.random() < faults.error_rate:
        faults.injected_errors += 1
        return web.json_response({"error": "injected fault", "server": request.app[NAME_KEY]}, status=500)
    return await handler(request)


async def _add_served_by(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SERVED_BY] = request.app[NAME_KEY]


async def _index(request: web.Request) -> web.Response:
    name = request.app[NAME_KEY]
    return web.json_response({"server": name, "service": "lbtui sample backend", "path": request.path_qs})


async def _health(request: web.Request) -> web.Response:
    if not request.app[FAULTS_KEY].healthy:
        return web.json_response({"status": "unhealthy", "server": request.app[NAME_KEY]}, status=503)
    return web.json_response({"status": "ok", "server": request.app[NAME_KEY]})


async def _echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return web.json_response(
        {
            "server": request.app[NAME_KEY],
            "method": request.method,
            "path": request.path_qs,
            "headers": headers,
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


def pattern_bytes(size: int) -> bytes:
    """The deterministic body ``/stream`` sends, so a test can check it byte for byte."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


async def _stream(request: web.Request) -> web.StreamResponse:
    """A chunked download of ``size`` pattern bytes, written ``chunk`` bytes at a time."""
    try:
        size = int(request.query.get("size", "1024"))
        chunk = int(request.query.get("chunk", str(STREAM_CHUNK)))
    except ValueError:
        return web.json_response({"error": "size and chunk must be integers"}, status=422)
    if not (0 <= size <= 1 << 31 and 1 <= chunk <= 1 << 20):
        return web.json_response({"error": "size must be 0..2^31 and chunk 1..2^20"}, status=422)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    block = pattern_bytes(max(chunk, 256) + 256)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        offset = sent % 256
        await response.write(block[offset : offset + n])
        sent += n
    await response.write_eof()
    return response


async def _status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        code = 0
    if not 200 <= code <= 599:
        return web.json_response({"error": "status must be 200..599"}, status=422)
    return web.json_response({"server": request.app[NAME_KEY], "status": code}, status=code)


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS_KEY].to_dict())


async def _put_faults(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    errors = request.app[FAULTS_KEY].update(data)
    if errors:
        return web.json_response({"error": "validation failed", "reasons": errors}, status=422)
    return web.json_response(request.app[FAULTS_KEY].to_dict())


def build_app(name: str, repository: BookRepository, *, latency_ms: float = 0.0, error_rate: float = 0.0) -> web.Application:
    """The aiohttp application of one backend (no sockets yet)."""
    app = web.Application(middlewares=[_fault_middleware], client_max_size=1 << 20)
    app[NAME_KEY] = name
    faults = Faults()
    errors = faults.update({"latency_ms": latency_ms, "error_rate": error_rate})
    if errors:
        raise ValueError("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
    app[FAULTS_KEY] = faults
    app[REPO_KEY] = repository
    app[CART_KEY] = CartStore()
    app.on_response_prepare.append(_add_served_by)
    app.router.add_get("/", _index)
    app.router.add_get("/health", _health)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/stream", _stream)
    app.router.add_route("*", "/status/{code}", _status)
    app.router.add_get("/_admin/faults", _get_faults)
    app.router.add_put("/_admin/faults", _put_faults)
    add_bookstore_routes(app)

    async def _close_repository(app: web.Application) -> None:
        await app[REPO_KEY].close()

    app.on_cleanup.append(_close_repository)
    return app


async def start_backend(
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    db: str | None = None,
    mongodb_uri: str | None = None,
    mongodb_db: str = "lbtui_bookstore",
    seed_books: int = 0,
    shutdown_timeout: float = 2.0,
) -> BackendHandle:
    """Start one backend on ``host:port`` (0 picks a free port) and return its handle.

    ``db`` is this backend's own SQLite file (None keeps it in memory); ``mongodb_uri``
    instead shares one books collection between backends. Carts always stay per backend,
    which is what makes sticky sessions visible.
    """
    repository = await open_repository(db=db, mongodb_uri=mongodb_uri, mongodb_db=mongodb_db)
    try:
        if seed_books:
            await repository.seed(seed_books)
        app = build_app(name, repository, latency_ms=latency_ms, error_rate=error_rate)
    except BaseException:
        await repository.close()
        raise
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=False, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return BackendHandle(name, host, int(bound[1]), app, runner)
