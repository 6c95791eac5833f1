"""InProcessControl: the engine seen through the app's interface."""

from __future__ import annotations

import pytest

from engine import LoadBalancer, Server
from lbtui.control.base import ControlError, EventView, normalize_points, parse_status
from lbtui.control.inprocess import InProcessControl


def make() -> tuple[LoadBalancer, InProcessControl]:
    lb = LoadBalancer([Server("127.0.0.1", 9001 + i, i + 1, name=f"web-{i + 1}") for i in range(3)],
                      algorithm="consistent_hash")
    return lb, InProcessControl(lb, status=lambda: {"listeners": [{"url": "http://127.0.0.1:8080"}],
                                                    "components": {"store": {"state": "sqlite"}}})


async def test_views_and_ring_shares() -> None:
    lb, control = make()
    servers = await control.servers()
    assert [(s.name, s.weight, s.status) for s in servers] == [("web-1", 1, "up"), ("web-2", 2, "up"),
                                                               ("web-3", 3, "up")]
    totals = await control.totals()
    assert totals.listeners == ("http://127.0.0.1:8080",) and totals.components == {"store": "sqlite"}
    ring = await control.ring(512)
    assert len(ring.points) <= 512 and ring.points == sorted(ring.points)
    assert ring.shares["web-3"] > ring.shares["web-1"]  # virtual nodes follow weight
    lb.set_algorithm("maglev")
    table = await control.ring(512)
    assert table.kind == "maglev" and sum(table.shares.values()) == pytest.approx(1.0)
    lb.set_health("web-3", False)  # Maglev serves only available servers
    assert "web-3" not in {n for n, share in (await control.ring(512)).shares.items() if share > 0}


async def test_refusals_become_control_errors_and_events_are_views() -> None:
    lb, control = make()
    seen: list[EventView] = []
    stop = control.subscribe(seen.append)
    with pytest.raises(ControlError, match="no server"):
        await control.drain("nope")
    with pytest.raises(ControlError, match="weight"):
        await control.set_weight("web-1", -1)
    with pytest.raises(ControlError, match="already exists"):
        await control.add_server("web-1", "127.0.0.1", 1, 1)
    with pytest.raises(ControlError, match="unknown algorithm"):
        await control.set_algorithm("fastest")
    await control.set_weight("web-1", 7)
    stop()
    await control.set_weight("web-1", 8)
    assert [(e.kind, e.server, e.detail["new"]) for e in seen] == [("weight_changed", "web-1", 7)]


def test_normalize_points_and_status_parsing() -> None:
    assert normalize_points([(2**63, "b"), (2**62, "a")]) == [(0.25, "a"), (0.5, "b")]
    listeners, components = parse_status({"listeners": [{"host": "0.0.0.0", "port": 80}],
                                          "components": {"aws": {"error": "throttled"}, "sync": "running"}})
    assert listeners == ("0.0.0.0:80",) and components == {"aws": "error", "sync": "running"}


def test_request_sampler_counts_everything_and_hands_out_two_a_second() -> None:
    from engine.accesslog import AccessRecord
    from lbtui.control.sampler import RequestSampler

    now = [100.0]
    sampler = RequestSampler(clock=lambda: now[0])
    assert sampler.take() is None  # nothing seen yet

    def record(i: int, status: int = 200) -> AccessRecord:
        return AccessRecord(1.0, "127.0.0.1", "GET", f"/item/{i}", status, "web-1", 0, 14, 0.4, 0.6)

    for i in range(50):
        sampler(record(i))
    first = sampler.take()
    assert first is not None and (first.path, first.among) == ("/item/49", 50)
    sampler(record(50))
    now[0] += 0.25
    assert sampler.take() is None  # at most one sample per half second
    now[0] += 0.25
    second = sampler.take()
    assert second is not None and (second.path, second.among) == ("/item/50", 1)
    now[0] += 1.0
    assert sampler.take() is None  # nothing new since the last sample
    assert "GET /item/50 → web-1 200" in second.describe()


async def test_gateway_control_samples_real_requests_and_unhooks_on_close() -> None:
    import aiohttp
    from aiohttp import web

    from engine.config import AdminConfig, Config, HealthConfig, ListenerConfig, ServerConfig
    from engine.gateway import Gateway

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = Config(
        listeners=(ListenerConfig("web", "127.0.0.1", 0, "http", None, None),),
        servers=(ServerConfig("b1", "127.0.0.1", port),),
        admin=AdminConfig(enabled=False),
        health=HealthConfig(enabled=False),
    ).with_overrides()
    gateway = Gateway(config)
    await gateway.start()
    try:
        control = InProcessControl.for_gateway(gateway)
        await control.start()
        proxy = gateway.listeners[0].proxy
        assert control.sampler in proxy.observers  # type: ignore[union-attr]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for i in range(5):
                async with session.get(f"{gateway.listeners[0].url}/books/{i}") as response:
                    assert response.status == 200
                # The sampler keeps one request, then leaves the proxy's hot path alone.
                assert control.sampler not in proxy.observers  # type: ignore[union-attr]
        sample = control.sampled_request()
        assert sample is not None and (sample.server, sample.status, sample.among) == ("b1", 200, 5)
        assert sample.path == "/books/0"
        assert control.sampler in proxy.observers  # type: ignore[union-attr]  # armed for the next sample
        totals = await control.totals()
        assert totals.listeners == (gateway.listeners[0].url,)
        await control.close()
        assert control.sampler not in proxy.observers  # type: ignore[union-attr]
    finally:
        await gateway.stop(1.0)
        await runner.cleanup()
