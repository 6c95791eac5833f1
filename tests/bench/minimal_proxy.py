"""A deliberately minimal HTTP proxy: the reference row of the proxy benchmark.

Why it exists: it shows, in the same run and on the same machine, what asyncio
Protocols + httptools (llhttp) + uvloop with pooled upstream connections can do when
nothing else is on the request path (no policy engine, stats, access log, timeouts,
validation or header rewriting beyond X-Forwarded-For). The distance between this row
and lbtui's is the cost of lbtui's own code; the distance between this row and
HAProxy is the cost of Python. Not lbtui; bodyless requests only; never use it.

    python tests/bench/minimal_proxy.py --port P --backends 8001,8002,8003
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One pooled keep-alive connection to a backend; forwards the raw response bytes."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()  # read here: llhttp resets it afterwards
        client, self.client = self.client, None
        chunks, self.chunks = self.chunks, []
        if client is not None and client.transport is not None:
            client.transport.write(b"".join(chunks))
        if self.reusable:
            self.pool.append(self)
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)


class Client(asyncio.Protocol):
    """One client connection: parse a request head, send it to the next backend."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, b": ", value, b"\r\n")

    def on_message_complete(self) -> None:
        head = b"".join(
            [
                self.parser.get_method(),
                b" ",
                self.url,
                b" HTTP/1.1\r\n",
                *self.headers,
                b"X-Forwarded-For: 127.0.0.1\r\n\r\n",
            ]
        )
        self.headers = []
        self.router.send(self, head)


class Router:
    """Round robin over the backends, each with its own idle-connection pool."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.pools: list[list[Upstream]] = [[] for _ in backends]
        self.turn = itertools.cycle(range(len(backends)))
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, client: Client, head: bytes) -> None:
        index = next(self.turn)
        pool = self.pools[index]
        if pool:
            upstream = pool.pop()
            upstream.client = client
            assert upstream.transport is not None
            upstream.transport.write(head)
            return
        task = asyncio.get_running_loop().create_task(self._connect(index, client, head))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, index: int, client: Client, head: bytes) -> None:
        host, port = self.backends[index]
        pool = self.pools[index]
        try:
            _, upstream = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(lambda: Upstream(pool), host, port), 3.0
            )
        except (OSError, TimeoutError):
            if client.transport is not None:
                client.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(head)


async def serve(port: int, backends: list[tuple[str, int]]) -> None:
    router = Router(backends)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(router), "127.0.0.1", port, backlog=1024)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backends", required=True, help="comma-separated loopback ports")
    args = parser.parse_args()
    backends = [("127.0.0.1", int(p)) for p in args.backends.split(",")]
    try:
        uvloop.run(serve(args.port, backends))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
