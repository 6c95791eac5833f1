"""Test backends and helpers for the proxy tests: raw asyncio HTTP servers on loopback.

The backend is written on asyncio streams with its own llhttp parser so tests control
every byte: slow answers, resets, chunked and close-delimited bodies, 100-continue,
WebSocket-style upgrades, and a record of exactly what reached it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httptools

from engine.balancer import LoadBalancer
from engine.proxy import HttpProxy, ProxySettings
from engine.proxy.client import PLAIN_TAKEN
from engine.server import Server


@dataclass
class Seen:
    """One request as the backend received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body_length: int
    body_sha256: str
    connection: int

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class _Message:
    method: str = ""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    hasher: object = field(default_factory=hashlib.sha256)
    length: int = 0
    keep_alive: bool = True
    expect: bool = False


class Backend:
    """A loopback HTTP/1.1 backend whose behaviour depends on the request path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.connections = 0
        self.seen: list[Seen] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.release = asyncio.Event()  # /hold waits on it

    async def start(self, port: int = 0) -> Backend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def server(self) -> Server:
        return Server("127.0.0.1", self.port, name=self.name)

    async def stop(self) -> None:
        """Stop like a killed process: listener gone, every connection reset."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        conn_id = self.connections
        done: list[_Message] = []
        state: dict[str, _Message] = {}

        class Callbacks:
            def on_message_begin(self_inner) -> None:
                state["m"] = _Message()

            def on_url(self_inner, url: bytes) -> None:
                state["m"].url += url

            def on_header(self_inner, name: bytes, value: bytes) -> None:
                message = state["m"]
                message.headers.append((name, value))
                if name.lower() == b"expect" and value.lower() == b"100-continue":
                    message.expect = True

            def on_headers_complete(self_inner) -> None:
                message = state["m"]
                message.method = parser.get_method().decode()
                message.keep_alive = parser.should_keep_alive()
                if message.expect and not message.url.startswith(b"/reject-expect"):
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

            def on_body(self_inner, body: bytes) -> None:
                message = state["m"]
                message.hasher.update(body)  # type: ignore[attr-defined]
                message.length += len(body)

            def on_message_complete(self_inner) -> None:
                message = state["m"]
                message.keep_alive = parser.should_keep_alive()
                done.append(message)

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade as upgrade:
                    message = state["m"]
                    if message not in done:
                        done.append(message)
                    self._record(message, conn_id)
                    rest = data[upgrade.args[0] :]
                    await self._tunnel(reader, writer, rest)
                    return
                except httptools.HttpParserError:
                    writer.write(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    break
                while done:
                    message = done.pop(0)
                    self._record(message, conn_id)
                    keep = await self._answer(message, writer)
                    if not keep or not message.keep_alive:
                        await writer.drain()
                        writer.close()
                        return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    def _record(self, message: _Message, conn_id: int) -> None:
        self.seen.append(
            Seen(
                message.method,
                message.url.decode("latin-1"),
                [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.headers],
                message.length,
                message.hasher.hexdigest(),  # type: ignore[attr-defined]
                conn_id,
            )
        )

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: bytes) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        if rest:
            writer.write(rest.upper())
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    async def _answer(self, message: _Message, writer: asyncio.StreamWriter) -> bool:
        url = urlsplit(message.url.decode("latin-1"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        head_only = message.method == "HEAD"
        base = f"X-Served-By: {self.name}\r\n"
        if path == "/reset":
            writer.transport.abort()
            return False
        if path == "/slow" or path == "/hold":
            if path == "/slow":
                await asyncio.sleep(float(query.get("ms", "100")) / 1000)
            else:
                await asyncio.wait_for(self.release.wait(), 10)
        if path == "/chunked":
            count, size = int(query.get("count", "3")), int(query.get("size", "10"))
            writer.write(
                f"HTTP/1.1 200 OK\r\n{base}Content-Type: application/octet-stream\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            if not head_only:
                for index in range(count):
                    piece = bytes([65 + index % 26]) * size
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            return True
        if path == "/bytes":
            total = int(query.get("n", "1000"))
            writer.write(f"HTTP/1.1 200 OK\r\n{base}Content-Length: {total}\r\n\r\n".encode())
            if not head_only:
                sent = 0
                block = bytes(range(256)) * 256
                while sent < total:
                    piece = block[: min(len(block), total - sent)]
                    writer.write(piece)
                    sent += len(piece)
                    await writer.drain()
            return True
        if path == "/eof":
            writer.write(f"HTTP/1.1 200 OK\r\n{base}Connection: close\r\n\r\n".encode())
            writer.write(b"until-close body")
            return False
        if path == "/reject-expect":
            writer.write(
                f"HTTP/1.1 417 Expectation Failed\r\n{base}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            return False
        if path == "/headers-out":
            body = b"ok"
            writer.write(
                (
                    f"HTTP/1.1 200 OK\r\n{base}X-Custom-Case: Value\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                    "Connection: X-Hop, keep-alive\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            return True
        if path in ("/nginx-head", "/apache-head", "/close-head"):
            # Hop-by-hop fields about the upstream connection only, as real servers send them.
            hops = {
                "/nginx-head": "Connection: keep-alive\r\n",
                "/apache-head": "Keep-Alive: timeout=5, max=100\r\nConnection: Keep-Alive\r\n",
                "/close-head": "Connection:  close \r\n",
            }[path]
            body = b"fine\n"
            writer.write(
                (
                    f"HTTP/1.1 200 OK\r\nServer: t\r\n{hops}{base}Content-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nX-After: 1\r\n\r\n"
                ).encode()
                + body
            )
            if path == "/close-head":
                await writer.drain()
                writer.close()
            return True
        if path == "/status":
            code = int(query.get("code", "500"))
            body = b"status"
            writer.write(f"HTTP/1.1 {code} X\r\n{base}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return True
        payload = {
            "server": self.name,
            "method": message.method,
            "path": message.url.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in message.headers],
            "body_length": message.length,
            "body_sha256": message.hasher.hexdigest(),  # type: ignore[attr-defined]
        }
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 200 OK\r\n{base}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + (b"" if head_only else body))
        return True


async def start_backends(count: int, prefix: str = "b") -> list[Backend]:
    return [await Backend(f"{prefix}{index}").start() for index in range(count)]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a condition with a deadline (no sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes, return everything received until the proxy closes (or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_close and b"\r\n\r\n" in b"".join(chunks):
                    break
    finally:
        writer.close()
    return b"".join(chunks)


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length or chunked response from a raw connection."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        else:
            body = await reader.read()
        return status, headers, body


class Fixture:
    """A running proxy over backends, torn down by the test fixture."""

    def __init__(self, proxy: HttpProxy, backends: list[Backend], lb: LoadBalancer) -> None:
        self.proxy = proxy
        self.backends = backends
        self.lb = lb

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"


async def make_proxy(
    backends: list[Backend], settings: ProxySettings | None = None, **lb_options: object
) -> Fixture:
    lb = LoadBalancer([b.server for b in backends], **lb_options)  # type: ignore[arg-type]
    proxy = HttpProxy(lb, settings or ProxySettings(connect_timeout=1.0))
    await proxy.start()
    return Fixture(proxy, backends, lb)


Cleanup = Callable[[], Awaitable[None]]


class _Taken:
    """``taken[0]``: how many times a plain path took a request or response since made."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.start = PLAIN_TAKEN[index]

    def __getitem__(self, item: int) -> int:
        assert item == 0
        return PLAIN_TAKEN[self.index] - self.start


def count_taken(method: str) -> _Taken:
    """Counts the requests (``_start_plain_read``) or responses (``relay_plain``) the
    proxy's plain fast paths take from now on (``PLAIN_TAKEN``: compiled code cannot be
    spied on by wrapping its methods)."""
    return _Taken({"_start_plain_read": 0, "relay_plain": 1}[method])
