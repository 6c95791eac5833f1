"""The Gateway with real sockets: start, serve, reload without drops, SIGHUP, graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud.backend import BackendHandle, start_backend
from engine.config import Config, ConfigError
from engine.gateway import Gateway
from engine.proxy.tls import self_signed_pair

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def wait_for(condition: Callable[[], bool], deadline: float = 5.0, what: str = "condition") -> None:
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.02)


def toml(backends: list[BackendHandle], *, extra: str = "", weights: dict[str, int] | None = None) -> str:
    parts = [
        '[[listeners]]\nname = "web"\nport = 0\n',
        "[admin]\nport = 0\n",
        '[health]\ninterval = 0.2\ntimeout = 1\nrise = 1\nfall = 1\nhttp_path = "/health"\n',
        extra,
    ]
    for b in backends:
        weight = (weights or {}).get(b.name, 1)
        parts.append(
            f'[[servers]]\nname = "{b.name}"\nhost = "127.0.0.1"\nport = {b.port}\nweight = {weight}\n'
        )
    return "\n".join(parts)


@pytest.fixture
async def backends() -> AsyncIterator[list[BackendHandle]]:
    handles = [await start_backend(f"b{i}") for i in range(3)]
    yield handles
    await asyncio.gather(*(h.stop() for h in handles), return_exceptions=True)


@pytest.fixture
async def slow_backend() -> AsyncIterator[BackendHandle]:
    handle = await start_backend("slow", latency_ms=600)
    yield handle
    await handle.stop()


@pytest.fixture
async def gateway(tmp_path: Path, backends: list[BackendHandle]) -> AsyncIterator[Gateway]:
    path = tmp_path / "lbtui.toml"
    path.write_text(toml(backends[:2]))
    gw = Gateway(Config.load(path), stop_grace=5)
    await gw.start()
    yield gw
    await gw.stop()


def url(gw: Gateway, path: str = "/echo", index: int = 0) -> str:
    return f"http://127.0.0.1:{gw.listeners[index].port}{path}"


async def served_by(session: aiohttp.ClientSession, target: str, n: int = 12) -> list[str]:
    names = []
    for _ in range(n):
        async with session.get(target) as response:
            assert response.status == 200
            names.append(response.headers["X-Served-By"])
    return names


async def test_serves_through_the_listener_and_exposes_admin(gateway: Gateway) -> None:
    assert gateway.admin is not None
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        assert set(await served_by(session, url(gateway))) == {"b0", "b1"}
        async with session.get(f"{gateway.admin.url}/api/status") as response:
            status = await response.json()
        assert status["state"] == "running"
        assert status["listeners"][0]["port"] == gateway.listeners[0].port
        assert status["listeners"][0]["url"].startswith("http://127.0.0.1:")
        assert status["algorithm"] == "round_robin" and status["servers"] == 2
        async with session.get(f"{gateway.admin.url}/api/servers") as response:
            servers = (await response.json())["servers"]
        assert sum(s["requests"] for s in servers) == 12
        async with session.get(f"{gateway.admin.url}/metrics") as response:
            text = await response.text()
        assert 'lbtui_listener_connections{listener="web"}' in text


async def test_components_registry_shows_in_status(gateway: Gateway) -> None:
    gateway.components["store"] = lambda: {"state": "connected", "backend": "sqlite"}
    gateway.components["broken"] = lambda: 1 / 0  # type: ignore[return-value,misc]
    status = gateway.status()
    assert status["components"]["store"] == {"state": "connected", "backend": "sqlite"}
    assert "error" in status["components"]["broken"]


async def test_health_checks_run_and_take_a_dead_server_out(
    gateway: Gateway, backends: list[BackendHandle]
) -> None:
    await backends[1].stop()
    await wait_for(lambda: not gateway.lb.require("b1").available, what="b1 marked down")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        assert set(await served_by(session, url(gateway), 6)) == {"b0"}


async def test_reload_adds_removes_and_updates_in_place(
    tmp_path: Path, gateway: Gateway, backends: list[BackendHandle]
) -> None:
    path = gateway.config.source
    assert path is not None
    old_b0 = gateway.lb.require("b0")
    gateway.lb.drain("b0")  # an operator action the file does not mention
    path.write_text(
        toml(
            [backends[0], backends[2]],
            weights={"b2": 3},
            extra='[balancer]\nalgorithm = "least_connections"\n',
        )
    )
    seen: list[Any] = []
    unsubscribe = gateway.events.subscribe(seen.append)
    report = await gateway.reload()
    unsubscribe()
    assert report["added"] == ["b2"] and report["removed"] == ["b1"]
    assert report["changed"] == ["balancer.algorithm"] and report["restart_required"] == []
    assert gateway.lb.require("b0") is old_b0, "kept in place, with its stats"
    assert old_b0.admin_state.value == "drain", "the runtime drain survives a reload that did not touch b0"
    assert gateway.lb.require("b2").weight == 3
    assert gateway.lb.algorithm == "least_connections"
    assert any(e.kind == "config_reloaded" for e in seen)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        assert set(await served_by(session, url(gateway), 6)) == {"b2"}


async def test_bad_reload_keeps_the_running_config(gateway: Gateway) -> None:
    path = gateway.config.source
    assert path is not None
    before = gateway.config
    path.write_text('[[servers]]\nhost = "127.0.0.1"\nport = 99999\n')
    with pytest.raises(ConfigError, match=r"servers\[0\]\.port"):
        await gateway.reload()
    assert gateway.config is before and len(gateway.lb.servers) == 2
    assert gateway.admin is not None
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.post(f"{gateway.admin.url}/api/reload") as response:
            assert response.status == 422
            assert "servers[0].port" in (await response.json())["error"]


async def test_reload_reports_sections_that_need_a_restart(
    gateway: Gateway, backends: list[BackendHandle]
) -> None:
    path = gateway.config.source
    assert path is not None
    path.write_text(toml(backends[:2], extra='[proxy]\nretries = 0\n[balancer]\nsticky = "cookie"\n'))
    report = await gateway.reload()
    assert set(report["restart_required"]) == {"proxy", "balancer.sticky"}
    assert gateway.listeners[0].port == gateway.status()["listeners"][0]["port"], "listeners kept"


async def test_reload_under_traffic_drops_nothing(
    gateway: Gateway, backends: list[BackendHandle], slow_backend: BackendHandle
) -> None:
    path = gateway.config.source
    assert path is not None
    path.write_text(toml([*backends[:2], slow_backend]))
    await gateway.reload()
    statuses: list[int] = []

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(8):
            async with session.get(url(gateway)) as response:
                await response.read()
                statuses.append(response.status)

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        traffic = [asyncio.ensure_future(client(session)) for _ in range(6)]
        for i in range(6):  # flip membership and algorithm while requests are in flight
            chosen = [backends[i % 3], slow_backend] if i % 2 else [*backends, slow_backend]
            algorithm = "least_connections" if i % 2 else "round_robin"
            path.write_text(toml(chosen, extra=f'[balancer]\nalgorithm = "{algorithm}"\n'))
            await gateway.reload()
            await asyncio.sleep(0.1)
        await asyncio.gather(*traffic)
    assert statuses == [200] * 48


async def test_sighup_reloads_the_file(gateway: Gateway, backends: list[BackendHandle]) -> None:
    path = gateway.config.source
    assert path is not None
    undo = gateway.install_signal_handlers()
    try:
        path.write_text(toml(backends))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: gateway.reloads == 1, what="SIGHUP reload")
        assert gateway.lb.get_server("b2") is not None
        path.write_text("not toml [")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(
            lambda: gateway.last_reload is not None and not gateway.last_reload["ok"], what="failed reload"
        )
        assert "invalid TOML" in gateway.last_reload["error"]
        assert len(gateway.lb.servers) == 3 and gateway.status()["state"] == "running"
    finally:
        undo()


async def test_graceful_stop_finishes_in_flight_requests(tmp_path: Path, slow_backend: BackendHandle) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(toml([slow_backend]))
    gw = Gateway(Config.load(path))
    await gw.start()
    port = gw.listeners[0].port
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        request = asyncio.ensure_future(session.get(url(gw)))
        await wait_for(lambda: gw.lb.require("slow").active_connections == 1, what="request in flight")
        stopping = asyncio.ensure_future(gw.stop(grace=5))
        response = await request
        assert response.status == 200 and response.headers["X-Served-By"] == "slow"
        await response.read()
        response.release()
        await stopping
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert gw.status()["state"] == "stopped"
    assert not gw._tasks, "every owned task is gone"
    assert gw.health is not None and not gw.health.running


async def test_shutdown_through_the_admin_api_stops_serve(gateway: Gateway) -> None:
    assert gateway.admin is not None
    serving = asyncio.ensure_future(gateway.serve())
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.post(f"{gateway.admin.url}/api/shutdown") as response:
            assert response.status == 202
    async with asyncio.timeout(10):
        await serving
    assert gateway.status()["state"] == "stopped"


async def test_closers_and_owned_tasks_end_on_stop(gateway: Gateway) -> None:
    closed: list[str] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    task = gateway.own(forever(), "worker")

    async def close() -> None:
        closed.append("worker")

    gateway.on_stop("worker", close)
    await gateway.stop()
    assert task.cancelled() and closed == ["worker"]


async def test_tls_and_tcp_listeners_and_the_access_log(
    tmp_path: Path, backends: list[BackendHandle]
) -> None:
    cert, key = self_signed_pair(str(tmp_path / "tls"))
    log_path = tmp_path / "access.log"
    path = tmp_path / "lbtui.toml"
    path.write_text(
        toml(backends[:1]).replace('[[listeners]]\nname = "web"\nport = 0\n', "")
        + f'\n[[listeners]]\nname = "secure"\nport = 0\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        + '[[listeners]]\nname = "l4"\nport = 0\nmode = "tcp"\n'
        + f'[access_log]\npath = "{log_path}"\n'
    )
    gw = Gateway(Config.load(path))
    await gw.start()
    try:
        assert [x.url.split(":")[0] for x in gw.listeners] == ["https", "tcp"]
        context = ssl.create_default_context(cafile=cert)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"https://127.0.0.1:{gw.listeners[0].port}/echo", ssl=context) as response:
                assert response.status == 200 and response.headers["X-Served-By"] == "b0"
            async with session.get(f"http://127.0.0.1:{gw.listeners[1].port}/echo") as response:
                assert response.status == 200 and response.headers["X-Served-By"] == "b0"
        assert gw.access_log is not None
        assert await asyncio.to_thread(gw.access_log.flush)
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert any(r["path"] == "/echo" and r["status"] == 200 and r["server"] == "b0" for r in records)
    finally:
        await gw.stop()


async def test_a_failed_start_releases_what_it_bound(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        path = tmp_path / "lbtui.toml"
        path.write_text(
            f'[[listeners]]\nname = "a"\nport = 0\n[[listeners]]\nname = "b"\nport = {taken}\n'
            "[admin]\nport = 0\n"
        )
        gw = Gateway(Config.load(path))
        with pytest.raises(OSError):
            await gw.start()
    assert gw.listeners == [] and gw.admin is None
    assert gw.status()["state"] == "stopped"
