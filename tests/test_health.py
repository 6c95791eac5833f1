"""Active health checks against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest

from engine import LoadBalancer, Server
from engine import events as ev
from engine.health import HealthChecker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_server(status: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def test_tcp_probe_up_and_down():
    server = await http_server(200)
    port = server.sockets[0].getsockname()[1]
    checker = HealthChecker(timeout=1.0)
    assert (await checker.probe(Server("127.0.0.1", port))).ok
    result = await checker.probe(Server("127.0.0.1", free_port()))
    assert not result.ok and result.error
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("status,ok", [(200, True), (204, True), (503, False), (404, False)])
async def test_http_probe_checks_the_status(status, ok):
    server = await http_server(status)
    port = server.sockets[0].getsockname()[1]
    checker = HealthChecker(timeout=1.0, http_path="/health")
    result = await checker.probe(Server("127.0.0.1", port))
    assert result.ok is ok
    if not ok:
        assert str(status) in result.error
    server.close()
    await server.wait_closed()


async def test_probe_times_out_on_a_silent_server():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checker = HealthChecker(timeout=0.2, http_path="/health")
    result = await checker.probe(Server("127.0.0.1", port))
    assert not result.ok and "timeout" in result.error
    server.close()


async def test_loop_marks_down_after_fall_and_up_after_rise():
    listener = await http_server(200)
    port = listener.sockets[0].getsockname()[1]
    target = Server("127.0.0.1", port, name="web")
    lb = LoadBalancer([target])
    kinds: list[str] = []
    lb.events.subscribe(lambda e: kinds.append(e.kind))
    downs, ups = [], []
    checker = HealthChecker(
        interval=0.02, timeout=0.5, healthy_threshold=2, unhealthy_threshold=3,
        servers=lambda: lb.servers, report=lb.report_check,
    )
    checker.on_unhealthy(downs.append)
    checker.on_healthy(ups.append)
    checker.start()
    try:
        await wait_for(lambda: checker.rounds >= 2)
        assert target.healthy and not downs
        listener.close()
        await listener.wait_closed()
        await wait_for(lambda: not target.healthy)
        assert downs == [target] and target.health.failures == 0
        assert lb.route({}) is None
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        await wait_for(lambda: target.healthy)
        assert ups == [target]
        assert kinds.count(ev.HEALTH_CHANGED) == 2
    finally:
        await checker.aclose()
        listener.close()
    assert not checker.running


def test_progress_shows_the_way_to_a_transition():
    server = Server("h", 1)
    server.health.fall, server.health.rise = 3, 2
    server.health.observe(False)
    server.health.observe(False)
    assert server.status() == "up 2/3 fails"
    server.health.observe(False)
    server.health.observe(True)
    assert server.status() == "down 1/2 ok"
