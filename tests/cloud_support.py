"""Fixtures with real parts for the store, worker and AWS tests.

- ``NxServer``: the nx-27017 MongoDB wire-protocol server as a child process on a free
  loopback port, with a readiness wait, kill (to simulate an outage) and restart on the
  same port and data file.
- ``moto_endpoint``: moto's server mode in-process (``ThreadedMotoServer``) on a free
  loopback port, reset between tests, with dummy credentials in the environment.

Import the fixtures into a test module with ``from tests.cloud_support import ...``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

NX_BIN = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail at the deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {deadline}s")


class NxServer:
    """One nx-27017 process; ``kill`` and ``start`` again reuse the port and data file."""

    def __init__(self, workdir: Path, port: int | None = None, db: str | None = None) -> None:
        if NX_BIN is None:
            pytest.skip("nx-27017 is not installed (pip install nx-27017)")
        self.workdir = workdir
        self.port = port or free_port()
        self.db = db or str(workdir / "nx.db")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> NxServer:
        assert NX_BIN is not None
        self.proc = subprocess.Popen(
            [NX_BIN, "--db", self.db, "--host", "127.0.0.1", "-p", str(self.port),
             "--pid-file", str(self.workdir / f"nx-{self.port}.pid"),
             "--log-file", str(self.workdir / f"nx-{self.port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10.0, self.proc)
        return self

    def kill(self) -> None:
        """Terminate the process (as an outage would) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def nx_server(tmp_path: Path) -> Iterator[NxServer]:
    server = NxServer(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


# -- moto --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_port(port, 10.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean moto endpoint and dummy credentials, so no real AWS is ever reached."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
    return moto_server


# -- helpers for async tests ----------------------------------------------------------------
async def wait_for(condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str = "condition") -> None:
    """Poll ``condition`` every 20 ms until true; fail with ``what`` at the deadline."""
    end = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Backend:
    """A tiny real HTTP backend on loopback, for discovery and health tests."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Backend:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    started = [await Backend().start() for _ in range(3)]
    try:
        yield started
    finally:
        for backend in started:
            await backend.stop()


__all__ = ["Backend", "NxServer", "backends", "free_port", "moto_endpoint", "moto_server", "nx_server", "wait_for", "wait_port"]
