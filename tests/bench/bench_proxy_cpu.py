"""CPU per request: lbtui's HTTP proxy against a minimal Protocols + httptools proxy.

The machine is shared and noisy, so requests/s alone says little; what a proxy costs is
the CPU time its process spends per request. Each proxy runs in its own process on
uvloop and reports ``time.process_time()`` (all its threads, the access-log writer
included) over a control pipe before and after a round; the load generator (this
process) keeps C keep-alive connections busy, one request at a time each, as wrk does,
against one fixed-answer backend process. Rounds interleave the proxies; medians of the
rounds and the ratio lbtui/baseline are printed.

- ``baseline``: the minimal proxy of issue 3, written below: parse with llhttp, rebuild
  the request head, one pooled upstream connection per client connection, keep-alive
  both sides, nothing else.
- ``lbtui-rr-nolog``: ``lbtui-rr`` without its access log, to price the log in the same run.
- ``lbtui-rr`` / ``lbtui-hash``: ``HttpProxy`` with three servers (on the one backend),
  round robin or consistent hashing on the client IP, stats with percentiles, a JSON
  access log to a temporary file, X-Forwarded-*/Forwarded added.

``--inprocess`` drives the same proxies by direct calls on null transports (no sockets,
no load generator): the Python cost alone, far less noisy than the socket rounds,
which also carry the kernel's share (two reads and two writes per request, the same
for every proxy). ``--no-access-log`` runs lbtui without its access log.
``--bytecodes`` counts the Python bytecodes per request instead of timing them: exact,
so it resolves changes of a few percent that the timings here cannot.

    python tests/bench/bench_proxy_cpu.py [--requests 20000] [--connections 50] [--rounds 5]
    python tests/bench/bench_proxy_cpu.py --inprocess [--rounds 7] [--inprocess-connections 50]
    python tests/bench/bench_proxy_cpu.py --bytecodes --inprocess-connections 50 [--only ...]
    python tests/bench/bench_proxy_cpu.py --profile /tmp/lbtui.prof   # cProfile of lbtui-hash
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# The head nginx's `return 200 "..."` answers over a keep-alive connection (the backends
# of bench_proxy.py): its `Connection: keep-alive` is a hop-by-hop field a proxy must
# drop. ``BENCH_PLAIN_HEAD=1`` answers the bare head used before (no such field).
NGINX_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 00:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, world!\n"
)
PLAIN_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n\r\nHello, world!\n"
RESPONSE = PLAIN_RESPONSE if os.environ.get("BENCH_PLAIN_HEAD") else NGINX_RESPONSE
REQUEST = b"GET /item/42?x=1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"


def _install_uvloop() -> str:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:  # pragma: no cover
        return "asyncio"


# -- backend ---------------------------------------------------------------------------
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
        server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the minimal baseline proxy -----------------------------------------------------------
class _BaseUpstream(asyncio.Protocol):
    """The upstream side of the baseline: relays one response at a time to its client."""

    def __init__(self, client: _BaseClient) -> None:
        import httptools

        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.parts: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.parts:
            parts, self.parts = self.parts, []
            self.client.transport.writelines(parts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream = None
        self.client.transport.close()

    def on_status(self, reason: bytes) -> None:
        self.parts.append(b"HTTP/1.1 %d %s\r\n" % (self.parser.get_status_code(), reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.parts.append(b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.client.no_reuse = True


class _BaseClient(asyncio.Protocol):
    """The client side of the baseline: parse, rebuild the head, forward, keep alive."""

    def __init__(self, backend_port: int) -> None:
        import httptools

        self.backend_port = backend_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: _BaseUpstream | None = None
        self.parts: list[bytes] = []
        self.waiting: list[list[bytes]] = []
        self.no_reuse = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.parts = [self.parser.get_method(), b" ", url, b" HTTP/1.1\r\n"]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.parts.append(b"\r\n")

    def on_message_complete(self) -> None:
        parts, self.parts = self.parts, []
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.writelines(parts)
            return
        self.waiting.append(parts)
        if up is None:
            self.upstream = up = _BaseUpstream(self)
            asyncio.get_running_loop().create_task(self._connect(up))

    async def _connect(self, up: _BaseUpstream) -> None:
        await asyncio.get_running_loop().create_connection(lambda: up, "127.0.0.1", self.backend_port)
        for parts in self.waiting:
            up.transport.writelines(parts)  # type: ignore[union-attr]
        self.waiting = []


async def _start_baseline(backend_port: int) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _BaseClient(backend_port), "127.0.0.1", 0, backlog=1024)
    return server.sockets[0].getsockname()[1]


# -- lbtui ---------------------------------------------------------------------------------
async def _start_lbtui(
    backend_port: int, policy: str, log_dir: str, nolog: bool = False
) -> tuple[int, object]:
    from engine.accesslog import AccessLog
    from engine.balancer import LoadBalancer
    from engine.proxy import HttpProxy
    from engine.server import Server

    servers = [Server("127.0.0.1", backend_port, name=f"b{i}") for i in range(3)]
    lb = LoadBalancer(servers, policy, hash_key="client_ip")
    nolog = nolog or bool(os.environ.get("BENCH_NOLOG"))
    log = None if nolog else AccessLog(os.path.join(log_dir, f"access-{policy}-{os.getpid()}.log"))
    proxy = HttpProxy(lb, access_log=log)
    await proxy.start()
    return proxy.port, lb


def _run_proxy(kind: str, backend_port: int, control: Connection, log_dir: str, profile: str) -> None:
    """A proxy process: start, report the port, then answer CPU-time queries on ``control``."""
    _install_uvloop()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "baseline":
            port = await _start_baseline(backend_port)
        else:
            port, _ = await _start_lbtui(
                backend_port,
                "consistent_hash" if kind == "lbtui-hash" else "round_robin",
                log_dir,
                nolog=kind.endswith("-nolog"),
            )
        stop = loop.create_future()

        def answer() -> None:
            message = control.recv()
            if message == "stop":
                stop.set_result(None)
                return
            if profiler is not None:
                (profiler.enable if message == "start" else profiler.disable)()
            control.send(time.process_time())

        loop.add_reader(control.fileno(), answer)
        control.send(port)
        await stop

    asyncio.run(main())
    if profiler is not None:
        profiler.dump_stats(profile)
    control.send("stopped")


# -- in-process harness: the Python cost alone, no sockets ------------------------------------
class _NullTransport:
    """Stands in for a socket: every write is dropped, so only the proxy's own work is timed."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, parts: object) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _inprocess(kind: str, total: int, log_dir: str, conns: int = 1) -> float:
    """CPU us per request of one proxy driven by direct calls: request in, response in.

    With ``conns`` > 1, that many client connections each have a request in flight at
    once (requests to all, then responses to all), as the socket rounds do: the working
    set of connection, exchange and upstream objects is that of 50 busy clients, not one.
    """
    if conns > 1:
        return await _inprocess_many(kind, total, log_dir, conns)
    if kind == "baseline":
        client = _BaseClient(0)
        client.connection_made(_NullTransport())  # type: ignore[arg-type]
        up = _BaseUpstream(client)
        up.connection_made(_NullTransport())  # type: ignore[arg-type]
        client.upstream = up
        feed_request, feed_response = client.data_received, up.data_received
        started = time.process_time()
        for _ in range(total):
            feed_request(REQUEST)
            feed_response(RESPONSE)
        return (time.process_time() - started) / total * 1e6
    from engine.proxy.pool import UpstreamConnection

    policy = "consistent_hash" if kind == "lbtui-hash" else "round_robin"
    _, lb = await _start_lbtui_inprocess(policy, log_dir, nolog=kind.endswith("-nolog"))
    proxy = lb  # type: ignore[assignment]
    conn = proxy.protocol()
    conn.connection_made(_NullTransport())
    for server in proxy.lb.servers:
        for _ in range(2):
            upstream = UpstreamConnection(proxy.pool, server)
            upstream.connection_made(_NullTransport())  # type: ignore[arg-type]
            proxy.pool.release(upstream)
    feed = conn.data_received
    flush = proxy.writes.flush  # what the event loop runs after each batch of reads
    started = time.process_time()
    for _ in range(total):
        feed(REQUEST)
        flush()
        conn.active.upstream.data_received(RESPONSE)
        flush()
    if proxy.access_log is not None:
        proxy.access_log.flush()
    elapsed = time.process_time() - started
    await proxy.stop(0)
    return elapsed / total * 1e6


async def _inprocess_many(kind: str, total: int, log_dir: str, conns: int) -> float:
    rounds = max(1, total // conns)
    one_round, stop = await _many_connections(kind, log_dir, conns)
    started = time.process_time()
    for _ in range(rounds):
        one_round()
    elapsed = time.process_time() - started
    await stop()
    return elapsed / (rounds * conns) * 1e6


async def _many_connections(kind: str, log_dir: str, conns: int) -> tuple[Callable[[], None], Callable[[], Any]]:
    """``conns`` client connections of one proxy on null transports; ``one_round`` gives
    each a request, then each its response, as the event loop would (``stop`` ends it)."""
    if kind == "baseline":
        pairs = []
        for _ in range(conns):
            client = _BaseClient(0)
            client.connection_made(_NullTransport())  # type: ignore[arg-type]
            up = _BaseUpstream(client)
            up.connection_made(_NullTransport())  # type: ignore[arg-type]
            client.upstream = up
            pairs.append((client.data_received, up.data_received))
        feeds = [f for f, _ in pairs]
        answers = [a for _, a in pairs]

        def baseline_round() -> None:
            for feed in feeds:
                feed(REQUEST)
            for answer in answers:
                answer(RESPONSE)

        async def nothing() -> None:
            return None

        return baseline_round, nothing
    from engine.proxy.pool import UpstreamConnection

    policy = "consistent_hash" if kind == "lbtui-hash" else "round_robin"
    _, proxy = await _start_lbtui_inprocess(policy, log_dir, nolog=kind.endswith("-nolog"))
    clients = []
    for index in range(conns):
        conn = proxy.protocol()  # type: ignore[attr-defined]
        transport = _NullTransport()
        transport.get_extra_info = (  # type: ignore[method-assign]
            lambda name, default=None, i=index: (
                (f"127.0.0.{1 + i % 200}", 40000 + i) if name == "peername" else default
            )
        )
        conn.connection_made(transport)
        clients.append(conn)
    for server in proxy.lb.servers:  # type: ignore[attr-defined]
        for _ in range(conns):
            upstream = UpstreamConnection(proxy.pool, server)  # type: ignore[attr-defined]
            upstream.connection_made(_NullTransport())  # type: ignore[arg-type]
            proxy.pool.release(upstream)  # type: ignore[attr-defined]
    feeds = [c.data_received for c in clients]
    flush = proxy.writes.flush  # type: ignore[attr-defined]  # what the event loop runs after each batch of reads

    def lbtui_round() -> None:
        for feed in feeds:
            feed(REQUEST)
        flush()
        for conn in clients:
            conn.active.upstream.data_received(RESPONSE)
        flush()

    async def stop() -> None:
        if proxy.access_log is not None:  # type: ignore[attr-defined]
            proxy.access_log.flush()  # type: ignore[attr-defined]
        await proxy.stop(0)  # type: ignore[attr-defined]

    return lbtui_round, stop


async def _bytecodes(kind: str, log_dir: str, conns: int, requests: int) -> tuple[float, Counter[str]]:
    """Python bytecodes run per request in the steady state, in all and per function.

    A count, not a time: the same on a quiet machine and a busy one, so a change to the
    request path shows as a difference of a few bytecodes that no timing could resolve.
    (Bytecodes are not equally dear, and C calls count as one, so it is a guide, not a
    price.) The harness's own round loop and null transports are left out.
    """
    one_round, stop = await _many_connections(kind, log_dir, conns)
    for _ in range(max(1, 2000 // conns)):  # warm: pools, memos, the spare exchanges
        one_round()
    counts: Counter[str] = Counter()
    harness = ("_NullTransport.", "_many_connections.<locals>.")  # not either proxy's work

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        if event == "opcode" and not code.co_qualname.startswith(harness):
            counts[f"{os.path.basename(code.co_filename)}:{code.co_qualname}"] += 1
        return trace

    rounds = max(1, requests // conns)
    sys.settrace(trace)
    try:
        for _ in range(rounds):
            one_round()
    finally:
        sys.settrace(None)
    await stop()
    served = rounds * conns
    return sum(counts.values()) / served, counts


def _run_bytecodes(kinds: list[str], conns: int, requests: int) -> None:
    _install_uvloop()
    log_dir = tempfile.mkdtemp(prefix="lbtui-bench-cpu-")
    totals = {}
    for kind in kinds:
        per_request, counts = asyncio.run(_bytecodes(kind, log_dir, conns, requests))
        totals[kind] = per_request
        print(f"{kind:<16} {per_request:7.0f} bytecodes/request")
        served = requests // conns * conns
        for name, count in counts.most_common(12):
            print(f"    {count / served:7.1f}  {name}")
    if "baseline" in totals:
        for kind, count in totals.items():
            if kind != "baseline":
                print(f"ratio {kind}/baseline: {count / totals['baseline']:.2f}")


async def _start_lbtui_inprocess(policy: str, log_dir: str, nolog: bool = False) -> tuple[None, object]:
    from engine.accesslog import AccessLog
    from engine.balancer import LoadBalancer
    from engine.proxy import HttpProxy
    from engine.server import Server

    servers = [Server("127.0.0.1", 9, name=f"b{i}") for i in range(3)]
    lb = LoadBalancer(servers, policy, hash_key="client_ip")
    nolog = nolog or bool(os.environ.get("BENCH_NOLOG"))
    log = None if nolog else AccessLog(os.path.join(log_dir, f"inproc-{policy}.log"))
    proxy = HttpProxy(lb, access_log=log)
    await proxy.start()  # listening, so new connections are not refused as "stopping"
    return None, proxy


def _run_inprocess(kinds: list[str], total: int, rounds: int, profile: str, conns: int = 1) -> None:
    _install_uvloop()
    log_dir = tempfile.mkdtemp(prefix="lbtui-bench-cpu-")
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            results[kind].append(asyncio.run(_inprocess(kind, total, log_dir, conns)))
    if profile:
        import cProfile

        cProfile.runctx(
            "asyncio.run(_inprocess('lbtui-hash', total, log_dir))",
            globals(),
            {"total": total, "log_dir": log_dir, "asyncio": asyncio, "_inprocess": _inprocess},
            profile,
        )
    print(f"in-process (no sockets): requests={total} rounds={rounds} connections in flight={conns}")
    for kind in kinds:
        rounds = ", ".join(f"{x:.2f}" for x in results[kind])
        print(
            f"{kind:<12} median {statistics.median(results[kind]):6.2f}  min {min(results[kind]):6.2f} us/req   {rounds}"
        )
    if "baseline" in results:
        base = statistics.median(results["baseline"])
        for kind in kinds:
            if kind != "baseline":
                ratio = statistics.median(results[kind]) / base
                print(
                    f"ratio {kind}/baseline: {ratio:.2f} (of minimums {min(results[kind]) / min(results['baseline']):.2f})"
                )


# -- load generator -------------------------------------------------------------------------
class _Load(asyncio.Protocol):
    """One keep-alive connection, one request in flight, responses counted as they end."""

    def __init__(self, state: list[int], done: asyncio.Future[None]) -> None:
        self.state = state  # [sent, answered, total]
        self.done = done
        self.buffer = b""
        self.size = 0  # bytes of one complete response on this connection, once known

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        state = self.state
        if state[0] < state[2]:
            state[0] += 1
            self.transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.size:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            length = 0
            for line in buffer[:end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            self.size = end + 4 + length
        count, rest = divmod(len(buffer), self.size)
        self.buffer = buffer[len(buffer) - rest :] if rest else b""
        state = self.state
        state[1] += count
        if state[1] >= state[2]:
            if not self.done.done():
                self.done.set_result(None)
            return
        for _ in range(count):
            self.send()


async def _load(port: int, total: int, connections: int) -> float:
    """Send ``total`` requests over ``connections`` connections; returns requests/s."""
    loop = asyncio.get_running_loop()
    state = [0, 0, total]
    done: asyncio.Future[None] = loop.create_future()
    clients: list[_Load] = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Load(state, done), "127.0.0.1", port)
        clients.append(client)
    started = time.perf_counter()
    for client in clients:
        client.send()
    await asyncio.wait_for(done, 300)
    elapsed = time.perf_counter() - started
    for client in clients:
        client.transport.close()
    return total / elapsed


def _ask(control: Connection, message: str) -> float:
    control.send(message)
    if not control.poll(30):
        raise RuntimeError("proxy process did not answer")
    return control.recv()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", default="baseline,lbtui-rr,lbtui-hash", help="comma-separated proxies to run"
    )
    parser.add_argument("--profile", default="", help="write a cProfile of lbtui-hash's measured rounds here")
    parser.add_argument(
        "--inprocess", action="store_true", help="drive the proxies by direct calls, no sockets"
    )
    parser.add_argument(
        "--inprocess-connections",
        type=int,
        default=1,
        help="with --inprocess: client connections with a request in flight at once (50 = the socket rounds)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="run lbtui without its access log")
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="count the Python bytecodes each proxy runs per request (in-process, exact, no timing)",
    )
    args = parser.parse_args()
    if args.no_access_log:
        os.environ["BENCH_NOLOG"] = "1"  # read by the proxy processes, which inherit it
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.bytecodes:
        # Counted on the modules' source: compiled code runs no bytecodes (engine/_native.py).
        os.environ["LBTUI_PURE_PYTHON"] = "1"
        _run_bytecodes(kinds, max(args.inprocess_connections, 1), min(args.requests, 2000))
        return
    if args.inprocess:
        _run_inprocess(kinds, args.requests, args.rounds, args.profile, args.inprocess_connections)
        return
    loop_name = _install_uvloop()
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    backend = ctx.Process(target=_run_backend, args=(ports,), daemon=True)
    backend.start()
    backend_port = ports.get(timeout=20)
    log_dir = tempfile.mkdtemp(prefix="lbtui-bench-cpu-")
    procs: dict[str, tuple[multiprocessing.process.BaseProcess, Connection, int]] = {}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    rps: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for kind in kinds:
            mine, theirs = ctx.Pipe()
            profile = args.profile if kind == "lbtui-hash" else ""
            proc = ctx.Process(
                target=_run_proxy, args=(kind, backend_port, theirs, log_dir, profile), daemon=True
            )
            proc.start()
            if not mine.poll(30):
                raise RuntimeError(f"{kind} did not start")
            procs[kind] = (proc, mine, mine.recv())
        for kind in kinds:  # warm-up: connections, pools, caches
            asyncio.run(_load(procs[kind][2], 3000, args.connections))
        for _ in range(args.rounds):
            for kind in kinds:
                _, control, port = procs[kind]
                before = _ask(control, "start")
                rps[kind].append(asyncio.run(_load(port, args.requests, args.connections)))
                after = _ask(control, "end")
                cpu[kind].append((after - before) / args.requests * 1e6)
    finally:
        for proc, control, _ in procs.values():
            try:
                control.send("stop")
                if control.poll(10):
                    control.recv()
            except (OSError, EOFError):
                pass
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
        backend.terminate()
        backend.join(5)
    print(
        f"loop={loop_name} requests={args.requests} connections={args.connections} rounds={args.rounds} "
        f"load(1m)={os.getloadavg()[0]:.2f}"
    )
    print(f"{'proxy':<12} {'CPU us/req':>10} {'req/s':>9}   CPU us/req per round")
    for kind in kinds:
        rounds = ", ".join(f"{x:.1f}" for x in cpu[kind])
        print(
            f"{kind:<12} {statistics.median(cpu[kind]):10.1f} {statistics.median(rps[kind]):9,.0f}   {rounds}"
        )
    if "baseline" in cpu:
        base = statistics.median(cpu["baseline"])
        for kind in kinds:
            if kind != "baseline":
                # Ratio per round (interleaved, so each pair saw similar noise), then the median.
                ratios = [c / b for c, b in zip(cpu[kind], cpu["baseline"], strict=True)]
                print(
                    f"ratio {kind}/baseline CPU: {statistics.median(ratios):.2f} "
                    f"(of medians {statistics.median(cpu[kind]) / base:.2f})"
                )


if __name__ == "__main__":
    main()
