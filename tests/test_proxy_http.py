"""HTTP proxy: policies, header and body fidelity, keep-alive, HEAD, 1xx, upgrades."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest
from proxy_support import Backend, Fixture, Seen, make_proxy, raw_exchange, read_response, start_backends

from engine.proxy import ProxySettings


@pytest.fixture
async def trio():
    backends = await start_backends(3)
    fixtures: list[Fixture] = []

    async def build(**options: object) -> Fixture:
        settings = options.pop("settings", None)
        fixture = await make_proxy(backends, settings, **options)  # type: ignore[arg-type]
        fixtures.append(fixture)
        return fixture

    yield backends, build
    for fixture in fixtures:
        await fixture.proxy.stop(1)
    for backend in backends:
        await backend.stop()


async def served_by(session: aiohttp.ClientSession, url: str, count: int, **kwargs: object) -> list[str]:
    names = []
    for _ in range(count):
        async with session.get(url, **kwargs) as response:  # type: ignore[arg-type]
            assert response.status == 200
            names.append(response.headers["X-Served-By"])
            await response.read()
    return names


async def forwarded(fx: Fixture, backend: Backend, request: bytes) -> Seen:
    """Send one raw request, check it was answered 200, and return what ``backend`` saw."""
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(request)
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    return backend.seen[-1]


async def test_round_robin_cycles_through_servers(trio) -> None:
    _, build = trio
    fx = await build(algorithm="round_robin")
    async with aiohttp.ClientSession() as session:
        names = await served_by(session, fx.url + "/", 6)
    assert names == ["b0", "b1", "b2", "b0", "b1", "b2"]


async def test_weighted_round_robin_follows_weights(trio) -> None:
    _, build = trio
    fx = await build(algorithm="weighted_round_robin")
    fx.lb.set_weight("b0", 5)
    async with aiohttp.ClientSession() as session:
        names = await served_by(session, fx.url + "/", 7)
    assert names.count("b0") == 5 and names.count("b1") == 1 and names.count("b2") == 1


async def test_least_connections_avoids_the_busy_server(trio) -> None:
    backends, build = trio
    fx = await build(algorithm="least_connections")
    async with aiohttp.ClientSession() as session:
        first = await served_by(session, fx.url + "/", 1)
        busy = first[0]
        backends_by_name = {b.name: b for b in backends}
        backends_by_name[busy].release.clear()
        # Hold one request open on the next server in turn, then the others must be chosen.
        holder = asyncio.ensure_future(session.get(fx.url + "/hold"))
        try:
            await asyncio.wait_for(_until(lambda: sum(s.active_connections for s in fx.lb.servers) == 1), 5)
            held = next(s.name for s in fx.lb.servers if s.active_connections == 1)
            names = await served_by(session, fx.url + "/", 6)
            assert held not in names
        finally:
            for backend in backends:
                backend.release.set()
            response = await holder
            assert response.status == 200
            response.release()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_consistent_hash_on_a_header_is_stable(trio) -> None:
    _, build = trio
    fx = await build(algorithm="consistent_hash", hash_key="header:X-User")
    async with aiohttp.ClientSession() as session:
        owners = {}
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            names = await served_by(session, fx.url + "/", 3, headers={"X-User": user})
            assert len(set(names)) == 1, names
            owners[user] = names[0]
            assert fx.lb.locate(user)["serving"] == names[0]
    assert len(set(owners.values())) >= 2


async def test_headers_preserved_in_order_and_case_and_hop_by_hop_removed(trio) -> None:
    backends, build = trio
    fx = await build()
    request = (
        b"GET /echo?q=1 HTTP/1.1\r\nHost: example.test:8080\r\nX-First: 1\r\nx-MiXeD-Case: Yes\r\n"
        b"Connection: keep-alive, X-Secret\r\nX-Secret: hop\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic abc\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
        b"X-Last: 2\r\n\r\n"
    )
    seen = await forwarded(fx, backends[0], request)
    names = [name for name, _ in seen.headers]
    assert names[:3] == ["Host", "X-First", "x-MiXeD-Case"]
    assert names.index("X-Last") > names.index("x-MiXeD-Case")
    lowered = {n.lower() for n in names}
    for hop in ("connection", "keep-alive", "te", "x-secret", "proxy-authorization"):
        assert hop not in lowered
    assert seen.header("X-Forwarded-For") == "127.0.0.1"  # the client's claim replaced
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "example.test:8080"
    assert seen.header("Forwarded") == 'for=127.0.0.1;proto=http;host="example.test:8080"'
    assert seen.path == "/echo?q=1"


async def test_trusted_forwarded_headers_are_appended(trio) -> None:
    backends, build = trio
    fx = await build(settings=ProxySettings(trust_forwarded=True))
    async with aiohttp.ClientSession() as session:
        async with session.get(fx.url + "/", headers={"X-Forwarded-For": "10.1.1.1"}) as response:
            await response.read()
    seen = backends[0].seen[-1]
    assert seen.header("X-Forwarded-For") == "10.1.1.1, 127.0.0.1"


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("body", [b"", b"x"])  # the plain path, and the general one
async def test_underscore_spellings_of_forwarding_headers_are_never_forwarded(trio, trusted, body) -> None:
    """WSGI and CGI read X_Forwarded_For as X-Forwarded-For: a client must not set it."""
    backends, build = trio
    fx = await build(settings=ProxySettings(trust_forwarded=trusted))
    method = b"POST" if body else b"GET"
    request = (
        method + b" / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nx-forwarded_proto: https\r\n"
        b"X_Forwarded-Host: evil\r\nX_Other_Header: kept\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    if not body:
        request = request.replace(b"Content-Length: 0\r\n", b"")
    seen = await forwarded(fx, backends[0], request)
    assert seen.header("X_Other_Header") == "kept"  # other underscore names pass
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "h"
    assert not [name for name, _ in seen.headers if "_" in name and "forwarded" in name.lower()]


@pytest.mark.parametrize(
    "requests",
    [
        [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"],  # the plain path
        [b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"],  # the general one
        [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"] * 3,  # pipelined
    ],
    ids=["plain", "body", "pipelined"],
)
async def test_a_half_closed_client_gets_every_answer_and_then_the_close(trio, requests) -> None:
    """After the client's EOF no request can follow: answer what came, then close at
    once rather than hold the connection for the idle timeout (60 s here)."""
    _, build = trio
    fx = await build(settings=ProxySettings(idle_timeout=60.0))
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    try:
        writer.write(b"".join(requests))
        writer.write_eof()
        answers = [await read_response(reader) for _ in requests]
        assert [status for status, _, _ in answers] == [200] * len(requests)
        assert answers[-1][1].get("connection") == "close"
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()


async def test_response_headers_pass_and_hop_by_hop_dropped(trio) -> None:
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"GET /headers-out HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    text = head.decode()
    assert "X-Custom-Case: Value\r\n" in text
    assert text.count("Set-Cookie:") == 2
    assert "X-Hop" not in text and "Keep-Alive" not in text
    assert text.index("X-Custom-Case") < text.index("Set-Cookie: a=1") < text.index("Set-Cookie: b=2")


async def test_upstream_keep_alive_fields_are_cut_and_the_rest_relayed_as_is(trio) -> None:
    """nginx's "Connection: keep-alive" (and Apache's Keep-Alive pair) concern only the
    upstream connection: cut from the head, every other byte relayed unchanged, and the
    client connection stays open for the next request."""
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    try:
        for path in ("/nginx-head", "/apache-head", "/close-head", "/nginx-head"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
            body = await asyncio.wait_for(reader.readexactly(5), 5)
            assert body == b"fine\n"
            lowered = head.lower()
            assert "connection:" not in lowered and "keep-alive" not in lowered, head
            assert head.startswith("HTTP/1.1 200 OK\r\nServer: t\r\n")
            assert "Content-Type: text/plain\r\nContent-Length: 5\r\nX-After: 1\r\n\r\n" in head
    finally:
        writer.close()


async def test_large_streamed_upload_and_download_keep_their_bytes(trio) -> None:
    _, build = trio
    fx = await build()
    size = 20 * 1024 * 1024
    block = os.urandom(1 << 16)
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)

    async def body():
        for _ in range(size // len(block)):
            yield block

    async with aiohttp.ClientSession() as session:
        async with session.post(fx.url + "/echo", data=body()) as response:  # chunked upload
            result = await response.json()
        assert result["body_length"] == size
        assert result["body_sha256"] == digest.hexdigest()
        async with session.post(fx.url + "/echo", data=block * 16) as response:  # Content-Length upload
            result = await response.json()
        assert result["body_length"] == len(block) * 16
        assert result["body_sha256"] == hashlib.sha256(block * 16).hexdigest()
        async with session.get(fx.url + f"/bytes?n={size}") as response:
            got = hashlib.sha256()
            count = 0
            async for piece in response.content.iter_chunked(1 << 16):
                got.update(piece)
                count += len(piece)
        expected = hashlib.sha256()
        pattern = bytes(range(256)) * 256
        for offset in range(0, size, len(pattern)):
            expected.update(pattern[: min(len(pattern), size - offset)])
        assert count == size and got.hexdigest() == expected.hexdigest()


async def test_chunked_download_is_rechunked(trio) -> None:
    _, build = trio
    fx = await build()
    async with aiohttp.ClientSession() as session:
        async with session.get(fx.url + "/chunked?count=50&size=1000") as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            data = await response.read()
    assert len(data) == 50_000 and data[:1000] == b"A" * 1000


async def test_keep_alive_reuses_upstream_connections(trio) -> None:
    backends, build = trio
    fx = await build()
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.get(fx.url + "/") as response:
                await response.read()
    assert sum(b.connections for b in backends) == 3  # one per server, reused 10 times each
    assert fx.proxy.accepted == 1


async def test_head_and_no_body_statuses(trio) -> None:
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"HEAD /bytes?n=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Content-Length: 5000" in head
    # The same connection keeps working: the HEAD response carried no body.
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 200 and b'"server"' in body


async def test_expect_100_continue_is_relayed(trio) -> None:
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 200 and b'"body_length": 5' in body


async def test_pipelined_requests_answered_in_order(trio) -> None:
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
    paths = []
    for _ in range(5):
        status, _, body = await read_response(reader)
        assert status == 200
        paths.append(body.split(b'"path": "')[1].split(b'"')[0])
    writer.close()
    assert paths == [b"/p0", b"/p1", b"/p2", b"/p3", b"/p4"]


async def test_close_delimited_response_and_http10_client(trio) -> None:
    _, build = trio
    fx = await build()
    data = await raw_exchange(fx.proxy.port, b"GET /eof HTTP/1.1\r\nHost: x\r\n\r\n", until_close=False)
    assert data.startswith(b"HTTP/1.1 200")
    data = await raw_exchange(fx.proxy.port, b"GET /chunked?count=2&size=3 HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding" not in data and data.endswith(b"AAABBB")


async def test_upgrade_passes_bytes_both_ways(trio) -> None:
    _, build = trio
    fx = await build()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101") and b"Upgrade: echo" in head
    writer.write(b"hello tunnel")
    echoed = await asyncio.wait_for(reader.readexactly(12), 5)
    assert echoed == b"HELLO TUNNEL"
    writer.close()
    await asyncio.wait_for(_until(lambda: fx.proxy.active_requests == 0), 5)


async def test_access_records_reach_observers(trio) -> None:
    _, build = trio
    fx = await build()
    records = []
    fx.proxy.observers.append(records.append)
    fx.proxy.observers.append(lambda record: 1 / 0)  # a broken observer changes nothing
    async with aiohttp.ClientSession() as session:
        async with session.post(fx.url + "/echo?x=1", data=b"12345") as response:
            body = await response.read()
    await asyncio.wait_for(_until(lambda: len(records) == 1), 5)
    record = records[0]
    assert (record.method, record.path, record.status, record.client) == (
        "POST",
        "/echo?x=1",
        200,
        "127.0.0.1",
    )
    assert record.server in {"b0", "b1", "b2"} and record.bytes_in == 5 and record.bytes_out == len(body)
    assert 0 <= record.upstream_ms <= record.total_ms


async def test_slow_reader_applies_backpressure_instead_of_buffering(trio) -> None:
    _, build = trio
    fx = await build()
    size = 32 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port, limit=1 << 16)
    writer.transport.pause_reading()  # a client that does not read
    writer.write(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    await asyncio.wait_for(_until(lambda: fx.proxy.active_requests == 1), 5)
    conn = next(iter(fx.proxy._conns))
    await asyncio.sleep(0.3)  # let the socket buffers fill
    # Without flow control the whole body would pile up in the proxy's write buffer.
    assert conn.transport.get_write_buffer_size() < 2 * 1024 * 1024
    writer.transport.resume_reading()
    status, _, body = await read_response(reader, timeout=20)
    writer.close()
    assert status == 200 and len(body) == size


async def test_byte_counters_per_server_and_totals(trio) -> None:
    _, build = trio
    fx = await build(algorithm="round_robin")
    payload = os.urandom(3000)
    sizes = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(fx.url + "/echo", data=payload) as response:
                sizes.append(len(await response.read()))
    await asyncio.wait_for(_until(lambda: fx.proxy.active_requests == 0), 5)
    servers = fx.lb.servers
    # Each server got one request: its head plus the 3000-byte body went out, and a
    # response head plus its body came back.
    for server in servers:
        assert 3000 + 40 < server.stats.bytes_out < 3000 + 2000
        assert max(sizes) + 20 < server.stats.bytes_in < max(sizes) + 2000
    assert fx.lb.totals.bytes_out == sum(s.stats.bytes_out for s in servers)
    assert fx.lb.totals.bytes_in == sum(s.stats.bytes_in for s in servers)


async def test_connection_option_headers_are_not_forwarded(trio) -> None:
    backends, build = trio
    fx = await build()
    request = (
        b"GET /h HTTP/1.1\r\nHost: t\r\nX-Keep: 1\r\nConnection: close, X-Drop\r\n"
        b"X-Drop: secret\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    answer = await raw_exchange(fx.proxy.port, request)
    assert answer.startswith(b"HTTP/1.1 200")
    seen = [s for b in backends for s in b.seen if s.path == "/h"][-1]
    names = [name.lower() for name, _ in seen.headers]
    assert "x-keep" in names and "x-drop" not in names and "connection" not in names
    assert seen.header("X-Forwarded-For") == "127.0.0.1"  # the client's value is not trusted
