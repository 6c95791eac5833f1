"""Quick proxy benchmark: requests/s through lbtui's HTTP proxy vs direct to a backend.

Self-contained (no wrk): a backend process (uvloop, fixed 14-byte answer), a proxy
process (HttpProxy with round robin, stats on) and a load generator in this process
that keeps C keep-alive connections busy, one request at a time per connection, as wrk
does. Rounds alternate direct and proxied; the medians and their ratio are printed.

    python tests/bench/bench_proxy_quick.py [--requests 20000] [--connections 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n\r\nHello, world!\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def _install_uvloop() -> str:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:  # pragma: no cover
        return "asyncio"


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        count = data.count(b"\r\n\r\n")
        if count:
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


def _run_backend(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    _install_uvloop()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _run_proxy(backend_port: int, port_queue: multiprocessing.Queue, access_log: str | None) -> None:  # type: ignore[type-arg]
    _install_uvloop()
    from engine.accesslog import AccessLog
    from engine.balancer import LoadBalancer
    from engine.proxy import HttpProxy
    from engine.server import Server

    async def main() -> None:
        lb = LoadBalancer([Server("127.0.0.1", backend_port, name="b0")], "round_robin")
        log = AccessLog(access_log) if access_log else None
        proxy = HttpProxy(lb, access_log=log)
        await proxy.start()
        port_queue.put(proxy.port)
        await asyncio.Event().wait()

    asyncio.run(main())


class _Client(asyncio.Protocol):
    def __init__(self, state: dict[str, int], done: asyncio.Future[None], total: int) -> None:
        self.state = state
        self.done = done
        self.total = total
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        if self.state["sent"] < self.total:
            self.state["sent"] += 1
            self.transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # Responses are fixed-size here (14-byte body); count complete ones.
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.state["done"] += 1
            if self.state["done"] >= self.total:
                if not self.done.done():
                    self.done.set_result(None)
                return
            self.send()


async def _load(port: int, total: int, connections: int) -> float:
    loop = asyncio.get_running_loop()
    state = {"sent": 0, "done": 0}
    done: asyncio.Future[None] = loop.create_future()
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(state, done, total), "127.0.0.1", port)
        clients.append(client)
    started = time.perf_counter()
    for client in clients:
        client.send()
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - started
    for client in clients:
        client.transport.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--access-log", default=None, help="write an access log to this file during the run")
    args = parser.parse_args()
    loop_name = _install_uvloop()
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    backend = ctx.Process(target=_run_backend, args=(ports,), daemon=True)
    backend.start()
    backend_port = ports.get(timeout=20)
    proxy = ctx.Process(target=_run_proxy, args=(backend_port, ports, args.access_log), daemon=True)
    proxy.start()
    proxy_port = ports.get(timeout=20)
    direct: list[float] = []
    proxied: list[float] = []
    try:
        asyncio.run(_load(proxy_port, 2000, args.connections))  # warm-up
        for _ in range(args.rounds):
            direct.append(asyncio.run(_load(backend_port, args.requests, args.connections)))
            proxied.append(asyncio.run(_load(proxy_port, args.requests, args.connections)))
    finally:
        proxy.terminate()
        backend.terminate()
        proxy.join(5)
        backend.join(5)
    d, p = statistics.median(direct), statistics.median(proxied)
    print(f"loop={loop_name} requests={args.requests} connections={args.connections} rounds={args.rounds}")
    print(f"direct  : {d:10,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in direct)})")
    print(f"proxied : {p:10,.0f} req/s  (rounds: {', '.join(f'{x:,.0f}' for x in proxied)})")
    print(f"ratio proxied/direct: {p / d:.2f}")


if __name__ == "__main__":
    main()
