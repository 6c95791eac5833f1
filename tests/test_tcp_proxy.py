"""TCP (L4) mode: byte splicing, client-IP hashing, connect failover, idle timeout, stop."""

from __future__ import annotations

import asyncio

import pytest
from proxy_support import wait_for

from engine.balancer import LoadBalancer
from engine.proxy import ProxySettings, TcpProxy
from engine.server import Server


class EchoServer:
    """Echoes bytes after a NAME: prefix, so the test sees which server it reached."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        prefix = self.name + b":"
        try:
            while data := await reader.read(65536):
                writer.write(prefix + data)
                prefix = b""
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


@pytest.fixture
async def echoes():
    servers = [await EchoServer(f"e{i}").start() for i in range(3)]
    yield servers
    for server in servers:
        await server.stop()


async def talk(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    data = await asyncio.wait_for(reader.readuntil(payload), 5)
    writer.close()
    return data


async def test_tcp_round_robin_and_bytes_intact(echoes) -> None:
    lb = LoadBalancer([Server("127.0.0.1", e.port, name=e.name.decode()) for e in echoes], "round_robin")
    proxy = TcpProxy(lb)
    await proxy.start()
    try:
        replies = [await talk(proxy.port, b"ping-%d" % i) for i in range(3)]
        assert sorted(r.split(b":")[0] for r in replies) == [b"e0", b"e1", b"e2"]
        big = bytes(range(256)) * 4096  # 1 MiB through the splice
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(big)
        data = await asyncio.wait_for(reader.readexactly(len(big) + 3), 10)
        assert data[3:] == big
        writer.close()
        await wait_for(lambda: all(s.active_connections == 0 for s in lb.servers), what="finish")
        assert sum(s.stats.requests for s in lb.servers) == 4
    finally:
        await proxy.stop(1)


async def test_tcp_consistent_hash_uses_client_ip(echoes) -> None:
    lb = LoadBalancer([Server("127.0.0.1", e.port, name=e.name.decode()) for e in echoes], "consistent_hash")
    proxy = TcpProxy(lb)
    await proxy.start()
    try:
        owners = {(await talk(proxy.port, b"x")).split(b":")[0] for _ in range(5)}
        assert owners == {lb.locate("127.0.0.1")["serving"].encode()}
    finally:
        await proxy.stop(1)


async def test_tcp_connect_failure_fails_over(echoes) -> None:
    await echoes[0].stop()
    await echoes[1].stop()
    lb = LoadBalancer([Server("127.0.0.1", e.port, name=e.name.decode()) for e in echoes], "round_robin")
    proxy = TcpProxy(lb)
    await proxy.start()
    try:
        for _ in range(3):
            assert (await talk(proxy.port, b"hi")).startswith(b"e2:")
        assert lb.get_server("e0").stats.errors >= 1
    finally:
        await proxy.stop(1)


async def test_tcp_all_down_closes_and_rate_limit_refuses(echoes) -> None:
    lb = LoadBalancer(
        [Server("127.0.0.1", e.port, name=e.name.decode()) for e in echoes], client_rate_limit=1
    )
    for server in lb.servers:
        lb.set_health(server.name, False)
    proxy = TcpProxy(lb)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no server: closed
        writer.close()
        for server in lb.servers:
            lb.set_health(server.name, True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # over the client's rate: closed
        writer.close()
    finally:
        await proxy.stop(1)


async def test_tcp_idle_timeout_and_graceful_stop(echoes) -> None:
    lb = LoadBalancer([Server("127.0.0.1", echoes[0].port, name="e0")])
    proxy = TcpProxy(lb, ProxySettings(idle_timeout=0.3))
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    await asyncio.wait_for(reader.readexactly(4), 5)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # idle: closed by the proxy
    writer.close()
    await wait_for(lambda: proxy.connections == 0, what="idle close")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"b")
    await asyncio.wait_for(reader.readexactly(4), 5)
    await asyncio.wait_for(proxy.stop(grace=0.2), 3)
    assert proxy.connections == 0 and lb.get_server("e0").active_connections == 0
    writer.close()


async def test_tcp_access_log_and_byte_counters(echoes, tmp_path) -> None:
    import json

    from engine.accesslog import AccessLog

    lb = LoadBalancer([Server("127.0.0.1", echoes[0].port, name="e0")], "round_robin")
    log = AccessLog(str(tmp_path / "tcp.log"))
    proxy = TcpProxy(lb, access_log=log)
    records = []
    proxy.observers.append(records.append)
    await proxy.start()
    try:
        assert await talk(proxy.port, b"hello") == b"e0:hello"
        await wait_for(lambda: len(records) == 1, what="the connection's record")
        record = records[0]
        assert (record.method, record.client, record.server, record.status) == ("TCP", "127.0.0.1", "e0", 0)
        assert (record.bytes_in, record.bytes_out) == (5, 8)
        assert 0 <= record.upstream_ms <= record.total_ms
        server = lb.servers[0]
        assert (server.stats.bytes_out, server.stats.bytes_in) == (5, 8)
        assert (lb.totals.bytes_out, lb.totals.bytes_in) == (5, 8)
        assert log.flush()
        line = json.loads((tmp_path / "tcp.log").read_text().splitlines()[0])
        assert line["method"] == "TCP" and line["server"] == "e0" and line["bytes_out"] == 8
    finally:
        await proxy.stop(1)
        await log.aclose()
