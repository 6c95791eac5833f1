"""The admin API: steer a running balancer over HTTP (aiohttp, its own port).

Loopback by default. Bound anywhere else it refuses to start without a bearer token,
and with a token every request (``/metrics`` included) must carry
``Authorization: Bearer <token>``, compared in constant time. Every answer is JSON; bad
input is a 4xx with ``{"error": reason}`` and an unexpected failure a bare 500, never a
traceback. ``/api/events`` streams engine events as Server-Sent Events with a bounded
queue per client: a client too slow to keep up is dropped, never allowed to hold memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from engine import metrics
from engine.balancer import HashKey, LoadBalancer, canonical_algorithm
from engine.config import ConfigError, host_problem, is_loopback, server_name_problem
from engine.events import Event
from engine.server import AdminState, Server

log = logging.getLogger("lbtui.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CLOSE = object()  # sentinel: the server is shutting down
_DROPPED = object()  # sentinel: the client fell too far behind


class AdminSecurityError(RuntimeError):
    """The admin API was asked to listen beyond loopback without a token."""


class Control(Protocol):
    """What the admin API needs from whoever runs the balancer (the Gateway)."""

    def status(self) -> dict[str, Any]: ...

    async def reload(self) -> dict[str, Any]: ...

    def request_stop(self) -> None: ...

    def listener_metrics(self) -> list[dict[str, Any]]: ...

    started_at: float


class BadRequest(Exception):
    """Operator input we refuse; becomes a 4xx with the message as the JSON reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def error_response(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=_default))


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


class AdminApi:
    """The aiohttp application and the site that serves it."""

    def __init__(
        self,
        lb: LoadBalancer,
        *,
        control: Control | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        keepalive: float = 15.0,
        queue_size: int = 256,
        write_timeout: float = 10.0,
    ) -> None:
        self.lb = lb
        self.control = control
        self.host = host
        self.requested_port = port
        self.token = token.encode() if token else None
        self.keepalive = keepalive
        self.queue_size = queue_size
        self.write_timeout = write_timeout
        self.streams: set[asyncio.Queue[object]] = set()
        self.dropped_clients = 0
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if not self.token and not is_loopback(self.host):
            raise AdminSecurityError(
                f"refusing to serve the admin API on {self.host} without a token: "
                "set [admin] token (16+ characters) or bind it to 127.0.0.1"
            )
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the real port when 0 was asked for

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- the app ------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 * 1024)
        app.on_shutdown.append(self._close_streams)
        r = app.router
        r.add_get("/api/servers", self.list_servers)
        r.add_post("/api/servers", self.add_server)
        r.add_get("/api/servers/{name}", self.get_server)
        r.add_delete("/api/servers/{name}", self.remove_server)
        for action in ("drain", "maint", "ready"):
            r.add_post(f"/api/servers/{{name}}/{action}", self._admin_state(AdminState(action)))
        r.add_post("/api/servers/{name}/health", self.set_health)
        r.add_put("/api/servers/{name}/weight", self.set_weight)
        r.add_get("/api/route", self.route)
        r.add_put("/api/algorithm", self.set_algorithm)
        r.add_get("/api/stats", self.stats)
        r.add_get("/api/ring", self.ring)
        r.add_get("/api/status", self.status)
        r.add_get("/api/events", self.events)
        r.add_post("/api/reload", self.reload)
        r.add_post("/api/shutdown", self.shutdown)
        r.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = exc.reason if exc.status != 413 else "request body too large"
            response = error_response(exc.status, reason.lower())
            for header in ("Allow", "WWW-Authenticate"):
                if header in exc.headers:
                    response.headers[header] = exc.headers[header]
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path)
            return error_response(500, "internal error")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, supplied = header.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), self.token)
            if not ok:
                response = error_response(401, "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="lbtui"'
                return response
        return await handler(request)

    # -- helpers ------------------------------------------------------------------------
    def _server(self, request: web.Request) -> Server:
        name = request.match_info["name"]
        server = self.lb.get_server(name)
        if server is None:
            raise BadRequest(f"no server named {name!r}", 404)
        return server

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json(loads=json.loads)
        except (ValueError, RecursionError):
            # ValueError covers bad JSON, bad UTF-8 and integers past Python's digit
            # limit; RecursionError a deeply nested body. All are the client's mistake.
            raise BadRequest("body must be valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data

    @staticmethod
    def _field(
        data: dict[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = True
    ) -> Any:
        if key not in data or data[key] is None:
            if required:
                raise BadRequest(f"{key} is required")
            return None
        value = data[key]
        if isinstance(value, bool) and kind is not bool:
            raise BadRequest(f"{key} must be {_kind_name(kind)}")
        if not isinstance(value, kind):
            raise BadRequest(f"{key} must be {_kind_name(kind)}")
        return value

    @staticmethod
    def _server_view(server: Server) -> dict[str, Any]:
        view = server.to_dict()
        view["available"] = server.available
        view["last_error"] = server.health.last_error
        return view

    # -- servers ------------------------------------------------------------------------
    async def list_servers(self, request: web.Request) -> web.Response:
        return _json({"servers": [self._server_view(s) for s in self.lb.servers]})

    async def get_server(self, request: web.Request) -> web.Response:
        return _json(self._server_view(self._server(request)))

    async def add_server(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        unknown = sorted(set(data) - {"name", "host", "port", "weight", "state"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; expected name, host, port, weight, state")
        host = self._field(data, "host", str).strip()
        port = self._field(data, "port", int)
        weight = self._field(data, "weight", int, required=False)
        name = self._field(data, "name", str, required=False)
        state = self._field(data, "state", str, required=False) or "ready"
        if problem := host_problem(host):
            raise BadRequest(f"host: {problem}")
        if not 1 <= port <= 65535:
            raise BadRequest("port must be from 1 to 65535")
        weight = 1 if weight is None else weight
        if not 0 <= weight <= 1000:
            raise BadRequest("weight must be from 0 to 1000")
        if name is not None and (problem := server_name_problem(name)):
            raise BadRequest(f"name: {problem}")
        if state not in {s.value for s in AdminState}:
            raise BadRequest("state must be ready, drain or maint")
        server = Server(host, port, weight, name or "", admin_state=AdminState(state))
        if self.lb.get_server(server.name) is not None:
            raise BadRequest(f"a server named {server.name!r} already exists", 409)
        self.lb.add_server(server, source="admin")
        return _json(self._server_view(server), 201)

    async def remove_server(self, request: web.Request) -> web.Response:
        server = self._server(request)
        self.lb.remove_server(server.name, source="admin")
        return _json({"removed": server.name})

    def _admin_state(self, state: AdminState) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            server = self._server(request)
            self.lb.set_admin_state(server.name, state, source="admin")
            return _json(self._server_view(server))

        return handler

    async def set_health(self, request: web.Request) -> web.Response:
        server = self._server(request)
        up = self._field(await self._body(request), "up", bool)
        self.lb.set_health(server.name, up, source="admin")
        return _json(self._server_view(server))

    async def set_weight(self, request: web.Request) -> web.Response:
        server = self._server(request)
        weight = self._field(await self._body(request), "weight", int)
        if not 0 <= weight <= 1000:
            raise BadRequest("weight must be from 0 to 1000")
        self.lb.set_weight(server.name, weight, source="admin")
        return _json(self._server_view(server))

    # -- routing ------------------------------------------------------------------------
    async def route(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        if key is None:
            raise BadRequest("query parameter key is required, e.g. /api/route?key=user-42")
        fallbacks = _int_query(request, "fallbacks", 3, 0, 32)
        return _json(self.lb.locate(key, fallbacks))

    async def set_algorithm(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        unknown = sorted(set(data) - {"algorithm", "hash_key", "balance_factor"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; expected algorithm, hash_key, balance_factor")
        algorithm = self._field(data, "algorithm", str)
        options: dict[str, Any] = {}
        try:
            canonical_algorithm(algorithm)
            if data.get("hash_key") is not None:
                options["hash_key"] = str(HashKey.parse(self._field(data, "hash_key", str)))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if "balance_factor" in data:
            factor = self._field(data, "balance_factor", (int, float), required=False)
            if factor is not None and not (_finite(factor) and factor >= 1.0):
                raise BadRequest("balance_factor must be a number of at least 1.0, or null")
            options["balance_factor"] = None if factor is None else float(factor)
        self.lb.set_algorithm(algorithm, source="admin", **options)
        return _json(
            {
                "algorithm": self.lb.algorithm,
                "hash_key": str(self.lb.hash_key),
                "balance_factor": self.lb.balance_factor,
            }
        )

    async def ring(self, request: web.Request) -> web.Response:
        max_points = _int_query(request, "max_points", 512, 1, 100_000)
        snapshot = self.lb.ring.ring.snapshot(max_points)
        data: dict[str, Any] = {
            "algorithm": self.lb.algorithm,
            "points": [[position, owner] for position, owner in snapshot.points],
            "shares": snapshot.shares,
        }
        table = getattr(self.lb.policy, "table", None)
        if self.lb.algorithm == "maglev" and table is not None and hasattr(table, "shares"):
            data["maglev_shares"] = table.shares()
        return _json(data)

    # -- whole balancer -----------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        data = self.lb.stats()
        if self.control is not None:
            data["uptime"] = round(time.time() - self.control.started_at, 3)
        return _json(data)

    async def status(self, request: web.Request) -> web.Response:
        if self.control is None:
            return _json({"algorithm": self.lb.algorithm, "panic": self.lb.panic, "components": {}})
        return _json(self.control.status())

    async def reload(self, request: web.Request) -> web.Response:
        if self.control is None:
            raise BadRequest("nothing to reload: no configuration file", 409)
        try:
            report = await self.control.reload()
        except ConfigError as exc:
            raise BadRequest(str(exc), 422) from None
        return _json(report)

    async def shutdown(self, request: web.Request) -> web.Response:
        if self.control is None:
            raise BadRequest("shutdown is not available here", 409)
        self.control.request_stop()
        return _json({"stopping": True}, 202)

    async def metrics(self, request: web.Request) -> web.Response:
        control = self.control
        text = metrics.render(
            self.lb,
            started_at=control.started_at if control else None,
            listeners=control.listener_metrics() if control else (),
        )
        return web.Response(text=text, headers={"Content-Type": metrics.CONTENT_TYPE})

    # -- the event stream ---------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[object] = asyncio.Queue(self.queue_size)

        def on_event(event: Event) -> None:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                _replace_all(queue, _DROPPED)

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        unsubscribe = self.lb.events.subscribe(on_event)
        self.streams.add(queue)
        try:
            await self._write(response, b": connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.keepalive)
                except TimeoutError:
                    await self._write(response, b": keepalive\n\n")
                    continue
                if item is _CLOSE:
                    break
                if item is _DROPPED:
                    self.dropped_clients += 1
                    with contextlib.suppress(Exception):
                        await self._write(
                            response, b'event: dropped\ndata: {"reason": "client too slow"}\n\n'
                        )
                    break
                assert isinstance(item, Event)
                payload = json.dumps(item.to_dict(), default=_default, separators=(",", ":"))
                await self._write(response, f"data: {payload}\n\n".encode())
        except (ConnectionResetError, TimeoutError, RuntimeError):
            pass  # the client went away or stopped reading: nothing to tell it
        finally:
            unsubscribe()
            self.streams.discard(queue)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.write_timeout):
            await response.write(data)

    async def _close_streams(self, app: web.Application) -> None:
        for queue in list(self.streams):
            _replace_all(queue, _CLOSE)


def _replace_all(queue: asyncio.Queue[object], item: object) -> None:
    """Empty a stream's queue and leave only ``item``: the stream ends after it."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(item)


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}")
    return value


def _finite(value: float) -> bool:
    """math.isfinite that says False, not OverflowError, for an int past float range."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", bool: "true or false", float: "a number"}
    if isinstance(kind, tuple):
        return "a number" if float in kind else " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)
