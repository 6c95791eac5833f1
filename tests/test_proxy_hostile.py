"""Malformed, ambiguous and oversized requests: refused, connection closed, never forwarded."""

from __future__ import annotations

import asyncio

import pytest
from proxy_support import make_proxy, raw_exchange, start_backends

from engine.proxy import ProxySettings

SMUGGLING = {
    "cl_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te_cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te_obfuscated": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_identity_last": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_space_name": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "nul_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "ctl_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad_host": b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n",
    "te_http10": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad_version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad_method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "relative_target": b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture
async def fx():
    backends = await start_backends(1)
    fixture = await make_proxy(
        backends,
        ProxySettings(header_timeout=0.4, max_request_line=256, max_header_bytes=2048, max_body_bytes=1000),
    )
    yield fixture
    await fixture.proxy.stop(1)
    for backend in backends:
        await backend.stop()


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_smuggling_shapes_get_400_and_close(fx, name: str) -> None:
    reply = await raw_exchange(fx.proxy.port, SMUGGLING[name], timeout=3)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert b"Connection: close" in reply
    assert reply.count(b"HTTP/1.1") == 1  # one answer, then the connection closed
    assert fx.backends[0].seen == []
    # The proxy is healthy afterwards.
    good = await raw_exchange(fx.proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert good.startswith(b"HTTP/1.1 200")


async def test_smuggled_request_after_valid_one_is_never_forwarded(fx) -> None:
    data = (
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    reply = await raw_exchange(fx.proxy.port, data, timeout=3)
    assert reply.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in reply
    assert [seen.path for seen in fx.backends[0].seen] == ["/first"]


async def test_connect_method_refused(fx) -> None:
    reply = await raw_exchange(
        fx.proxy.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 405")
    assert fx.backends[0].seen == []


async def test_oversized_request_line_gets_414(fx) -> None:
    reply = await raw_exchange(fx.proxy.port, b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414")


async def test_oversized_headers_get_431(fx) -> None:
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(80))
    reply = await raw_exchange(fx.proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431")
    # One endless header line without a newline is cut off too (bounded memory).
    reply = await raw_exchange(fx.proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 20000)
    assert reply.startswith(b"HTTP/1.1 431")
    assert fx.backends[0].seen == []


async def test_body_too_large_gets_413(fx) -> None:
    reply = await raw_exchange(fx.proxy.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413")
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"200\r\n"
        + b"a" * 512
        + b"\r\n"
    )
    reply = await raw_exchange(fx.proxy.port, chunked * 1 + b"200\r\n" + b"a" * 512 + b"\r\n", timeout=3)
    assert b" 413 " in reply.split(b"\r\n")[0] or reply == b""  # refused before or while streaming


async def test_slowloris_head_gets_408(fx) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):
        await asyncio.sleep(0.1)
        writer.write(b"X-Drip: 1\r\n")  # keeps sending, never finishes the head
    reply = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408")
    assert fx.backends[0].seen == []


async def test_silent_connection_closed_after_header_timeout(fx) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


async def test_oversized_head_pipelined_behind_a_small_one_is_refused() -> None:
    """The header-size limit holds for a second request parsed from the same read."""
    backends = await start_backends(1)
    fx = await make_proxy(backends, ProxySettings(connect_timeout=1.0, max_header_bytes=2048))
    try:
        small = b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
        big = b"GET /second HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n"
        answer = await raw_exchange(fx.proxy.port, small + big)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 431" in answer
        assert [s.path for s in backends[0].seen] == ["/first"]
    finally:
        await fx.proxy.stop(1)
        await backends[0].stop()
