"""The Gateway: one running lbtui, built from a Config and owning everything it starts.

It wires the balancer to its listeners (HTTP or TCP proxies, TLS), active health
checks, the admin API, the access log and a 1 s housekeeping tick. ``stop`` is
graceful (stop accepting, let in-flight requests finish within a deadline, then cancel
what it owns); ``reload`` applies a new file to the running balancer without touching
listeners, so no connection is dropped. Workers (store sync, strategist) register a
status callable in ``components`` and a closer with ``on_stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from engine import events as ev
from engine.accesslog import AccessLog
from engine.admin import AdminApi
from engine.balancer import LoadBalancer
from engine.config import Config, ConfigError, ListenerConfig, ServerConfig
from engine.events import Event, EventBus
from engine.health import HealthChecker
from engine.outlier import OutlierDetector
from engine.proxy.http import HttpProxy
from engine.proxy.settings import ProxySettings
from engine.proxy.tcp import TcpProxy
from engine.proxy.tls import server_context
from engine.ratelimit import ClientRateLimiter
from engine.server import AdminState, Server, bump_generation

log = logging.getLogger("lbtui.gateway")

StatusFn = Callable[[], dict[str, Any]]
Closer = Callable[[], Awaitable[None]]

# Sections a reload cannot change on a running process: reported, never half-applied.
_RESTART_ONLY = ("listeners", "proxy", "access_log", "admin", "store", "aws")


@dataclasses.dataclass(slots=True)
class Listener:
    """One bound listener and the proxy serving it."""

    config: ListenerConfig
    proxy: HttpProxy | TcpProxy

    @property
    def port(self) -> int:
        return int(self.proxy.port)

    @property
    def url(self) -> str:
        scheme = ("https" if self.config.tls else "http") if self.config.mode == "http" else "tcp"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{scheme}://{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "mode": self.config.mode,
            "host": self.config.host,
            "port": self.port,
            "tls": self.config.tls,
            "url": self.url,
            "active_requests": _count(getattr(self.proxy, "active_requests", 0)),
            "connections": _count(getattr(self.proxy, "connections", 0)),
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


def build_servers(config: Config) -> list[Server]:
    return [_server(s, config) for s in config.servers]


def _server(spec: ServerConfig, config: Config) -> Server:
    server = Server(spec.host, spec.port, spec.weight, spec.name, admin_state=AdminState(spec.state))
    server.health.rise, server.health.fall = config.health.rise, config.health.fall
    return server


def build_outlier(config: Config) -> OutlierDetector:
    o = config.outlier
    return OutlierDetector(
        consecutive_errors=o.consecutive_errors,
        base_ejection=o.base_ejection,
        max_ejection=o.max_ejection,
        max_ejection_percent=o.max_ejection_percent,
        count_5xx=o.count_5xx,
        enabled=o.enabled,
    )


def build_balancer(config: Config, events: EventBus | None = None) -> LoadBalancer:
    b = config.balancer
    return LoadBalancer(
        build_servers(config),
        b.algorithm,
        sticky=b.sticky is not None,
        rate_limit=b.rate_limit,
        sticky_method=b.sticky or "cookie",
        session_ttl=b.session_ttl,
        hash_key=b.hash_key,
        balance_factor=b.balance_factor,
        client_rate_limit=b.client_rate_limit,
        outlier=build_outlier(config),
        panic_threshold=b.panic_threshold,
        slow_start=b.slow_start,
        events=events,
    )


class Gateway:
    """Builds and runs the whole balancer from a Config."""

    def __init__(self, config: Config, *, stop_grace: float = 10.0) -> None:
        self.config = config
        self.stop_grace = stop_grace
        self.lb = build_balancer(config)
        self.events: EventBus = self.lb.events
        self.components: dict[str, StatusFn] = {}
        self.listeners: list[Listener] = []
        self.admin: AdminApi | None = None
        self.health: HealthChecker | None = None
        self.access_log: AccessLog | None = None
        self.started_at = time.time()
        self.reloads = 0
        self.last_reload: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: list[tuple[str, Closer]] = []
        self._reload_lock = asyncio.Lock()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._state = "new"

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind everything; on any failure, undo what was started and re-raise."""
        if self._state != "new":
            raise RuntimeError(f"gateway already {self._state}")
        self._state = "starting"
        self.started_at = time.time()
        try:
            if self.config.access_log.path:
                a = self.config.access_log
                self.access_log = await asyncio.to_thread(AccessLog, a.path, a.max_bytes, a.backups)
            settings = ProxySettings(**self.config.proxy.overrides())
            for spec in self.config.listeners:
                self.listeners.append(await self._start_listener(spec, settings))
            self._start_health()
            self.own(self._housekeeping(), "housekeeping")
            if self.config.admin.enabled:
                a = self.config.admin
                self.admin = AdminApi(self.lb, control=self, host=a.host, port=a.port, token=a.token)
                await self.admin.start()
        except BaseException:
            await self._teardown(grace=0.0)
            self._state = "stopped"
            self._stopped.set()
            raise
        self._state = "running"

    async def _start_listener(self, spec: ListenerConfig, settings: ProxySettings) -> Listener:
        context = server_context(spec.tls_cert, spec.tls_key) if spec.tls_cert and spec.tls_key else None
        # The TCP proxy logs one record per connection.
        proxy = (
            HttpProxy(self.lb, settings, self.access_log)
            if spec.mode == "http"
            else TcpProxy(self.lb, settings, self.access_log)
        )
        await proxy.start(spec.host, spec.port, context)
        return Listener(spec, proxy)

    def _start_health(self) -> None:
        h = self.config.health
        if not h.enabled:
            self.health = None
            return
        self.health = HealthChecker(
            h.interval,
            h.timeout,
            h.rise,
            h.fall,
            servers=lambda: self.lb.servers,
            http_path=h.http_path,
            expect_status=h.expect_status,
            report=self.lb.report_check,
        )
        self.health.start()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.lb.tick()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` s, then close all."""
        if self._state in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        self._state = "stopping"
        self._stop_requested.set()
        try:
            await self._teardown(self.stop_grace if grace is None else grace)
        finally:
            self._state = "stopped"
            self._stopped.set()

    async def _teardown(self, grace: float) -> None:
        if self.health is not None:
            await self.health.aclose()
        listeners, self.listeners = self.listeners, []
        results = await asyncio.gather(*(x.proxy.stop(grace) for x in listeners), return_exceptions=True)
        for listener, result in zip(listeners, results):
            if isinstance(result, Exception):
                log.warning("listener %s did not stop cleanly: %s", listener.config.name, result)
        for name, closer in reversed(self._closers):
            try:
                async with asyncio.timeout(max(grace, 1.0)):
                    await closer()
            except Exception as exc:  # noqa: BLE001 - one broken worker must not keep the rest running
                log.warning("%s did not stop cleanly: %s", name, exc)
        self._closers.clear()
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop()
        if self.access_log is not None:
            await self.access_log.aclose()
            self.access_log = None

    def request_stop(self) -> None:
        """Ask for a graceful stop (signal handler, admin API); ``serve`` does the stopping."""
        self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    async def wait_stop_requested(self) -> None:
        await self._stop_requested.wait()

    async def serve(self) -> None:
        """Run until a stop is requested, then stop gracefully."""
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    # -- ownership ----------------------------------------------------------------------
    def own(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this gateway cancels on stop; failures are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"lbtui-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", task.get_name(), task.exception())

    def on_stop(self, name: str, closer: Closer) -> None:
        """Await ``closer`` during stop (after the listeners, in reverse registration order)."""
        self._closers.append((name, closer))

    # -- reload -------------------------------------------------------------------------
    async def reload(self, config: Config | None = None) -> dict[str, Any]:
        """Apply a new configuration (default: re-read the file) to the running balancer.

        Every server in the file exists afterwards (one the operator removed comes back),
        and servers the file dropped are removed; servers added at runtime and never in
        the file stay. Weight and state are compared with the previous file, not with the
        live values, so a drain or a weight set at runtime survives unless the file itself
        changed that field. A new address for a name is a new backend (in-flight requests
        finish on the old one). Sections that need a restart are listed in
        ``restart_required``; nothing is half-applied.
        """
        async with self._reload_lock:
            if config is None:
                if self.config.source is None:
                    raise ConfigError("<defaults>", "", "no configuration file to reload")
                config = await asyncio.to_thread(self.config.reread)
            report = await self._apply(self.config, config)
            self.config = config
            self.reloads += 1
            self.last_reload = {"at": time.time(), "ok": True, **report}
            self.lb.events.publish(Event(ev.CONFIG_RELOADED, None, _summary(report), "config"))
            return report

    async def _apply(self, old: Config, new: Config) -> dict[str, Any]:
        lb = self.lb
        added: list[str] = []
        removed: list[str] = []
        updated: list[str] = []
        old_servers = {s.name: s for s in old.servers}
        new_servers = {s.name: s for s in new.servers}
        for name in old_servers.keys() - new_servers.keys():
            if lb.get_server(name) is not None:
                lb.remove_server(name, source="config")
                removed.append(name)
        for name, spec in new_servers.items():
            live = lb.get_server(name)
            before = old_servers.get(name)
            if live is None:
                lb.add_server(_server(spec, new), source="config")
                added.append(name)
            elif (live.host, live.port) != (spec.host, spec.port):
                # A new address is a new backend: in-flight requests finish on the old object.
                lb.remove_server(name, source="config")
                lb.add_server(_server(spec, new), source="config")
                updated.append(name)
            else:
                # Only what the file itself changed overrides the live (operator) value.
                weight_edited = before is None or before.weight != spec.weight
                state_edited = before is None or before.state != spec.state
                changed = False
                if weight_edited and live.weight != spec.weight:
                    lb.set_weight(name, spec.weight, source="config")
                    changed = True
                if state_edited and live.admin_state.value != spec.state:
                    lb.set_admin_state(name, spec.state, source="config")
                    changed = True
                if changed:
                    updated.append(name)

        ob, nb = old.balancer, new.balancer
        changes: list[str] = []
        if (ob.algorithm, ob.hash_key, ob.balance_factor) != (nb.algorithm, nb.hash_key, nb.balance_factor):
            lb.set_algorithm(
                nb.algorithm, source="config", hash_key=nb.hash_key, balance_factor=nb.balance_factor
            )
            changes.append("balancer.algorithm")
        if (ob.panic_threshold, ob.slow_start) != (nb.panic_threshold, nb.slow_start):
            lb.panic_threshold, lb.slow_start = nb.panic_threshold, nb.slow_start
            bump_generation()
            changes.append("balancer.panic_threshold/slow_start")
        if ob.client_rate_limit != nb.client_rate_limit:
            lb.client_limiter = ClientRateLimiter(nb.client_rate_limit) if nb.client_rate_limit else None
            changes.append("balancer.client_rate_limit")
        restart = [
            f"balancer.{k}"
            for k in ("sticky", "session_ttl", "rate_limit")
            if getattr(ob, k) != getattr(nb, k)
        ]
        if old.outlier != new.outlier:
            fresh = build_outlier(new)
            for f in dataclasses.fields(fresh):
                setattr(lb.outlier, f.name, getattr(fresh, f.name))
            changes.append("outlier")
        if old.health != new.health:
            if self.health is not None:
                await self.health.aclose()
            self.config = dataclasses.replace(self.config, health=new.health)
            for server in lb.servers:
                server.health.rise, server.health.fall = new.health.rise, new.health.fall
            if self._state == "running":
                self._start_health()
            changes.append("health")
        restart += [name for name in _RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        return {
            "added": added,
            "removed": removed,
            "updated": updated,
            "changed": changes,
            "restart_required": restart,
        }

    # -- signals ------------------------------------------------------------------------
    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGHUP reloads the file; SIGINT and SIGTERM stop gracefully. Returns an undo."""
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGHUP: self._on_sighup,
            signal.SIGINT: self.request_stop,
            signal.SIGTERM: self.request_stop,
        }
        for signum, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, handler)
                installed.append(signum)

        def undo() -> None:
            for signum in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

        return undo

    def _on_sighup(self) -> None:
        if self._state == "running":
            self.own(self._reload_logged(), "reload")

    async def _reload_logged(self) -> None:
        try:
            report = await self.reload()
        except ConfigError as exc:
            self.last_reload = {"at": time.time(), "ok": False, "error": str(exc)}
            self.lb.events.publish(
                Event(ev.CONFIG_RELOADED, None, {"ok": False, "error": str(exc)}, "config")
            )
            log.error("reload failed, keeping the running configuration: %s", exc)
        else:
            log.info("configuration reloaded: %s", _summary(report))

    # -- views --------------------------------------------------------------------------
    def listener_metrics(self) -> list[dict[str, Any]]:
        return [x.to_dict() for x in self.listeners]

    def status(self) -> dict[str, Any]:
        lb = self.lb
        components: dict[str, Any] = {}
        for name, fn in list(self.components.items()):
            try:
                components[name] = fn()
            except Exception as exc:  # noqa: BLE001 - a component bug must not break the status page
                components[name] = {"error": f"status unavailable: {exc.__class__.__name__}"}
        return {
            "state": self._state,
            "listeners": self.listener_metrics(),
            "admin": self.admin.url if self.admin is not None else None,
            "algorithm": lb.algorithm,
            "hash_key": str(lb.hash_key),
            "balance_factor": lb.balance_factor,
            "sticky": self.config.balancer.sticky,
            "panic": lb.panic,
            "servers": len(lb.servers),
            "available": sum(1 for s in lb.servers if s.available),
            "uptime": round(time.time() - self.started_at, 3),
            "event_loop": _loop_kind(),
            "started_at": self.started_at,
            "config": str(self.config.source) if self.config.source else None,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "health_checks": {
                "enabled": self.health is not None,
                "interval": self.config.health.interval,
                "http_path": self.config.health.http_path,
                "rounds": self.health.rounds if self.health is not None else 0,
            },
            "access_log": self.config.access_log.path,
            "components": components,
        }


def _loop_kind() -> str:
    """ "uvloop" or "asyncio": the proxy's speed depends on which one runs it."""
    try:
        return type(asyncio.get_running_loop()).__module__.partition(".")[0]
    except RuntimeError:
        return "none"


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if v}
