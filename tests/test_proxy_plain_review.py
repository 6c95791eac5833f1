"""Adversarial review of the plain path (engine/proxy/plain.py and its callers).

The invariant under test: a request or response the plain path takes must be one the
general (llhttp) path would treat identically: the same bytes upstream, the same bytes
to the client, and the same side effects (stats, byte counters, access records, pool
reuse, timeouts, retries, drain, graceful stop). Most tests are differential: the same
bytes go once as the first request of a fresh connection (always the general path, it
learns the connection's Host) and once as the second request of a connection whose first
request had the same Host (the plain path, when the bytes are plain). A raw backend
records exactly what reached it and answers with exact bytes.

The tests in section 3 (and the header-timeout one in section 11) found bugs, since fixed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools
import pytest
from proxy_support import Fixture, count_taken, make_proxy, read_response, start_backends, wait_for

from engine.balancer import LoadBalancer
from engine.proxy import HttpProxy, ProxySettings
from engine.proxy.plain import KNOWN_HEADS, PLAIN_REQUEST, plain_response_head
from engine.server import Server

WARM = b"GET /warm HTTP/1.1\r\nHost: a.test\r\n\r\n"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Answer = Callable[["RawConn", bytes], Awaitable[None]]


# -- a raw backend: exact bytes in, exact bytes out ---------------------------------------
@dataclass
class RawConn:
    """One upstream connection as the raw backend sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int
    heads: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.writer.write(data)


class RawBackend:
    """Reads request heads (bodies by Content-Length) and lets the test answer each."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or _answer_ok
        self.heads: list[bytes] = []
        self.conns: list[RawConn] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RawBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = RawConn(reader, writer, len(self.conns))
        self.conns.append(conn)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                if b"\ncontent-length:" in low:
                    length = int(low.split(b"\ncontent-length:")[1].split(b"\r\n")[0])
                    head += await reader.readexactly(length)
                self.heads.append(head)
                conn.heads.append(head)
                await self.answer(conn, head)
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.CancelledError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


async def _answer_ok(conn: RawConn, head: bytes) -> None:
    conn.write(OK_RESPONSE[:-2] if head.startswith(b"HEAD ") else OK_RESPONSE)


async def _proxy(
    backends: list[RawBackend], settings: ProxySettings | None = None, **lb: object
) -> HttpProxy:
    balancer = LoadBalancer([Server("127.0.0.1", b.port, name=f"r{i}") for i, b in enumerate(backends)], **lb)  # type: ignore[arg-type]
    proxy = HttpProxy(balancer, settings or ProxySettings(connect_timeout=1.0))
    await proxy.start()
    return proxy


@pytest.fixture
async def env():
    """Build raw backends and proxies; everything is stopped at the end."""
    backends: list[RawBackend] = []
    proxies: list[HttpProxy] = []

    async def backend(answer: Answer | None = None) -> RawBackend:
        b = await RawBackend(answer).start()
        backends.append(b)
        return b

    async def proxy(bs: list[RawBackend], settings: ProxySettings | None = None, **lb: object) -> HttpProxy:
        p = await _proxy(bs, settings, **lb)
        proxies.append(p)
        return p

    yield backend, proxy
    for p in proxies:
        await p.stop(1)
    for b in backends:
        await b.stop()


async def read_final(
    reader: asyncio.StreamReader, timeout: float = 3.0, head_only: bool = False
) -> tuple[bytes, bool]:
    """Bytes of the next final response (interim ones included) and whether the peer closed.

    Framing is decided by llhttp on the client side, as a real client would.
    """
    state = {"final": False, "status": 0}

    class Callbacks:
        def on_headers_complete(self) -> None:
            state["status"] = parser.get_status_code()

        def on_message_complete(self) -> None:
            if state["status"] >= 200:
                state["final"] = True

    parser = httptools.HttpResponseParser(Callbacks())
    data = b""
    closed = False
    try:
        async with asyncio.timeout(timeout):
            while not state["final"]:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
                if head_only and b"\r\n\r\n" in data:
                    break
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    break
    except TimeoutError:
        pass
    return data, closed


async def _exchange(port: int, heads: list[bytes], timeout: float = 3.0) -> list[tuple[bytes, bool]]:
    """Send each head after the previous answer; the answers and whether the proxy closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for head in heads:
            writer.write(head)
            answer = await read_final(reader, timeout, head_only=head.startswith(b"HEAD "))
            if not answer[1] and b"\r\nConnection: close\r\n" in answer[0].split(b"\r\n\r\n")[0] + b"\r\n":
                answer = (answer[0], await _closed_soon(reader))
            answers.append(answer)
            if answer[1]:
                break
    finally:
        writer.close()
    return answers


async def _closed_soon(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(65536) == b""
    except (TimeoutError, ConnectionError):
        return False


# -- 1. request differential: the plain path forwards what the general path forwards -----
REQUEST_VARIANTS = [
    b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /p?x=1&y=%20[a]@:!$'()*+,;= HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nUser-Agent: t/1 (x; y)\r\n\r\n",
    b"DELETE /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"OPTIONS /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"HEAD /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"hOsT: a.test\r\n\r\n",  # no request line at all
    b"GET /p HTTP/1.1\r\nhOsT: a.test\r\n\r\n",  # case of the Host name kept
    b"GET /p HTTP/1.1\r\nHOST: a.test\r\nX-A: 1\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: A.TEST\r\n\r\n",  # another Host for the block
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nhost: b.test\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\ncontent-length: 0\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nKeep-Alive: timeout=5\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nTrailer: X\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nUpgrade: h2c\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nx-forwarded-for: 6.6.6.6\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX-FORWARDED-HOST: evil\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nForwarded: for=6.6.6.6\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",  # obs-fold
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\nY: b\r\n\r\n",  # bare LF
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\rY: b\r\n\r\n",  # bare CR
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\x00b\r\n\r\n",  # NUL
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\x01b\r\n\r\n",  # control byte
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a\tb\r\n\r\n",  # HTAB inside a value
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: \xffb\r\n\r\n",  # obs-text
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX : a\r\n\r\n",  # space before the colon
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX Y: a\r\n\r\n",  # space in the name
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX:a\r\n\r\n",  # no space after the colon
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX:  a \r\n\r\n",  # padded value
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX: a  b\r\n\r\n",  # double inner space
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX:\r\n\r\n",  # empty value
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",  # underscore twin
    b"GET /p HTTP/1.1\r\nHost:a.test\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test \r\n\r\n",
    b"GET /p HTTP/1.1\r\n Host: a.test\r\n\r\n",
    b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n\r\n",
    b"\r\nGET /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /p  HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /p HTTP/1.1 \r\nHost: a.test\r\n\r\n",
    b"GET /p\x00 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /p#f HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b'GET /p"<> HTTP/1.1\r\nHost: a.test\r\n\r\n',
    b"GET p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET http://a.test/p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"get /p HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /p HTTP/1.0\r\nHost: a.test\r\n\r\n",
    b"GET /p HTTP/1.2\r\nHost: a.test\r\n\r\n",
    b"GET /p HTTP/1.1\r\nX: 1\r\n\r\n",  # no Host
    b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\nGET /q HTTP/1.1\r\nHost: a.test\r\n\r\n",  # pipelined
    b"GET /p HTTP/1.1\r\nHost: a.test\r\nCookie: lbtui_server=r1\r\n\r\n",
]


async def _general_and_plain(
    port: int, head: bytes, backend: RawBackend | None = None
) -> tuple[list[tuple[bytes, bool]], list[tuple[bytes, bool]], list[bytes], list[bytes]]:
    """The answers and forwarded heads for ``head`` as a first request (general path)
    and as a second request after WARM with the same Host (plain path if plain)."""
    seen = backend.heads if backend is not None else []
    start = len(seen)
    general = await _exchange(port, [head])
    middle = len(seen)
    plain = await _exchange(port, [WARM, head])
    assert plain and plain[0][0].endswith(b"ok"), plain
    general_heads = seen[start:middle]
    plain_heads = [h for h in seen[middle:] if not h.startswith(b"GET /warm ")]
    return general, plain[1:], general_heads, plain_heads


@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trust_forwarded"])
async def test_every_request_variant_is_forwarded_and_answered_as_the_general_path_does(
    env, trust
) -> None:
    """For each variant: the client's answers and the bytes the backend got are the same,
    whether it is the first request of a connection (general path) or follows a request
    with the same Host (plain path when the bytes are plain)."""
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, trust_forwarded=trust))
    served = count_taken("_start_plain_read")
    mismatches = []
    for head in REQUEST_VARIANTS:
        general, plain, general_heads, plain_heads = await _general_and_plain(p.port, head, b)
        if general != plain or general_heads != plain_heads:
            mismatches.append((head, general, plain, general_heads, plain_heads))
    assert not mismatches, mismatches[:3]
    # Every variant PLAIN_REQUEST accepts with the warmed Host took the plain path.
    plain_shaped = [PLAIN_REQUEST(head) for head in REQUEST_VARIANTS]
    assert served[0] == sum(m is not None and m[3] == b"a.test" for m in plain_shaped)
    assert served[0] >= 5


# -- 2. response differential: the client gets what the general path relays -------------
RESPONSE_VARIANTS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 599 Whatever\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX: a\r\n b\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX:  padded \r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: \xff\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-Authenticate: Basic\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nUpgrade: h2c\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
]


@pytest.mark.parametrize("response", RESPONSE_VARIANTS, ids=range(len(RESPONSE_VARIANTS)))
async def test_every_response_variant_reaches_the_client_as_the_general_path_relays_it(
    env, response
) -> None:
    relayed = count_taken("relay_plain")

    async def answer(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.write(OK_RESPONSE)
        else:
            conn.write(response)
            if (
                response.endswith(b"until close")
                or b"Connection: close" in response
                or response.startswith(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n")
            ):
                await conn.writer.drain()
                conn.writer.close()

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    head = b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n"
    general, plain, _, _ = await _general_and_plain(p.port, head)
    assert general == plain
    head_end = response.find(b"\r\n\r\n") + 4
    plain_shape = plain_response_head(response[:head_end])
    assert relayed[0] == (plain_shape is not None and len(response) - head_end == plain_shape[1])


# -- 3. bugs ---------------------------------------------------------------------------------
async def test_method_bytes_left_in_llhttp_are_not_skipped_by_the_plain_path(env) -> None:
    """``...\\r\\n\\r\\nGE`` leaves "GE" inside llhttp with no callback yet (parsing None,
    head_bytes reset to 0). The general path reads the next ``GET /two ...`` as method
    "GEGET" and answers 400 + close; the plain path forwards ``GET /two`` instead, and
    llhttp keeps the stale "GE" for whatever non-plain bytes come next."""
    backend, proxy = env
    b = await backend()
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGE")
        first, _ = await read_final(reader)
        assert first.endswith(b"ok")
        writer.write(b"GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n")
        second, _ = await read_final(reader)
    finally:
        writer.close()
    # What the general path answers for the very same byte stream:
    assert second.startswith(b"HTTP/1.1 400 ")
    assert [h.split(b" ")[1] for h in b.heads] == [b"/one"]


async def test_the_general_path_rejects_that_byte_stream(env) -> None:
    """The reference for the test above: the same stream, non-plain second request."""
    backend, proxy = env
    b = await backend()
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGE")
        await read_final(reader)
        writer.write(b"GET /two HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
        second, _ = await read_final(reader)
    finally:
        writer.close()
    assert second.startswith(b"HTTP/1.1 400 ")
    assert len(b.heads) == 1


async def test_a_101_to_a_request_that_asked_no_upgrade_does_not_open_a_tunnel(env) -> None:
    """WebSocket/h2c-style smuggling: the backend (or an attacker-reachable app) answers
    101 to a plain GET; the proxy switches to a blind tunnel, so the client's next bytes
    reach the backend unparsed: no X-Forwarded-For, no Host check, no routing. HAProxy
    and Envoy refuse a 101 unless the request carried ``Connection: upgrade``."""

    async def answer(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /up "):
            conn.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
        else:
            conn.write(OK_RESPONSE)

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)
        await read_final(reader)
        writer.write(b"GET /up HTTP/1.1\r\nHost: a.test\r\n\r\n")
        answer_up, _ = await read_final(reader, head_only=True)
        writer.write(b"GET /internal HTTP/1.1\r\nHost: internal\r\n\r\n")
        await read_final(reader, timeout=1.0)
    finally:
        writer.close()
    assert not answer_up.startswith(b"HTTP/1.1 101")  # a 502 is what HAProxy sends
    # Every request that reached the backend carries the proxy's forwarding fields.
    assert all(b"X-Forwarded-For: 127.0.0.1" in h for h in b.heads), b.heads


async def test_bytes_after_a_response_never_reach_the_next_request(env) -> None:
    """Response-queue poisoning: the backend answers the plain request with its response
    plus the start of a second, unsolicited one in the same read. The length does not fit
    the plain path, llhttp completes the response, the connection goes back to the pool,
    and llhttp goes on parsing the extra bytes with nobody bound. The next request reuses
    the connection and gets the injected response. HAProxy/Envoy close an upstream
    connection that sends anything past the end of the response."""
    relayed = count_taken("relay_plain")

    async def answer(conn: RawConn, head: bytes) -> None:
        if conn.index == 0 and head.startswith(b"GET /second "):
            conn.write(OK_RESPONSE + b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\nContent-Le")
        elif conn.index == 0 and head.startswith(b"GET /third "):
            conn.write(b"ngth: 4\r\n\r\nevil" + OK_RESPONSE)
        else:
            conn.write(OK_RESPONSE)

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    answers = await _exchange(
        p.port,
        [
            WARM,
            b"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n",
            b"GET /third HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ],
    )
    assert answers[1][0] == OK_RESPONSE
    # The extra bytes sent /second's answer to the general path, which dropped that
    # connection: /third went out on a fresh one and came back plain.
    assert relayed[0] == 1
    assert b"evil" not in answers[2][0] and b"X-Injected" not in answers[2][0]
    assert answers[2][0] == OK_RESPONSE


async def test_a_whole_extra_response_in_the_same_read_is_dropped_not_relayed(env) -> None:
    """The guarantee that does hold: a complete extra response in the same read is never
    shown to this client or the next one."""

    async def answer(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /second "):
            conn.write(OK_RESPONSE + b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\nContent-Length: 4\r\n\r\nevil")
        else:
            conn.write(OK_RESPONSE)

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    heads = [
        WARM,
        b"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /third HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ]
    answers = await _exchange(p.port, heads)
    assert [a for a, _ in answers] == [OK_RESPONSE] * 3


async def test_the_response_head_memo_is_bounded_in_bytes(env) -> None:
    """A backend whose heads are large and unique (a fresh 60 KB cookie each time) makes
    the memo keep each one: up to 1024 heads of up to a whole read (256 KiB) each, about
    256 MiB, and a regex match over every one of them (18 ms for a 240 KB head)."""
    counter = [0]

    async def answer(conn: RawConn, head: bytes) -> None:
        counter[0] += 1
        cookie = (b"%08d" % counter[0]) * 7500
        conn.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: s=" + cookie + b"\r\nContent-Length: 2\r\n\r\nok")

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    KNOWN_HEADS.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        for _ in range(40):
            writer.write(WARM)
            data, _ = await read_final(reader)
            assert data.endswith(b"ok")
    finally:
        writer.close()
    held = sum(map(len, KNOWN_HEADS))
    KNOWN_HEADS.clear()
    assert held <= 1024 * 1024, f"memo holds {held} bytes of response heads"


# -- 4. side effects: stats, bytes, access records, pool reuse -----------------------------
async def test_plain_and_general_exchanges_leave_the_same_bookkeeping(env) -> None:
    served = count_taken("_start_plain_read")
    relayed = count_taken("relay_plain")
    backend, proxy = env
    b = await backend()
    p = await proxy([b])
    lb = p.lb
    records = []
    p.observers.append(records.append)
    server = lb.servers[0]

    async def one(heads: list[bytes]) -> list[tuple[int, int, int, int]]:
        deltas = []
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        try:
            for head in heads:
                before = (
                    server.stats.bytes_in,
                    server.stats.bytes_out,
                    lb.totals.bytes_in,
                    lb.totals.bytes_out,
                )
                writer.write(head)
                data, _ = await read_final(reader)
                assert data == OK_RESPONSE
                after = (
                    server.stats.bytes_in,
                    server.stats.bytes_out,
                    lb.totals.bytes_in,
                    lb.totals.bytes_out,
                )
                deltas.append(tuple(a - b_ for a, b_ in zip(after, before, strict=True)))
        finally:
            writer.close()
        return deltas

    head = b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n"
    deltas = await one([head, head, head])
    assert served[0] == 2 and relayed[0] == 2
    assert deltas[0] == deltas[1] == deltas[2]
    assert deltas[0][0] == len(OK_RESPONSE) and deltas[0][1] == len(b.heads[0])
    assert b.heads[0] == b.heads[1] == b.heads[2]
    assert len(records) == 3
    fields = [(r.client, r.method, r.path, r.status, r.server, r.bytes_in, r.bytes_out) for r in records]
    assert fields == [("127.0.0.1", "GET", "/p?q=1", 200, "r0", 0, 2)] * 3
    assert all(r.upstream_ms > 0 and r.total_ms >= r.upstream_ms for r in records)
    stats = lb.stats()
    assert stats["requests"] == 3 and stats["requests_per_server"]["r0"] == 3
    assert server.active_connections == 0 and lb.in_flight == 0 and p.active_requests == 0
    assert len(b.conns) == 1 and p.pool.idle_count() == 1  # one upstream connection, reused
    lb.flush()
    assert next(s for s in lb.stats()["servers"] if s["name"] == "r0")["p99_ms"] > 0


async def test_a_plain_exchange_with_an_access_log_file_writes_the_same_line(env, tmp_path) -> None:
    from engine.accesslog import AccessLog

    backend, _ = env
    b = await backend()
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    lb = LoadBalancer([Server("127.0.0.1", b.port, name="r0")])
    p = HttpProxy(lb, ProxySettings(connect_timeout=1.0), access_log=log)
    await p.start()
    try:
        head = b"DELETE /item/7 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        answers = await _exchange(p.port, [head, head])
        assert [a for a, _ in answers] == [OK_RESPONSE] * 2
    finally:
        await p.stop(1)
        close = getattr(log, "aclose", None) or getattr(log, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == 2
    strip = [line.split(" ", 1)[1] if line[0].isdigit() else line for line in lines]
    assert all("DELETE" in line and "/item/7" in line and "r0" in line for line in strip)


# -- 5. policies and settings the plain path must not bypass -------------------------------
async def test_via_is_added_to_every_answer_with_server_header(env) -> None:
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, server_header=True))
    head = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    answers = await _exchange(p.port, [head] * 3)
    assert all(b"\r\nVia: 1.1 lbtui\r\n" in a for a, _ in answers)


async def test_a_sticky_cookie_is_offered_on_every_answer_until_the_client_sends_it(env) -> None:
    backend, proxy = env
    b0, b1 = await backend(), await backend()
    p = await proxy([b0, b1], sticky=True, sticky_method="cookie")
    head = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    answers = await _exchange(p.port, [head] * 3)
    assert all(b"\r\nSet-Cookie: " in a for a, _ in answers)


async def test_the_client_rate_limit_holds_on_repeated_requests(env) -> None:
    backend, proxy = env
    b = await backend()
    p = await proxy([b], client_rate_limit=2)
    head = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    answers = await _exchange(p.port, [head] * 4)
    statuses = [a.split(b" ")[1] for a, _ in answers]
    assert b"429" in statuses and len(b.heads) <= 3


async def test_a_path_hash_routes_each_repeated_request_by_its_own_path(env) -> None:
    backend, proxy = env
    bs = [await backend() for _ in range(4)]
    p = await proxy(bs, algorithm="consistent_hash", hash_key="path")
    paths = [f"/k{i}".encode() for i in range(12)]
    heads = [b"GET " + path + b" HTTP/1.1\r\nHost: a.test\r\n\r\n" for path in paths]
    await _exchange(p.port, heads + heads)
    owner: dict[bytes, set[int]] = {}
    for index, back in enumerate(bs):
        for head in back.heads:
            owner.setdefault(head.split(b" ")[1], set()).add(index)
    assert all(len(servers) == 1 for servers in owner.values()), owner
    assert len({next(iter(s)) for s in owner.values()}) > 1  # the key spreads


async def test_a_header_hash_follows_the_header_on_the_same_header_lines(env) -> None:
    backend, proxy = env
    bs = [await backend() for _ in range(4)]
    p = await proxy(bs, algorithm="consistent_hash", hash_key="header:X-User")
    heads = [b"GET / HTTP/1.1\r\nHost: a.test\r\nX-User: u%d\r\n\r\n" % i for i in range(12)]
    await _exchange(p.port, heads + heads)
    owner: dict[bytes, set[int]] = {}
    for index, back in enumerate(bs):
        for head in back.heads:
            user = head.split(b"X-User: ")[1].split(b"\r\n")[0]
            owner.setdefault(user, set()).add(index)
    assert all(len(servers) == 1 for servers in owner.values()), owner


async def test_head_requests_repeated_on_one_connection_are_framed_right(env) -> None:
    async def answer(conn: RawConn, head: bytes) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        for _ in range(3):
            writer.write(b"HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            async with asyncio.timeout(3):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    finally:
        writer.close()
    assert len(b.conns) == 1


@pytest.mark.parametrize("count, ok", [(3, True), (4, False)])
async def test_max_headers_is_enforced_the_same_way_on_repeats(env, count, ok) -> None:
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, max_headers=3))
    head = (
        b"GET / HTTP/1.1\r\nHost: a.test\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
        + b"\r\n"
    )
    answers = await _exchange(p.port, [b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", head, head])
    if ok:
        assert [a for a, _ in answers] == [OK_RESPONSE] * 3
    else:
        assert answers[1][0].startswith(b"HTTP/1.1 431 ") and answers[1][1]


@pytest.mark.parametrize("limit", ["max_request_line", "max_header_bytes"])
async def test_size_limits_are_enforced_the_same_way_on_repeats(env, limit) -> None:
    backend, proxy = env
    b = await backend()
    settings = ProxySettings(connect_timeout=1.0)
    setattr(settings, limit, 64)
    p = await proxy([b], settings)
    small = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    big = b"GET /" + b"a" * 70 + b" HTTP/1.1\r\nHost: a.test\r\n\r\n"
    if limit == "max_header_bytes":
        big = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: " + b"b" * 70 + b"\r\n\r\n"
    answers = await _exchange(p.port, [small, small, big])
    assert answers[0][0] == answers[1][0] == OK_RESPONSE
    assert answers[2][0].split(b" ")[1] in (b"414", b"431") and answers[2][1]
    assert len(b.heads) == 2


# -- 6. Host changes and per-connection state ---------------------------------------------
async def test_a_host_change_through_a_non_simple_request_keeps_the_plain_state_right(env) -> None:
    """a.test (general, learns the block) -> a.test (plain) -> b.test with a trusted
    X-Forwarded-Proto (its own block, fwd_host stays a.test) -> a.test again (the
    remembered plain request) -> b.test plain-looking (general: another Host)."""
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, trust_forwarded=True))
    a = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"
    other = b"GET /x HTTP/1.1\r\nHost: b.test\r\nX-Forwarded-Proto: https\r\n\r\n"
    b_plain = b"GET /x HTTP/1.1\r\nHost: b.test\r\n\r\n"
    await _exchange(p.port, [a, a, other, a, b_plain, b_plain, a])
    hosts = [h.split(b"X-Forwarded-Host: ")[1].split(b"\r\n")[0] for h in b.heads]
    assert hosts == [b"a.test", b"a.test", b"b.test", b"a.test", b"b.test", b"b.test", b"a.test"]
    for head in b.heads:
        host = head.split(b"\r\nHost: ")[1].split(b"\r\n")[0]
        assert head.count(b"X-Forwarded-Host: " + host + b"\r\n") == 1
        assert b'host="' + host + b'"' in head


# -- 7. pipelining and requests arriving while an exchange is active ----------------------
async def test_pipelined_and_early_requests_are_answered_in_order(env) -> None:
    gate = asyncio.Event()

    async def answer(conn: RawConn, head: bytes) -> None:
        path = head.split(b" ")[1]
        if path == b"/hold":
            await asyncio.wait_for(gate.wait(), 5)
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)
        await read_final(reader)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: a.test\r\n\r\n")  # plain, held
        await wait_for(lambda: len(b.heads) == 2, what="the held request upstream")
        writer.write(b"GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n")  # arrives while active
        writer.write(b"GET /p1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        gate.set()
        bodies = []
        for _ in range(4):
            data, _ = await read_final(reader)
            bodies.append(data.split(b"\r\n\r\n", 1)[1])
    finally:
        writer.close()
    assert bodies == [b"/hold", b"/next", b"/p1", b"/p2"]


# -- 8. responses split across reads ------------------------------------------------------
async def test_a_response_head_split_across_reads_is_relayed_whole(env) -> None:
    parts_sent = asyncio.Event()
    proceed = asyncio.Event()

    async def answer(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /split "):
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Le")
            await conn.writer.drain()
            parts_sent.set()
            await asyncio.wait_for(proceed.wait(), 5)
            conn.write(b"ngth: 2\r\n\r\nok")
        else:
            conn.write(OK_RESPONSE)

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)
        await read_final(reader)
        writer.write(b"GET /split HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await asyncio.wait_for(parts_sent.wait(), 5)

        def upstream_has_part() -> bool:
            return any(
                c.active is not None and c.active.upstream is not None and c.active.upstream.acc
                for c in p._conns
            )

        await wait_for(upstream_has_part, what="the first part read by the proxy")
        proceed.set()
        data, _ = await read_final(reader)
        writer.write(WARM)
        again, _ = await read_final(reader)
    finally:
        writer.close()
    assert data == OK_RESPONSE and again == OK_RESPONSE
    assert len(b.conns) == 1


# -- 9. failures, timeouts, shutdown, drain -------------------------------------------------
async def test_a_reset_after_the_plain_request_is_retried_on_another_server(env) -> None:
    served = count_taken("_start_plain_read")

    async def reset(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.write(OK_RESPONSE)
        else:
            conn.writer.transport.abort()

    backend, proxy = env
    bad, good = await backend(reset), await backend()
    p = await proxy([bad, good], algorithm="round_robin")
    records = []
    p.observers.append(records.append)
    # Round robin: every other request lands on the resetting server, plain after the first.
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        answers = []
        for _ in range(4):
            writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
            answers.append((await read_final(reader))[0])
    finally:
        writer.close()
    assert answers == [OK_RESPONSE] * 4
    assert served[0] == 3 and len(bad.heads) >= 2  # plain requests reached the resetting server
    assert all(r.server == "r1" and r.status == 200 for r in records)
    assert p.lb.servers[0].stats.errors >= 1
    assert p.lb.in_flight == 0 and all(s.active_connections == 0 for s in p.lb.servers)


async def test_an_upstream_that_never_answers_a_plain_request_gets_504(env) -> None:
    async def stall(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.write(OK_RESPONSE)
        else:
            await asyncio.sleep(30)

    backend, proxy = env
    b = await backend(stall)
    p = await proxy([b], ProxySettings(connect_timeout=1.0, upstream_timeout=0.3))
    records = []
    p.observers.append(records.append)
    answers = await _exchange(p.port, [WARM, b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n"])
    assert answers[1][0].startswith(b"HTTP/1.1 504 ")
    assert [r.status for r in records] == [200, 504]
    assert p.lb.servers[0].stats.errors == 1 and p.lb.in_flight == 0


async def test_a_client_gone_mid_plain_exchange_frees_everything_and_logs_499(env) -> None:
    async def stall(conn: RawConn, head: bytes) -> None:
        if head.startswith(b"GET /warm "):
            conn.write(OK_RESPONSE)
        else:
            await asyncio.sleep(30)

    backend, proxy = env
    b = await backend(stall)
    p = await proxy([b])
    records = []
    p.observers.append(records.append)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(WARM)
    await read_final(reader)
    writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
    await wait_for(lambda: len(b.heads) == 2, what="the request upstream")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()
    await wait_for(lambda: len(records) == 2, what="the 499 record")
    assert records[1].status == 499 and records[1].server == "r0"
    assert p.lb.in_flight == 0 and p.active_requests == 0 and p.pool.idle_count() == 0


async def test_graceful_stop_during_a_plain_exchange_answers_then_closes(env) -> None:
    gate = asyncio.Event()

    async def answer(conn: RawConn, head: bytes) -> None:
        if not head.startswith(b"GET /warm "):
            await asyncio.wait_for(gate.wait(), 5)
        conn.write(OK_RESPONSE)

    backend, proxy = env
    b = await backend(answer)
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)
        await read_final(reader)
        writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
        await wait_for(lambda: len(b.heads) == 2, what="the request upstream")
        stopping = asyncio.create_task(p.stop(3))
        await wait_for(lambda: not p.listening, what="stop begun")
        gate.set()
        data, closed = await read_final(reader)
        await stopping
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"ok")
    assert b"\r\nConnection: close\r\n" in data
    assert closed or await _closed_soon(reader)


async def test_draining_a_server_mid_plain_exchange_announces_drained(env) -> None:
    gate = asyncio.Event()

    async def answer(conn: RawConn, head: bytes) -> None:
        if not head.startswith(b"GET /warm "):
            await asyncio.wait_for(gate.wait(), 5)
        conn.write(OK_RESPONSE)

    backend, proxy = env
    b0, b1 = await backend(answer), await backend()
    p = await proxy([b0, b1], algorithm="round_robin")
    events = []
    p.lb.events.subscribe(events.append)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)  # r0
        await read_final(reader)
        writer.write(WARM)  # r1
        await read_final(reader)
        writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")  # plain, r0, held
        await wait_for(lambda: len(b0.heads) == 2, what="the held request")
        p.lb.drain("r0")
        gate.set()
        data, _ = await read_final(reader)
        writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
        after, _ = await read_final(reader)
    finally:
        writer.close()
    assert data == OK_RESPONSE and after == OK_RESPONSE
    await wait_for(lambda: any(getattr(e, "kind", None) == "drained" for e in events), what="drained event")
    assert len(b0.heads) == 2 and len(b1.heads) == 2


# -- 10. the memo --------------------------------------------------------------------------
def test_the_memo_answers_like_a_fresh_match_and_stays_bounded_in_count() -> None:
    KNOWN_HEADS.clear()
    heads = [b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 2\r\n\r\n" % i for i in range(1500)]
    first = [plain_response_head(h) for h in heads]
    assert len(KNOWN_HEADS) <= 1024
    assert [plain_response_head(h) for h in heads] == first == [(200, 2, -1)] * 1500
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    assert plain_response_head(bad) is None and KNOWN_HEADS[bad] is None
    KNOWN_HEADS.clear()


async def test_support_backends_agree_with_the_plain_path() -> None:
    """The project's own test backend through both paths: identical JSON echoes."""
    backends = await start_backends(1)
    fx: Fixture = await make_proxy(backends)
    served = count_taken("_start_plain_read")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
        try:
            head = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Trace: 1\r\n\r\n"
            answers = []
            for _ in range(2):
                writer.write(head)
                answers.append(await read_response(reader))
        finally:
            writer.close()
        assert served[0] == 1
        assert answers[0] == answers[1]
    finally:
        await fx.proxy.stop(1)
        for backend in backends:
            await backend.stop()


# -- 11. more timeouts and close races ----------------------------------------------------
async def test_a_request_head_started_after_a_pipelined_one_is_under_the_header_timeout(env) -> None:
    """Same root cause as the plain-gate bug: after ``...\r\n\r\nGE`` the phase is IDLE,
    so the slowloris guard (header_timeout) does not run for the started head."""
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, header_timeout=0.2, idle_timeout=10.0))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGE")
        first, _ = await read_final(reader)
        assert first == OK_RESPONSE
        rest, _ = await read_final(reader, timeout=1.5)
        assert rest.startswith(b"HTTP/1.1 408 ")
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # and the proxy closed
    finally:
        writer.close()


async def test_a_half_closed_client_still_gets_its_plain_answer(env) -> None:
    backend, proxy = env
    b = await backend()
    p = await proxy([b])
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(WARM)
        await read_final(reader)
        writer.write(b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n")
        writer.write_eof()
        data, _ = await read_final(reader)
        # No request can follow an EOF: the answer says so, and the proxy closes.
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
    assert data == OK_RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")


async def test_a_backend_closing_after_each_plain_answer_never_fails_a_request(env) -> None:
    async def answer_and_close(conn: RawConn, head: bytes) -> None:
        conn.write(OK_RESPONSE)
        await conn.writer.drain()
        conn.writer.close()

    backend, proxy = env
    b = await backend(answer_and_close)
    p = await proxy([b])
    head = b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n"
    answers = await _exchange(p.port, [head] * 6)
    assert [a for a, _ in answers] == [OK_RESPONSE] * 6
    assert p.lb.in_flight == 0


async def test_with_no_pool_each_plain_answer_closes_its_upstream(env) -> None:
    backend, proxy = env
    b = await backend()
    p = await proxy([b], ProxySettings(connect_timeout=1.0, pool_size=0))
    head = b"GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n"
    answers = await _exchange(p.port, [head] * 3)
    assert [a for a, _ in answers] == [OK_RESPONSE] * 3
    assert len(b.conns) == 3 and p.pool.idle_count() == 0
