"""Shared helpers for the fault, hostile-input, security and soak suites.

Backends run as real processes (``python -m lbtui backend``) so a fault is a real
``kill -9`` or ``SIGSTOP``, not a simulated close. Load is a bounded set of keep-alive
clients that record every outcome with a timestamp, so a test can say exactly when the
errors stopped. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httptools

from engine.config import Config
from engine.gateway import Gateway

REPO = Path(__file__).resolve().parents[1]
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)


# -- waiting -------------------------------------------------------------------------------
async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll ``condition`` until true; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


# -- process figures -----------------------------------------------------------------------
def rss_kb(pid: int | None = None) -> int:
    """Resident set size of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or os.getpid()}/fd"))


def socket_count(pid: int) -> int:
    """Open sockets of a process: connections a stalled backend is holding."""
    count = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        with contextlib.suppress(OSError):
            if os.readlink(f"{base}/{name}").startswith("socket:"):
                count += 1
    return count


# -- backends as processes -------------------------------------------------------------------
class BackendProcess:
    """``lbtui backend`` in its own process: killable with SIGKILL, stallable with SIGSTOP."""

    def __init__(self, name: str, extra: Iterable[str] = ()) -> None:
        self.name = name
        self.port = 0
        self.extra = list(extra)
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0) -> BackendProcess:
        """Start on ``self.port`` (0 the first time: a free port) and wait until it listens."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lbtui",
            "backend",
            "--name",
            self.name,
            "--port",
            str(self.port),
            *self.extra,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = (await self.proc.stdout.readline()).decode()
        if "listening on" not in line:
            raise RuntimeError(f"backend {self.name} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    async def kill(self) -> None:
        """``kill -9``: no goodbye, every connection reset by the kernel."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def stall(self) -> None:
        """SIGSTOP: the kernel still completes handshakes, nobody answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()

    async def set_faults(self, **faults: object) -> None:
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            async with session.put(f"{self.url}/_admin/faults", json=faults) as response:
                assert response.status == 200, await response.text()


async def start_backend_processes(count: int, prefix: str = "b") -> list[BackendProcess]:
    return list(await asyncio.gather(*(BackendProcess(f"{prefix}{i}").start() for i in range(count))))


async def stop_all(backends: Iterable[BackendProcess]) -> None:
    await asyncio.gather(*(b.stop() for b in backends), return_exceptions=True)


# -- a gateway from TOML ---------------------------------------------------------------------
def gateway_toml(servers: Iterable[tuple[str, int]], *sections: str, health: str | None = None) -> str:
    """A config with one HTTP listener and the admin API on free ports."""
    parts = [
        '[[listeners]]\nname = "web"\nport = 0\n',
        "[admin]\nport = 0\n",
        health
        if health is not None
        else '[health]\ninterval = 0.1\ntimeout = 0.3\nrise = 2\nfall = 2\nhttp_path = "/health"\n',
        *sections,
    ]
    for name, port in servers:
        parts.append(f'[[servers]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n')
    return "\n".join(parts)


async def start_gateway(path: Path, text: str, stop_grace: float = 5.0) -> Gateway:
    path.write_text(text)
    gateway = Gateway(Config.load(path), stop_grace=stop_grace)
    await gateway.start()
    return gateway


def listener_url(gateway: Gateway, path: str = "/") -> str:
    return f"http://127.0.0.1:{gateway.listeners[0].port}{path}"


# -- steady load -----------------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    at: float  # monotonic time the answer (or error) arrived
    status: int  # 0: the client saw an exception (reset, timeout)
    server: str
    seconds: float
    error: str = ""


@dataclass
class Load:
    """``clients`` keep-alive clients sending ``method path`` back to back, at most ``rate``/s each.

    Every outcome is kept with its time, so the figures (errors, when they stopped,
    latency of error answers) come from what a client really saw.
    """

    url: str
    clients: int = 6
    rate: float = 100.0  # per client, requests per second (bounded: the CPU is shared)
    method: str = "GET"
    body: bytes | None = None
    request_timeout: float = 10.0
    outcomes: list[Outcome] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> Load:
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.request_timeout)
        )
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]
        return self

    async def _client(self) -> None:
        assert self._session is not None
        gap = 1.0 / self.rate
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                async with self._session.request(self.method, self.url, data=self.body) as response:
                    await response.read()
                    self.outcomes.append(
                        Outcome(
                            time.monotonic(),
                            response.status,
                            response.headers.get("X-Served-By", ""),
                            time.monotonic() - started,
                        )
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.outcomes.append(
                    Outcome(time.monotonic(), 0, "", time.monotonic() - started, type(exc).__name__)
                )
            rest = gap - (time.monotonic() - started)
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), rest)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def count(self) -> int:
        return len(self.outcomes)

    async def wait_for_more(self, n: int, timeout: float = 10.0) -> None:
        target = self.count() + n
        await wait_until(lambda: self.count() >= target, timeout, f"{n} more requests")

    def failures(self, since: float = 0.0) -> list[Outcome]:
        return [o for o in self.outcomes if o.at >= since and not 200 <= o.status < 400]

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(o.status for o in self.outcomes if since <= o.at < until)

    def served_by(self, since: float = 0.0) -> Counter[str]:
        return Counter(o.server for o in self.outcomes if o.at >= since and o.status == 200)


# -- a recording backend that tests every byte it is sent --------------------------------------
@dataclass(slots=True)
class Forwarded:
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Recorder:
    """An in-process HTTP/1.1 backend with a strict llhttp parser.

    It records every complete request and counts anything it could not parse, so a
    test can prove the proxy forwarded only well-formed requests, and how many.
    """

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.port = 0
        self.seen: list[Forwarded] = []
        self.parse_errors = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> Recorder:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _RecorderProtocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class _RecorderProtocol(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.recorder.parse_errors += 1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        keep = self.parser.should_keep_alive()
        self.recorder.seen.append(Forwarded(method, self.url.decode("latin-1"), self.headers, b"".join(self.body)))
        assert self.transport is not None
        name = self.recorder.name.encode()
        payload = b"ok " + self.url
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nX-Served-By: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (name, len(payload), b"" if keep else b"Connection: close\r\n", payload)
        )
        if not keep:
            self.transport.close()


# -- raw client ------------------------------------------------------------------------------
@dataclass(slots=True)
class RawReply:
    """What a raw client saw: parsed responses, whether the proxy closed, how long it took."""

    responses: list[tuple[int, dict[bytes, bytes], bytes]]
    closed: bool
    seconds: float
    garbage: bool = False  # bytes that were not a valid HTTP response


class _ResponseCollector:
    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.headers, self.body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.responses.append((self.parser.get_status_code(), self.headers, b"".join(self.body)))


def _says_close(collector: _ResponseCollector) -> bool:
    """The last response announced a close: keep reading to see the proxy keep its word."""
    return bool(collector.responses) and collector.responses[-1][1].get(b"connection", b"").lower() == b"close"


async def raw_request(
    port: int, data: bytes, *, expect: int = 1, timeout: float = 5.0, half_close: bool = True
) -> RawReply:
    """Send ``data``, read until ``expect`` responses arrived or the proxy closed."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    collector = _ResponseCollector()
    closed = garbage = False
    try:
        writer.write(data)
        if half_close and writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while len(collector.responses) < expect or _says_close(collector):
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                try:
                    collector.parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    garbage = True
                    break
                except httptools.HttpParserError:
                    garbage = True
                    break
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return RawReply(collector.responses, closed, time.monotonic() - started, garbage)


# -- figures for docs/resilience.md ------------------------------------------------------------
FIGURES_ENV = "LBTUI_FIGURES"


def record_figures(case: str, **figures: object) -> None:
    """Print a case's measured figures; with $LBTUI_FIGURES set, append them there as JSON lines.

    docs/resilience.md quotes the last run made with
    ``LBTUI_FIGURES=/tmp/figures.jsonl pytest tests/test_fault_*.py ...``.
    """
    import json

    line = json.dumps({"case": case, **figures}, default=str)
    print(f"FIGURES {line}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def tcp_connections_to(port: int) -> int:
    """Client-side TCP sockets on this machine open (ESTABLISHED or SYN_SENT) to ``port``.

    Read from /proc/net/tcp, so it counts what the kernel holds, whatever the proxy's
    own bookkeeping says: the honest measure of a pile-up towards a stalled backend.
    Sockets already closed by their owner (FIN_WAIT towards a frozen peer) are not
    counted: they hold no descriptor and the kernel reaps them.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                if int(remote.rsplit(":", 1)[1], 16) == port and int(local.rsplit(":", 1)[1], 16) != port:
                    if state in ("01", "02"):  # ESTABLISHED, SYN_SENT
                        count += 1
    return count


# -- judging one hostile exchange ----------------------------------------------------------------
def framing_problems(request: Forwarded) -> list[str]:
    """Framing a backend could read two ways: both CL and TE, or several CLs."""
    names = [name.lower() for name, _ in request.headers]
    problems = []
    if b"content-length" in names and b"transfer-encoding" in names:
        problems.append("both Content-Length and Transfer-Encoding")
    if names.count(b"content-length") > 1:
        problems.append("several Content-Length")
    if names.count(b"transfer-encoding") > 1:
        problems.append("several Transfer-Encoding")
    if names.count(b"host") > 1:
        problems.append("several Host")
    return problems


def judge(replies: list[RawReply], forwarded: list[Forwarded], parse_errors: int) -> list[str]:
    """Every rule a hostile input must keep; returns the broken ones (empty: all kept).

    - the proxy answered with well-formed HTTP, never 5xx (its backend never fails);
    - it closed or answered within the deadline (no hang);
    - the backend saw exactly the requests clients got a 2xx for, no more: a request
      the proxy did not answer for is a smuggled one (proxy and backend disagreed on
      framing). A second request the proxy itself parsed and answered is pipelining,
      not smuggling. The backend must parse each forwarded request strictly.
    """
    problems: list[str] = []
    answered: list[str] = []
    for reply in replies:
        if reply.garbage:
            problems.append("proxy sent something that is not HTTP")
        if not reply.responses and not reply.closed:
            problems.append(f"no answer and no close after {reply.seconds:.1f}s (hang)")
        for status, headers, body in reply.responses:
            if status >= 500:
                problems.append(f"proxy answered {status}")
            elif 200 <= status < 300:
                answered.append(body.decode("latin-1").removeprefix("ok "))
            elif not 400 <= status < 500:
                problems.append(f"unexpected status {status}")
    seen = sorted(f.url for f in forwarded)
    if seen != sorted(answered):
        problems.append(f"backend saw {seen} but clients were answered for {sorted(answered)}")
    if parse_errors:
        problems.append(f"backend could not parse {parse_errors} forwarded request(s)")
    for request in forwarded:
        for problem in framing_problems(request):
            problems.append(f"forwarded {request.url}: {problem}")
    return problems
