"""``lbtui run`` and ``lbtui demo --headless`` as real processes: serve, then stop on a signal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import engine
from cloud.backend import BackendHandle, start_backend

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = aiohttp.ClientTimeout(total=10)
LISTEN = re.compile(r"listening on (\S+) ")
ADMIN = re.compile(r"admin API on (\S+) ")


class Lbtui:
    """One ``python -m lbtui`` child with its output read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str, token: str | None = None) -> Lbtui:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("LBTUI_ADMIN_TOKEN", None)
        if token is not None:
            env["LBTUI_ADMIN_TOKEN"] = token
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lbtui",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        return cls(proc)

    async def wait_line(self, pattern: re.Pattern[str], deadline: float = 20.0) -> re.Match[str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(deadline):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"lbtui exited: {self.lines} {err.decode()}")
                line = raw.decode().rstrip()
                self.lines.append(line)
                match = pattern.search(line)
                if match:
                    return match

    async def stop(self, signum: int = signal.SIGTERM, deadline: float = 15.0) -> tuple[int, str, str]:
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        async with asyncio.timeout(deadline):
            out, err = await self.proc.communicate()
        return self.proc.returncode or 0, "\n".join(self.lines) + out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def backend() -> AsyncIterator[BackendHandle]:
    handle = await start_backend("cli-backend")
    yield handle
    await handle.stop()


def write_config(tmp_path: Path, backend: BackendHandle, extra: str = "") -> Path:
    path = tmp_path / "lbtui.toml"
    path.write_text(
        "[[listeners]]\nport = 0\n[admin]\nport = 0\n[health]\ninterval = 0.5\n"
        f'[[servers]]\nname = "{backend.name}"\nhost = "127.0.0.1"\nport = {backend.port}\n{extra}'
    )
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_serves_then_stops_cleanly_on_a_signal(
    tmp_path: Path, backend: BackendHandle, signum: int
) -> None:
    lbtui = await Lbtui.start("run", "--config", str(write_config(tmp_path, backend)), "--headless")
    try:
        proxy = (await lbtui.wait_line(LISTEN)).group(1)
        admin = (await lbtui.wait_line(ADMIN)).group(1)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"{proxy}/echo") as response:
                assert response.status == 200 and response.headers["X-Served-By"] == "cli-backend"
            async with session.get(f"{admin}/api/servers") as response:
                assert (await response.json())["servers"][0]["requests"] == 1
        code, out, err = await lbtui.stop(signum)
    finally:
        lbtui.kill()
    assert code == 0, err
    assert "lbtui: stopped" in out
    assert "Traceback" not in err
    # The operator is told whether the data plane runs compiled (engine/_native.py).
    assert ("lbtui: data plane compiled (mypyc)" in out) == engine.COMPILED
    assert ("lbtui: data plane running from source" in out) != engine.COMPILED


async def test_flags_override_the_file_and_sighup_reloads(tmp_path: Path, backend: BackendHandle) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_config(tmp_path, backend)
    lbtui = await Lbtui.start("run", "-c", str(path), "--port", str(port), "--headless")
    try:
        proxy = (await lbtui.wait_line(LISTEN)).group(1)
        admin = (await lbtui.wait_line(ADMIN)).group(1)
        assert proxy == f"http://127.0.0.1:{port}"
        path.write_text(
            path.read_text().replace("[[servers]]", '[balancer]\nalgorithm = "random"\n[[servers]]')
        )
        lbtui.proc.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with asyncio.timeout(10):
                while True:
                    async with session.get(f"{admin}/api/status") as response:
                        status = await response.json()
                    if status["reloads"] == 1:
                        break
                    await asyncio.sleep(0.05)
        assert status["algorithm"] == "random"
        assert status["event_loop"] == "uvloop"
        assert status["listeners"][0]["port"] == port
        code, _, err = await lbtui.stop()
    finally:
        lbtui.kill()
    assert code == 0, err


async def test_shutdown_through_the_admin_api(tmp_path: Path, backend: BackendHandle) -> None:
    lbtui = await Lbtui.start("run", "--config", str(write_config(tmp_path, backend)), "--headless")
    try:
        admin = (await lbtui.wait_line(ADMIN)).group(1)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(f"{admin}/api/shutdown") as response:
                assert response.status == 202
        async with asyncio.timeout(15):
            code = await lbtui.proc.wait()
    finally:
        lbtui.kill()
    assert code == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "70000"], "--port: port must be from 0 to 65535, not 70000"),
        (
            ["--mongodb-uri", "redis://u:hunter2@h"],
            "--mongodb-uri: must start with mongodb:// or mongodb+srv://",
        ),
    ],
)
async def test_bad_flags_are_one_line_errors(args: list[str], expected: str) -> None:
    lbtui = await Lbtui.start("run", "--headless", *args)
    async with asyncio.timeout(20):
        out, err = await lbtui.proc.communicate()
    assert lbtui.proc.returncode == 2
    assert err.decode().strip() == f"lbtui: command line: {expected}"
    assert "hunter2" not in err.decode() + out.decode()


async def test_config_errors_are_one_line_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[servers]]\nhost = "127.0.0.1"\nport = 8080\nweight = "heavy"\n')
    lbtui = await Lbtui.start("run", "--config", str(path), "--headless")
    async with asyncio.timeout(20):
        _, err = await lbtui.proc.communicate()
    assert lbtui.proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines == [f"lbtui: {path}: servers[0].weight: must be a whole number, not a string ('heavy')"]


async def test_a_busy_port_is_a_one_line_error(tmp_path: Path, backend: BackendHandle) -> None:
    lbtui = await Lbtui.start("run", "--headless", "--admin-port", "0", "--port", str(backend.port))
    async with asyncio.timeout(20):
        _, err = await lbtui.proc.communicate()
    assert lbtui.proc.returncode == 2
    text = err.decode().strip()
    assert text.startswith("lbtui: cannot listen:") and "\n" not in text and "Traceback" not in text


async def test_demo_headless_serves_sample_backends() -> None:
    lbtui = await Lbtui.start(
        "demo", "--headless", "--backends", "2", "--port", "0", "--admin-port", "0", "--traffic", "20"
    )
    try:
        proxy = (await lbtui.wait_line(LISTEN)).group(1)
        admin = (await lbtui.wait_line(ADMIN)).group(1)
        seen = set()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            for user in range(40):
                async with session.get(f"{proxy}/echo", headers={"X-User": f"u{user}"}) as response:
                    assert response.status == 200
                    seen.add(response.headers["X-Served-By"])
            async with asyncio.timeout(10):  # the demo's own traffic shows up in the stats
                while True:
                    async with session.get(f"{admin}/api/stats") as response:
                        stats = await response.json()
                    if stats["requests"] > 60:
                        break
                    await asyncio.sleep(0.1)
        assert seen == {"backend-1", "backend-2"}
        assert stats["algorithm"] == "consistent_hash" and stats["hash_key"] == "header:x-user"
        code, _, err = await lbtui.stop()
    finally:
        lbtui.kill()
    assert code == 0, err
    assert "Traceback" not in err


async def test_demo_with_tls() -> None:
    import ssl

    lbtui = await Lbtui.start(
        "demo", "--headless", "--backends", "1", "--port", "0", "--admin-port", "0", "--tls"
    )
    try:
        proxy = (await lbtui.wait_line(LISTEN)).group(1)
        assert proxy.startswith("https://")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"{proxy}/echo", ssl=context) as response:
                assert response.status == 200
        code, _, err = await lbtui.stop()
    finally:
        lbtui.kill()
    assert code == 0, err


async def test_admin_token_from_the_environment_guards_the_api(
    tmp_path: Path, backend: BackendHandle
) -> None:
    token = "env-token-0123456789abcdef"
    lbtui = await Lbtui.start(
        "run", "--config", str(write_config(tmp_path, backend)), "--headless", token=token
    )
    try:
        admin = (await lbtui.wait_line(ADMIN)).group(1)
        assert "token required" in lbtui.lines[-1]
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"{admin}/api/servers") as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{admin}/api/servers", headers=headers) as response:
                assert response.status == 200
        code, out, err = await lbtui.stop()
    finally:
        lbtui.kill()
    assert code == 0, err
    assert token not in out + err
