"""Hostile clients beyond the smuggling shapes of test_proxy_hostile.py.

Limits at and past their edge, more framing tricks, slowloris and slow-body clients, a
flood of idle connections and deep pipelines. Each case is judged by the same rules
(``fault_support.judge``): a 4xx or a close, never a 5xx or a hang, and the backend
sees exactly the requests the proxy answered for. Afterwards the proxy still serves
and its memory and descriptors are back near where they started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from engine.balancer import LoadBalancer
from engine.proxy import HttpProxy, ProxySettings
from engine.server import Server
from fault_support import (
    Recorder,
    fd_count,
    judge,
    raw_request,
    record_figures,
    rss_kb,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

LIMITS = ProxySettings(
    connect_timeout=1.0,
    header_timeout=0.5,
    body_timeout=0.5,
    idle_timeout=1.0,
    max_request_line=1024,
    max_headers=20,
    max_header_bytes=4096,
    max_body_bytes=10_000,
)
GOOD = b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Fx:
    def __init__(self, proxy: HttpProxy, recorder: Recorder) -> None:
        self.proxy = proxy
        self.recorder = recorder

    @property
    def port(self) -> int:
        return self.proxy.port

    async def check(self, data: bytes, *, expect: int = 1, timeout: float = 3.0) -> list[str]:
        """Send one hostile input on its own connection and judge the outcome."""
        before = len(self.recorder.seen)
        reply = await raw_request(self.port, data, expect=expect, timeout=timeout)
        return judge([reply], self.recorder.seen[before:], self.recorder.parse_errors)

    async def healthy(self) -> None:
        reply = await raw_request(self.port, GOOD, timeout=3)
        assert [r[0] for r in reply.responses] == [200], reply


@pytest.fixture
async def fx() -> AsyncIterator[Fx]:
    recorder = await Recorder().start()
    settings = dataclasses.replace(LIMITS)  # a test may loosen its own copy
    proxy = HttpProxy(LoadBalancer([Server("127.0.0.1", recorder.port, name="rec")]), settings)
    await proxy.start()
    yield Fx(proxy, recorder)
    await proxy.stop(1)
    await recorder.stop()


def status_of(reply_statuses: list[int]) -> int:
    return reply_statuses[0] if reply_statuses else 0


# -- limits at and past their edge ---------------------------------------------------------------
async def test_request_line_at_limit_passes_and_past_it_gets_414(fx: Fx) -> None:
    line_overhead = len(b"GET  HTTP/1.1")
    path = b"/" + b"a" * (1024 - line_overhead - 1)
    reply = await raw_request(fx.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.responses[0][0] == 200
    reply = await raw_request(fx.port, b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.responses[0][0] == 414 and reply.closed
    assert [f.url for f in fx.recorder.seen] == [path.decode()]


async def test_header_count_and_size_limits_get_431(fx: Fx) -> None:
    twenty = b"".join(b"X-%d: v\r\n" % i for i in range(19))  # plus Host: 20 headers
    reply = await raw_request(fx.port, b"GET /twenty HTTP/1.1\r\nHost: x\r\n" + twenty + b"\r\n")
    assert reply.responses[0][0] == 200
    too_many = twenty + b"X-last: v\r\n"
    assert await fx.check(b"GET / HTTP/1.1\r\nHost: x\r\n" + too_many + b"\r\n") == []
    one_big = b"X-Big: " + b"v" * 5000 + b"\r\n"
    reply = await raw_request(fx.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + one_big + b"\r\n")
    assert reply.responses[0][0] == 431 and reply.closed
    assert [f.url for f in fx.recorder.seen] == ["/twenty"]


async def test_endless_header_stream_is_cut_off_with_bounded_memory(fx: Fx) -> None:
    """A megabyte-long header line without a newline: refused early, not buffered."""
    rss_before = rss_kb()
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.port)

    async def flood() -> int:
        sent = 0
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            for _ in range(256):
                writer.write(b"v" * 4096)
                sent += 4096
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass
        return sent

    sender = asyncio.create_task(flood())
    received = b""
    try:
        async with asyncio.timeout(3):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass  # the proxy closed while bytes were still coming: the kernel resets
    sent = await sender
    writer.close()
    reply = received
    assert reply.startswith(b"HTTP/1.1 431")
    assert rss_kb() - rss_before < 16 * 1024
    assert sent < 256 * 4096 or reply  # cut off, not read to the end
    assert fx.recorder.seen == []


async def test_body_limits_content_length_and_chunked(fx: Fx) -> None:
    exact = b"b" * 10_000
    reply = await raw_request(
        fx.port, b"POST /exact HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n" + exact
    )
    assert reply.responses[0][0] == 200
    assert fx.recorder.seen[-1].body == exact
    # Declared too large: refused before a byte of body is read.
    assert await fx.check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10001\r\n\r\n") == []
    # An absurd length is refused too, not overflowed.
    assert await fx.check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n") == []
    # Chunked: the limit bites mid-stream; the backend never gets a complete request.
    chunk = b"1000\r\n" + b"c" * 4096 + b"\r\n"
    before = len(fx.recorder.seen)
    reply = await raw_request(
        fx.port, b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
    )
    assert [r[0] for r in reply.responses] in ([413], []) and reply.closed
    assert len(fx.recorder.seen) == before


# -- more framing tricks than test_proxy_hostile.py ----------------------------------------------
SHAPES = {
    # TE.TE: two Transfer-Encoding lines, the last one not chunked.
    "te_two_lines": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te_case": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
    "te_tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
    "te_vertical_tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "te_quoted": b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
    "te_comma_first": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
    "cl_plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl_negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
    "cl_hex": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl_underscore": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n0123456789",
    "cl_empty": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nabc",
    "cl_same_twice": b"POST /cl2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "chunk_ext": b"POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;name=val\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_bare_lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_nul": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n",
    "chunk_size_space": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunk_missing_crlf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "chunk_bare_lf_end": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "trailer_smuggle": b"POST /tr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    b"Content-Length: 5\r\n\r\n",
    "body_looks_like_request": b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n",
    "get_with_body": b"GET /g HTTP/1.1\r\nHost: x\r\nContent-Length: 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "mixed_line_endings": b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    "cr_only": b"GET / HTTP/1.1\rHost: x\r\r",
    "nul_in_target": b"GET /\x00a HTTP/1.1\r\nHost: x\r\n\r\n",
    "header_no_colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "header_name_ctl": b"GET / HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "host_userinfo": b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    "host_path": b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "host_crlf_inject": b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
    "expect_with_te_cl": b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "upgrade_smuggle": b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute_form_host_mismatch": b"GET http://other/abs HTTP/1.1\r\nHost: x\r\n\r\n",
    "method_lowercase": b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    "version_10_keepalive_smuggle": b"GET /v HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_framing_tricks_are_refused_or_forwarded_unambiguously(fx: Fx, name: str) -> None:
    # Two answers allowed: a valid request followed by another one in the same bytes.
    assert await fx.check(SHAPES[name], expect=2, timeout=4) == []
    await fx.healthy()


# -- slow clients ---------------------------------------------------------------------------------
async def test_slowloris_crowd_gets_408_while_others_are_served(fx: Fx) -> None:
    async def drip() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", fx.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for _ in range(20):
                await asyncio.sleep(0.05)
                if writer.is_closing() or reader.at_eof():
                    break
                writer.write(b"X-Drip: 1\r\n")
            return await asyncio.wait_for(reader.read(), 3)
        except (ConnectionResetError, BrokenPipeError):
            return b"reset"
        finally:
            writer.close()

    started = time.monotonic()
    crowd = [asyncio.create_task(drip()) for _ in range(200)]
    await wait_until(lambda: fx.proxy.connections >= 200, 5, "200 slowloris connections")
    served_at = time.monotonic()
    await fx.healthy()
    serve_ms = (time.monotonic() - served_at) * 1000
    replies = await asyncio.gather(*crowd)
    took = time.monotonic() - started
    refused = sum(1 for r in replies if r.startswith(b"HTTP/1.1 408") or r in (b"", b"reset"))
    record_figures(
        "slowloris crowd",
        connections=200,
        answered_408_or_closed=refused,
        normal_request_ms_during_attack=round(serve_ms, 1),
        all_cut_after_s=round(took, 2),
        header_timeout_s=LIMITS.header_timeout,
    )
    assert refused == 200
    assert took < LIMITS.header_timeout + 2.5
    assert [f.url for f in fx.recorder.seen] == ["/ok"]


async def test_slow_body_gets_408_and_is_never_forwarded_complete(fx: Fx) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
    started = time.monotonic()
    reply = await asyncio.wait_for(reader.read(), 3)
    took = time.monotonic() - started
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408") or reply == b""
    assert took < LIMITS.body_timeout + 1.5
    assert fx.recorder.seen == []
    # A slow but steady body (each byte within the body timeout) is fine.
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.port)
    writer.write(b"POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
    for byte in b"abcde":
        await asyncio.sleep(0.1)
        writer.write(bytes([byte]))
    reply = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200")
    assert fx.recorder.seen[-1].body == b"abcde"


# -- a flood of idle connections --------------------------------------------------------------------
async def test_idle_connection_flood_is_bounded_and_reclaimed(fx: Fx) -> None:
    flood = 2000
    fx.proxy.settings.header_timeout = 2.0  # long enough to hold the whole flood at once
    fds_before, rss_before = fd_count(), rss_kb()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for start in range(0, flood, 250):
        conns += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", fx.port) for _ in range(start, min(flood, start + 250)))
        )
    await wait_until(lambda: fx.proxy.connections >= flood, 5, "the flood accepted")
    peak_rss = rss_kb()
    await fx.healthy()  # served during the flood
    # Every idle connection is closed by the proxy after the header timeout.
    closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 5) for r, _ in conns))
    for _, writer in conns:
        writer.close()
    await wait_until(lambda: fx.proxy.connections == 0, 5, "every connection reclaimed")
    await asyncio.sleep(0)  # let the closes run
    fds_after, rss_after = fd_count(), rss_kb()
    record_figures(
        "idle connection flood",
        connections=flood,
        closed_by_proxy=sum(1 for c in closed if c == b""),
        rss_before_kb=rss_before,
        rss_peak_kb=peak_rss,
        rss_after_kb=rss_after,
        fds_before=fds_before,
        fds_after=fds_after,
    )
    assert all(c == b"" for c in closed)
    assert fds_after <= fds_before + 10
    assert peak_rss - rss_before < 64 * 1024  # under 32 KiB per idle connection, both ends in this process
    await fx.healthy()


# -- pipelining -----------------------------------------------------------------------------------
async def test_deep_pipeline_answered_in_order(fx: Fx) -> None:
    requests = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(40))
    reply = await raw_request(fx.port, requests, expect=40, timeout=5)
    assert [r[0] for r in reply.responses] == [200] * 40
    assert [r[2] for r in reply.responses] == [b"ok /p/%d" % i for i in range(40)]
    assert [f.url for f in fx.recorder.seen] == [f"/p/{i}" for i in range(40)]


async def test_pipelined_posts_keep_their_bodies(fx: Fx) -> None:
    requests = b"".join(
        b"POST /post/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, i + 1, b"q" * (i + 1))
        for i in range(10)
    )
    reply = await raw_request(fx.port, requests, expect=10, timeout=5)
    assert [r[0] for r in reply.responses] == [200] * 10
    assert [f.body for f in fx.recorder.seen] == [b"q" * (i + 1) for i in range(10)]


async def test_bad_request_in_a_pipeline_stops_it_there(fx: Fx) -> None:
    """RFC 9112 9.3.2: answers in request order; the 400 belongs to the 4th request."""
    good = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
    bad = b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    after = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    reply = await raw_request(fx.port, good + bad + after, expect=6, timeout=5)
    assert [r[0] for r in reply.responses] == [200, 200, 200, 400]
    assert reply.closed
    assert [f.url for f in fx.recorder.seen] == ["/p/0", "/p/1", "/p/2"]
