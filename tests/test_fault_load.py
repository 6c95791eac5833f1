"""Faults under steady load: what a client sees when backends die, stall, flap or all go away,
and when the operator reloads, adds, removes or shuts down while traffic flows.

Backends are real processes (``lbtui backend``) killed with SIGKILL or frozen with
SIGSTOP; the load is bounded keep-alive clients on loopback. Each test records the
figures docs/resilience.md quotes (see ``record_figures``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cloud.backend import BackendHandle, start_backend
from engine import events as ev
from engine.events import Event
from engine.gateway import Gateway
from engine.server import Health
from fault_support import (
    CLIENT_TIMEOUT,
    fd_count,
    BackendProcess,
    Load,
    gateway_toml,
    listener_url,
    record_figures,
    start_backend_processes,
    start_gateway,
    stop_all,
    tcp_connections_to,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def procs() -> AsyncIterator[list[BackendProcess]]:
    backends = await start_backend_processes(3)
    yield backends
    await stop_all(backends)


@pytest.fixture
async def handles() -> AsyncIterator[list[BackendHandle]]:
    """In-process backends, for cases that need no process to die (faster to start)."""
    started = [await start_backend(f"b{i}") for i in range(3)]
    yield started
    await asyncio.gather(*(h.stop() for h in started), return_exceptions=True)


async def _gateway(tmp_path: Path, backends: list[BackendProcess], *sections: str) -> Gateway:
    return await start_gateway(
        tmp_path / "lbtui.toml", gateway_toml([(b.name, b.port) for b in backends], *sections)
    )


async def test_kill9_one_of_three_under_load_no_client_errors(
    tmp_path: Path, procs: list[BackendProcess]
) -> None:
    gw = await _gateway(tmp_path, procs)
    seen: list[Event] = []
    gw.events.subscribe(seen.append)
    load = await Load(listener_url(gw), clients=6, rate=60).start()
    try:
        await load.wait_for_more(150)
        assert set(load.served_by()) == {"b0", "b1", "b2"}
        victim = gw.lb.require("b1")
        killed_at = time.monotonic()
        await procs[1].kill()
        to_down = await wait_until(lambda: not victim.available, 5, "b1 taken out")
        down_at = time.monotonic()
        await load.wait_for_more(300)
    finally:
        await load.stop()
        await gw.stop()
    failures = load.failures()
    after = load.served_by(since=down_at + 0.05)
    record_figures(
        "kill -9 one of three",
        requests=load.count(),
        client_errors=len(failures),
        seconds_to_mark_down=round(to_down, 3),
        how=victim.status() + f" / health {victim.health.state.value}, ejections {victim.ejections}",
        retried_ok=sum(1 for o in load.outcomes if o.at >= killed_at and o.at < down_at),
    )
    assert failures == [], failures[:5]
    assert after["b1"] == 0 and after["b0"] > 0 and after["b2"] > 0
    # The operator is told: an ejection or health event names the dead server.
    assert any(e.server == "b1" and e.kind in (ev.HEALTH_CHANGED, ev.EJECTED) for e in seen)


async def test_stalled_backend_times_out_is_ejected_and_connections_do_not_pile_up(
    tmp_path: Path, procs: list[BackendProcess]
) -> None:
    gw = await _gateway(
        tmp_path,
        procs,
        "[proxy]\nupstream_timeout = 0.5\nconnect_timeout = 0.5\n",
        "[outlier]\nconsecutive_errors = 2\nbase_ejection = 30\n",
    )
    proxy = gw.listeners[0].proxy
    stalled = procs[2]
    victim = gw.lb.require("b2")
    load = await Load(listener_url(gw), clients=6, rate=50).start()
    peak_upstream = peak_clients = peak_fds = 0
    try:
        await load.wait_for_more(100)
        fds_before = fd_count()
        stalled_at = time.monotonic()
        stalled.stall()
        to_out = await wait_until(lambda: not victim.available, 5, "stalled b2 taken out")
        out_at = time.monotonic()
        # Watch the stalled backend's connections while traffic goes on for a while.
        target = load.count() + 300
        while load.count() < target:
            peak_upstream = max(peak_upstream, tcp_connections_to(stalled.port))
            peak_clients = max(peak_clients, proxy.connections)
            peak_fds = max(peak_fds, fd_count())
            await asyncio.sleep(0.02)
        settled = time.monotonic()
        in_flight = proxy.active_requests
    finally:
        await load.stop()
        stalled.resume()
        await gw.stop()
    timeouts = load.statuses(since=stalled_at)[504]
    late = load.failures(since=out_at + 0.6)  # requests already on b2 when it went out get 504
    record_figures(
        "stalled backend (SIGSTOP)",
        requests=load.count(),
        gateway_timeouts_504=timeouts,
        seconds_to_take_out=round(to_out, 3),
        how=victim.status() + f" / health {victim.health.state.value}, ejections {victim.ejections}",
        peak_connections_to_stalled=peak_upstream,
        peak_client_connections=peak_clients,
        failures_after_out=len(late),
        fds_before_stall=fds_before,
        peak_fds_while_stalled=peak_fds,
    )
    assert timeouts >= 1  # the upstream timeout fired (a stall is not retried: it may have side effects)
    assert late == [], late[:5]
    # No pile-up: never more connections to the stalled server than clients plus a health probe.
    assert peak_upstream <= 6 + 2
    assert peak_clients <= 6
    assert peak_fds <= fds_before + 8
    assert in_flight <= 6
    assert load.served_by(since=settled - 1.0)["b2"] == 0


class Flapper:
    """A backend whose health answers follow ``pattern`` probe by probe (True = 200)."""

    def __init__(self, pattern: list[bool]) -> None:
        self.pattern = pattern
        self.probes = 0
        self.ok = True
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _health(self, request: web.Request) -> web.Response:
        self.ok = self.pattern[self.probes % len(self.pattern)]
        self.probes += 1
        return web.Response(status=200 if self.ok else 503)

    async def _any(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ok else 503, headers={"X-Served-By": "flap"})

    async def start(self) -> Flapper:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_flapping_backend_is_held_out_by_rise_and_fall(
    tmp_path: Path, handles: list[BackendHandle]
) -> None:
    flap = await Flapper([True, True, False, False]).start()  # never 3 good probes in a row
    text = gateway_toml(
        [(b.name, b.port) for b in handles[:2]] + [("flap", flap.port)],
        health='[health]\ninterval = 0.05\ntimeout = 0.3\nrise = 3\nfall = 2\nhttp_path = "/health"\n',
    )
    gw = await start_gateway(tmp_path / "lbtui.toml", text)
    transitions: list[str] = []
    gw.events.subscribe(
        lambda e: transitions.append(e.detail.get("state", "?"))
        if e.kind == ev.HEALTH_CHANGED and e.server == "flap"
        else None
    )
    server = gw.lb.require("flap")
    load = await Load(listener_url(gw), clients=4, rate=50).start()
    try:
        await wait_until(lambda: server.health.state is Health.DOWN, 5, "flapper marked down")
        down_at = time.monotonic()
        probes_at_down = flap.probes
        await wait_until(lambda: flap.probes >= probes_at_down + 16, 10, "four more flap cycles")
        held_until = time.monotonic()
        held_out = server.health.state is Health.DOWN
        transitions_while_flapping = len(transitions)
        flap.pattern = [True]
        to_back = await wait_until(lambda: server.available, 5, "flapper back once steady")
        back_at = time.monotonic()
        await load.wait_for_more(200)
    finally:
        await load.stop()
        await gw.stop()
        await flap.stop()
    served_while_held = sum(
        1 for o in load.outcomes if down_at + 0.05 <= o.at <= held_until and o.server == "flap"
    )
    record_figures(
        "flapping backend",
        probes_while_held_out=flap.probes - probes_at_down,
        health_transitions=transitions_while_flapping,
        requests_to_flapper_while_held=served_while_held,
        client_503s_from_flapper_before_marked_down=len(load.failures()),
        seconds_to_rejoin_when_steady=round(to_back, 3),
    )
    assert held_out
    assert transitions_while_flapping == 1  # down once, never back up while it flaps
    assert served_while_held == 0
    assert load.served_by(since=back_at + 0.1)["flap"] > 0


async def test_all_backends_down_fast_503s_then_recovery_without_restart(
    tmp_path: Path, procs: list[BackendProcess]
) -> None:
    gw = await _gateway(tmp_path, procs)
    url = listener_url(gw)
    try:
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            async with session.get(url) as response:
                assert response.status == 200
            await asyncio.gather(*(p.kill() for p in procs))
            to_down = await wait_until(lambda: not any(s.available for s in gw.lb.servers), 5, "all down")
            latencies = []
            for _ in range(100):
                started = time.perf_counter()
                async with session.get(url) as response:
                    body = await response.read()
                    latencies.append(time.perf_counter() - started)
                    assert response.status == 503, body
            restarted_at = time.monotonic()
            await asyncio.gather(*(p.start() for p in procs))  # same ports
            to_up = await wait_until(lambda: all(s.available for s in gw.lb.servers), 10, "all back")
            statuses = []
            for _ in range(30):
                async with session.get(url) as response:
                    statuses.append(response.status)
            recovered_in = time.monotonic() - restarted_at
    finally:
        await gw.stop()
    latencies.sort()
    record_figures(
        "all backends down, then back",
        seconds_to_mark_all_down=round(to_down, 3),
        p50_503_ms=round(statistics.median(latencies) * 1000, 2),
        max_503_ms=round(latencies[-1] * 1000, 2),
        seconds_to_all_up_after_restart=round(to_up, 3),
        recovered_ok=statuses.count(200),
        recovered_in_s=round(recovered_in, 3),
    )
    assert latencies[-1] < 0.5  # a 503 is answered at once, not after a timeout
    assert statuses == [200] * 30


async def test_reload_and_server_add_remove_under_load_zero_failures(
    tmp_path: Path, handles: list[BackendHandle]
) -> None:
    path = tmp_path / "lbtui.toml"
    names = [(b.name, b.port) for b in handles]
    gw = await start_gateway(path, gateway_toml(names[:2]))
    assert gw.admin is not None
    admin = gw.admin.url
    load = await Load(listener_url(gw), clients=6, rate=60).start()
    steps: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            await load.wait_for_more(100)
            path.write_text(gateway_toml(names))  # add b2 by file
            report = await gw.reload()
            assert report["added"] == ["b2"]
            steps.append("reload +b2")
            await wait_until(lambda: load.served_by()["b2"] > 20, 10, "b2 serving")
            path.write_text(gateway_toml(names[1:]))  # remove b0 by file
            report = await gw.reload()
            assert report["removed"] == ["b0"]
            steps.append("reload -b0")
            await load.wait_for_more(100)
            async with session.post(
                f"{admin}/api/servers", json={"name": "b0-again", "host": "127.0.0.1", "port": handles[0].port}
            ) as response:
                assert response.status == 201
            steps.append("admin +b0-again")
            await wait_until(lambda: load.served_by()["b0"] > 0, 10, "b0 serving again")
            async with session.delete(f"{admin}/api/servers/b1") as response:
                assert response.status == 200
            steps.append("admin -b1")
            async with session.post(f"{admin}/api/reload") as response:  # the admin call reloads too
                assert response.status == 200
            steps.append("admin reload (b1 back from the file)")
            for name in ("b2", "b1"):
                async with session.post(f"{admin}/api/servers/{name}/drain") as response:
                    assert response.status == 200
                async with session.post(f"{admin}/api/servers/{name}/ready") as response:
                    assert response.status == 200
            steps.append("drain/ready b2, b1")
            await load.wait_for_more(150)
    finally:
        await load.stop()
        await gw.stop()
    failures = load.failures()
    record_figures(
        "reload, add and remove under load",
        requests=load.count(),
        failed=len(failures),
        steps=steps,
        served_by=dict(load.served_by()),
    )
    assert failures == [], failures[:5]


async def test_graceful_shutdown_under_load_finishes_in_flight(tmp_path: Path) -> None:
    slow = await start_backend("slow", latency_ms=400)
    gw = await start_gateway(tmp_path / "lbtui.toml", gateway_toml([("slow", slow.port)]))
    proxy = gw.listeners[0].proxy
    port = gw.listeners[0].port
    url = listener_url(gw, "/echo")
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=CLIENT_TIMEOUT) as session:

            async def one(i: int) -> tuple[int, str]:
                async with session.post(url, data=b"x" * (1000 + i)) as response:
                    data = await response.json()
                    return response.status, str(data["body_length"])

            tasks = [asyncio.create_task(one(i)) for i in range(30)]
            await wait_until(lambda: proxy.active_requests == 30, 5, "30 requests in flight")
            started = time.monotonic()
            stopping = asyncio.create_task(gw.stop(grace=5))
            await wait_until(lambda: not proxy.listening, 2, "listener closed")
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await stopping
            took = time.monotonic() - started
    finally:
        await gw.stop()
        await slow.stop()
    record_figures(
        "graceful shutdown under load",
        in_flight=30,
        completed_200=sum(1 for r in results if isinstance(r, tuple) and r[0] == 200),
        stop_seconds=round(took, 3),
    )
    assert results == [(200, str(1000 + i)) for i in range(30)]
    assert took < 5
