"""The traffic simulator: an open-loop asyncio load generator with keep-alive.

Requests are scheduled at the configured rate (shaped by the pattern) whether or not the
previous ones finished, as real clients arrive, but in-flight requests are capped so an
overloaded target slows the generator instead of piling up sockets. Every run is bounded
in rate, count and time. Each response's ``X-Served-By`` tells which backend served it,
so the result shows the spread and, for keyed traffic, which keys changed server mid-run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import socket
import ssl as ssl_module
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from engine.stats import LatencyHistogram
from lbtui.traffic.patterns import Pattern, Pick, make_pattern

SERVED_BY = "X-Served-By"
MAX_RPS = 20_000.0
MAX_DURATION = 3600.0
MAX_ERROR_TIMES = 10_000
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")


class TargetRefused(ValueError):
    """The target is not on this machine and remote traffic was not allowed."""


@dataclass(slots=True)
class RequestSpec:
    """One request to send. ``expect`` may check the answer and return a failure reason."""

    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    expect: Callable[[int, bytes], str | None] | None = None


RequestFactory = Callable[[Pick, random.Random], RequestSpec]


@dataclass(slots=True)
class SimulationResult:
    """What a run did, as the client saw it."""

    target: str
    pattern: str
    planned: int
    sent: int = 0
    completed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    servers: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed: float = 0.0
    key_servers: dict[str, str] = field(default_factory=dict)  # key -> last server seen
    key_moves: Counter[str] = field(default_factory=Counter)  # key -> times it changed server
    client_moves: Counter[int] = field(default_factory=Counter)
    check_failures: Counter[str] = field(default_factory=Counter)
    error_times: list[float] = field(default_factory=list)  # seconds into the run

    @property
    def transport_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def failed(self) -> int:
        """Requests the client would call failed: no answer, or a 5xx."""
        return self.transport_errors + sum(n for code, n in self.statuses.items() if code >= 500)

    @property
    def keys_changed(self) -> int:
        return len(self.key_moves)

    @property
    def clients_changed(self) -> int:
        return len(self.client_moves)

    @property
    def achieved_rps(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return self.latency.percentile(p) * 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "pattern": self.pattern,
            "planned": self.planned,
            "sent": self.sent,
            "completed": self.completed,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed, 3),
            "achieved_rps": round(self.achieved_rps, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "servers": dict(self.servers.most_common()),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p90_ms": round(self.percentile_ms(90), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "keys_seen": len(self.key_servers),
            "keys_changed": self.keys_changed,
            "clients_changed": self.clients_changed,
            "check_failures": dict(self.check_failures),
        }


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip in _LOOPBACK_V4 if ip.version == 4 else ip == _LOOPBACK_V6


async def check_target(url: str, allow_remote: bool = False) -> None:
    """Refuse a target that resolves to anything but 127.0.0.0/8 or ::1 (unless allowed)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port past 65535 or not a number
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"target {url!r}: expected http://HOST:PORT/ or https://HOST:PORT/")
    if allow_remote:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(parts.hostname, port or 80, type=socket.SOCK_STREAM), timeout=5
        )
    except (OSError, TimeoutError) as exc:
        raise TargetRefused(f"target {parts.hostname!r} does not resolve: {exc}") from None
    remote = sorted({info[4][0] for info in infos if not _is_loopback(info[4][0])})
    if remote or not infos:
        raise TargetRefused(
            f"target {parts.hostname!r} resolves to {', '.join(remote) or 'nothing'}, not loopback;"
            " pass --allow-remote to send traffic off this machine"
        )


def client_address(client: int) -> str:
    """A distinct loopback source address per simulated client: 127.1.0.1, 127.1.0.2, ..."""
    n = client + 1
    return f"127.1.{(n >> 8) & 255}.{n & 255}"


def default_factory(path: str, key_header: str) -> RequestFactory:
    """GET ``path`` carrying the pick's key in ``key_header``."""

    def make(pick: Pick, rng: random.Random) -> RequestSpec:
        headers = {key_header: pick.key} if pick.key is not None and key_header else {}
        return RequestSpec("GET", path, headers)

    return make


class _Run:
    """The mutable state of one simulation (kept off the public result's API)."""

    def __init__(self, base: str, result: SimulationResult, session: aiohttp.ClientSession, timeout: float) -> None:
        self.base = base
        self.result = result
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.cookies: dict[int, dict[str, str]] = {}
        self.client_servers: dict[int, str] = {}
        self.started = time.monotonic()
        self.on_done: Callable[[], None] | None = None
        self.client_sessions: dict[int, aiohttp.ClientSession] | None = None
        self.connector_options: dict[str, Any] = {}

    def session_for(self, client: int) -> aiohttp.ClientSession:
        """The shared pool, or with ``client_ips`` one pool per client bound to its own address."""
        sessions = self.client_sessions
        if sessions is None:
            return self.session
        session = sessions.get(client)
        if session is None:
            connector = aiohttp.TCPConnector(local_addr=(client_address(client), 0), **self.connector_options)
            session = sessions[client] = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return session

    async def one(self, pick: Pick, spec: RequestSpec, ssl: Any) -> None:
        result = self.result
        headers = dict(spec.headers)
        jar = self.cookies.get(pick.client)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        began = time.perf_counter()
        try:
            async with self.session_for(pick.client).request(
                spec.method, self.base + spec.path, headers=headers, json=spec.json, timeout=self.timeout, ssl=ssl
            ) as resp:
                body = await resp.read()
                status, server = resp.status, resp.headers.get(SERVED_BY)
                set_cookies = resp.headers.getall("Set-Cookie", [])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            result.errors[type(exc).__name__] += 1
            self._error_at()
            return
        finally:
            result.completed += 1
            if self.on_done is not None:
                self.on_done()
        result.latency.record(time.perf_counter() - began)
        result.statuses[status] += 1
        if status >= 500:
            self._error_at()
        if set_cookies:
            self._store_cookies(pick.client, set_cookies)
        if spec.expect is not None:
            reason = spec.expect(status, body)
            if reason:
                result.check_failures[reason] += 1
        if server is None:
            return
        result.servers[server] += 1
        if pick.key is not None:
            previous = result.key_servers.get(pick.key)
            if previous is not None and previous != server:
                result.key_moves[pick.key] += 1
            result.key_servers[pick.key] = server
        previous = self.client_servers.get(pick.client)
        if previous is not None and previous != server:
            result.client_moves[pick.client] += 1
        self.client_servers[pick.client] = server

    def _error_at(self) -> None:
        if len(self.result.error_times) < MAX_ERROR_TIMES:
            self.result.error_times.append(time.monotonic() - self.started)

    def _store_cookies(self, client: int, values: list[str]) -> None:
        jar = self.cookies.setdefault(client, {})
        for value in values:
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(value)
            except CookieError:  # a malformed Set-Cookie is the server's bug, not a crash
                continue
            for name, morsel in parsed.items():
                jar[name] = morsel.value


async def run_simulation(
    target: str,
    *,
    rps: float = 50.0,
    duration: float = 10.0,
    pattern: str | Pattern = "uniform",
    keys: int = 1000,
    clients: int = 1,
    key_header: str = "X-Key",
    max_requests: int | None = None,
    concurrency: int = 128,
    timeout: float = 10.0,
    allow_remote: bool = False,
    verify_tls: bool = True,
    ca_file: str | None = None,
    cookies: dict[int, dict[str, str]] | None = None,
    client_ips: bool = False,
    seed: int | None = None,
    request_factory: RequestFactory | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SimulationResult:
    """Send ``rps`` requests per second for ``duration`` seconds (at most ``max_requests``).

    ``stop`` ends the run early; in-flight requests are then awaited up to ``timeout``.
    The count bound defaults to ``ceil(rps * duration)``. ``cookies`` (client -> jar) is
    used and updated in place, so a later run can continue the same clients' sessions.
    ``client_ips`` sends each client from its own 127.1.x.y address (loopback targets only),
    so per-client limits and IP stickiness see distinct clients. ``ca_file`` verifies an https target against that certificate (e.g. a self-signed one).
    """
    if not 0 < rps <= MAX_RPS:
        raise ValueError(f"rps must be above 0 and at most {MAX_RPS:g}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be above 0 and at most {MAX_DURATION:g} seconds")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    await check_target(target, allow_remote)
    shape = pattern if isinstance(pattern, Pattern) else make_pattern(pattern, keys, clients)
    parts = urlsplit(target)
    base = f"{parts.scheme}://{parts.netloc}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    factory = request_factory or default_factory(path, key_header)
    planned = max_requests if max_requests is not None else math.ceil(rps * duration)
    result = SimulationResult(target, str(shape.name), planned)
    rng = random.Random(seed)
    ssl: Any = None
    if parts.scheme == "https" and not verify_tls:
        ssl = False
    elif parts.scheme == "https" and ca_file:
        ssl = ssl_module.create_default_context(cafile=ca_file)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
    gate = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        run = _Run(base, result, session, timeout)
        if cookies is not None:
            run.cookies = cookies
        if client_ips:
            if shape.clients > 65_000:
                raise ValueError("client_ips supports at most 65000 clients")
            run.client_sessions = {}
            run.connector_options = {"limit": concurrency}
        if on_progress is not None:
            run.on_done = lambda: on_progress(result.completed, planned)
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + duration
        next_at = start

        def release(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            gate.release()

        try:
            while result.sent < planned and not (stop is not None and stop.is_set()):
                now = loop.time()
                if now >= deadline:
                    break
                factor = shape.rate_factor(now - start)
                if factor <= 0:
                    next_at = now + 0.01
                    await asyncio.sleep(0.01)
                    continue
                next_at += 1.0 / (rps * factor)
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                await gate.acquire()
                pick = shape.pick(rng)
                task = asyncio.create_task(run.one(pick, factory(pick, rng), ssl))
                tasks.add(task)
                task.add_done_callback(release)
                result.sent += 1
            if tasks:
                await asyncio.wait(set(tasks), timeout=timeout + 1)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            result.elapsed = loop.time() - start
            for client_session in (run.client_sessions or {}).values():
                await client_session.close()
    return result
