"""HTTP proxy under failure: failover, 502/503/504, stickiness, 429, drain, graceful stop."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from proxy_support import make_proxy, read_response, start_backends, wait_for

from engine.proxy import ProxySettings


@pytest.fixture
async def backends():
    started = await start_backends(3)
    yield started
    for backend in started:
        await backend.stop()


async def test_backend_killed_between_requests_gives_no_client_error(backends) -> None:
    fx = await make_proxy(backends, algorithm="round_robin")
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(6):  # warm pooled connections to every server
                async with session.get(fx.url + "/") as response:
                    assert response.status == 200
            await backends[1].stop()  # pooled connection and listener both gone
            names = []
            for _ in range(12):
                async with session.get(fx.url + "/") as response:
                    assert response.status == 200
                    names.append(response.headers["X-Served-By"])
        assert "b1" not in names and {"b0", "b2"} <= set(names)
        assert fx.lb.get_server("b1").stats.errors >= 1  # passive detection saw the failure
    finally:
        await fx.proxy.stop(1)


async def test_reset_before_response_is_retried_for_idempotent_only(backends) -> None:
    fx = await make_proxy(backends, algorithm="round_robin")
    try:
        async with aiohttp.ClientSession() as session:
            # /reset aborts on every server: GET is retried (1 + 2 retries) then 502.
            async with session.get(fx.url + "/reset") as response:
                assert response.status == 502
                assert b"bad gateway" in await response.read()
            assert sum(1 for b in backends for s in b.seen if s.path == "/reset") == 3
            async with session.post(fx.url + "/reset", data=b"x") as response:
                assert response.status == 502
            assert sum(1 for b in backends for s in b.seen if s.path == "/reset") == 4  # POST not retried
    finally:
        await fx.proxy.stop(1)


async def test_all_down_gives_503_and_refused_connect_fails_over(backends) -> None:
    fx = await make_proxy(backends, algorithm="round_robin")
    try:
        for backend in backends[:2]:
            await backend.stop()
        async with aiohttp.ClientSession() as session:
            for _ in range(3):  # connect refused on b0/b1 fails over to b2
                async with session.get(fx.url + "/") as response:
                    assert response.status == 200 and response.headers["X-Served-By"] == "b2"
            for server in fx.lb.servers:
                fx.lb.set_health(server.name, False)
            async with session.get(fx.url + "/") as response:
                assert response.status == 503
                assert b"service unavailable" in await response.read()
    finally:
        await fx.proxy.stop(1)


async def test_upstream_timeout_gives_504(backends) -> None:
    fx = await make_proxy(backends, ProxySettings(upstream_timeout=0.3, connect_timeout=1.0))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(fx.url + "/slow?ms=3000") as response:
                assert response.status == 504
    finally:
        await fx.proxy.stop(1)


async def test_sticky_cookie_is_inserted_and_honoured(backends) -> None:
    fx = await make_proxy(backends, algorithm="round_robin", sticky=True, sticky_method="cookie")
    try:
        async with aiohttp.ClientSession() as first:
            async with first.get(fx.url + "/") as response:
                cookie = response.headers["Set-Cookie"]
                owner = response.headers["X-Served-By"]
            assert cookie.startswith(f"LBTUI_SERVER={owner}")
        headers = {"Cookie": f"LBTUI_SERVER={owner}"}
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(fx.url + "/", headers=headers) as response:
                    assert response.headers["X-Served-By"] == owner
                    assert "Set-Cookie" not in response.headers
    finally:
        await fx.proxy.stop(1)


async def test_client_rate_limit_answers_429_with_retry_after(backends) -> None:
    fx = await make_proxy(backends, client_rate_limit=3)
    try:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(5):
                async with session.get(fx.url + "/") as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert int(response.headers["Retry-After"]) >= 1
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        assert sum(len(b.seen) for b in backends) == 3
    finally:
        await fx.proxy.stop(1)


async def test_drain_finishes_in_flight_and_sends_new_requests_elsewhere(backends) -> None:
    fx = await make_proxy(backends[:2], algorithm="round_robin")
    try:
        async with aiohttp.ClientSession() as session:
            backends[0].release.clear()
            held = asyncio.ensure_future(session.get(fx.url + "/hold"))  # goes to b0
            await wait_for(lambda: fx.lb.get_server("b0").active_connections == 1, what="request on b0")
            fx.lb.drain("b0")
            for _ in range(4):
                async with session.get(fx.url + "/") as response:
                    assert response.headers["X-Served-By"] == "b1"
            assert not fx.lb.is_drained("b0")
            backends[0].release.set()
            response = await held
            assert response.status == 200 and response.headers["X-Served-By"] == "b0"
            response.release()
            await wait_for(lambda: fx.lb.is_drained("b0"), what="b0 drained")
    finally:
        await fx.proxy.stop(1)


async def test_graceful_stop_finishes_in_flight_and_refuses_new(backends) -> None:
    fx = await make_proxy(backends[:1])
    backends[0].release.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    await wait_for(lambda: fx.proxy.active_requests == 1 and fx.proxy.connections == 2, what="in flight")
    stopping = asyncio.ensure_future(fx.proxy.stop(grace=5))
    assert await asyncio.wait_for(idle_reader.read(), 2) == b""  # idle keep-alive closed at once
    await asyncio.sleep(0)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    assert not stopping.done()
    backends[0].release.set()
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection") == "close"
    await asyncio.wait_for(stopping, 5)
    assert fx.proxy.connections == 0
    writer.close()
    idle_writer.close()


async def test_graceful_stop_deadline_cuts_stuck_requests(backends) -> None:
    fx = await make_proxy(backends[:1])
    backends[0].release.clear()
    _, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: fx.proxy.active_requests == 1, what="in flight")
    await asyncio.wait_for(fx.proxy.stop(grace=0.2), 3)
    assert fx.proxy.connections == 0 and fx.lb.get_server("b0").active_connections == 0
    writer.close()
    backends[0].release.set()
