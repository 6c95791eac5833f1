"""Soak: mixed traffic through a real ``lbtui run --headless`` with a fault every few minutes.

    /tmp/venv/bin/python tests/soak/run_soak.py                    # 30 minutes, a fault every 2 min
    /tmp/venv/bin/python tests/soak/run_soak.py --duration 150 --fault-every 20   # short version

Three ``lbtui backend`` processes sit behind one ``lbtui run`` process. Clients send
keep-alive GETs, POSTs with bodies up to 256 KiB, chunked downloads, new-connection
requests, admin reads, and a trickle of hostile input (malformed requests, slowloris).
Faults rotate: kill -9 a backend (restarted 10 s later), stall one (SIGSTOP 5 s),
reload the config (SIGHUP), drain and ready a server through the admin API, make a
backend fail half its requests for 10 s. The lbtui process's RSS and open descriptors
are sampled every few seconds; the report gives start (after warm-up) and end (after
traffic stopped and idle connections were reclaimed) and exits non-zero when memory or
descriptors grew beyond a small allowance. Client errors are counted and reported, not
judged: the stall (504, never retried) and the error-rate fault (500s) cause some by
design; the fast suite asserts the zero-error cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from fault_support import REPO, BackendProcess, fd_count, gateway_toml, rss_kb  # noqa: E402

RSS_ALLOWANCE_KB = 30 * 1024  # growth tolerated between start and end (allocator noise, caches)
FD_ALLOWANCE = 10


@dataclass
class Figures:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    idempotent_failures: int = 0
    hostile: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss_kb, fds)


class Soak:
    def __init__(self, duration: float, fault_every: float, rps: float, clients: int) -> None:
        self.duration = duration
        self.fault_every = fault_every
        self.rps = rps
        self.clients = clients
        self.figures = Figures()
        self.backends: list[BackendProcess] = []
        self.lbtui: asyncio.subprocess.Process | None = None
        self.url = ""
        self.admin = ""
        self.stop = asyncio.Event()
        self.tmp = Path(tempfile.mkdtemp(prefix="lbtui-soak-"))

    # -- setup --------------------------------------------------------------------------
    async def start(self) -> None:
        self.backends = list(await asyncio.gather(*(BackendProcess(f"b{i}").start() for i in range(3))))
        config = self.tmp / "lbtui.toml"
        config.write_text(
            gateway_toml(
                [(b.name, b.port) for b in self.backends],
                "[proxy]\nupstream_timeout = 2\nheader_timeout = 2\nidle_timeout = 5\n",
                "[outlier]\nconsecutive_errors = 3\nbase_ejection = 5\nmax_ejection = 20\n",
                f'[access_log]\npath = "{self.tmp / "access.log"}"\nmax_bytes = 1048576\nbackups = 2\n',
            )
        )
        self.lbtui = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lbtui", "run", "-c", str(config), "--headless",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.lbtui.stdout is not None
        async with asyncio.timeout(30):
            while not (self.url and self.admin):
                line = (await self.lbtui.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("lbtui run exited during start")
                if "listening on" in line:
                    self.url = line.split()[3]
                elif "admin API on" in line:
                    self.admin = line.split()[4]
        asyncio.get_running_loop().create_task(self._drain_stdout())

    async def _drain_stdout(self) -> None:
        assert self.lbtui is not None and self.lbtui.stdout is not None
        while await self.lbtui.stdout.readline():
            pass

    @property
    def pid(self) -> int:
        assert self.lbtui is not None
        return self.lbtui.pid

    def sample(self) -> tuple[int, int]:
        figures = (rss_kb(self.pid), fd_count(self.pid))
        self.figures.samples.append((time.monotonic(), *figures))
        return figures

    # -- traffic ------------------------------------------------------------------------
    async def client(self, session: aiohttp.ClientSession, index: int) -> None:
        rng = random.Random(index)
        gap = self.clients / self.rps
        while not self.stop.is_set():
            started = time.monotonic()
            kind = rng.choices(["get", "post", "stream", "close", "admin"], [60, 20, 8, 10, 2])[0]
            idempotent = kind in ("get", "stream", "close")
            try:
                if kind == "get":
                    status = await self._get(session, f"{self.url}/?k={rng.randrange(10_000)}")
                elif kind == "post":
                    body = os.urandom(rng.choice([100, 4096, 65536, 262144]))
                    async with session.post(f"{self.url}/echo", data=body) as response:
                        data = await response.read()
                        status = response.status
                        if status == 200 and json.loads(data)["body_length"] != len(body):
                            self.figures.errors["body mismatch"] += 1
                elif kind == "stream":
                    status = await self._get(session, f"{self.url}/stream?size={rng.randrange(1, 1 << 20)}")
                elif kind == "close":
                    async with session.get(f"{self.url}/", headers={"Connection": "close"}) as response:
                        await response.read()
                        status = response.status
                else:
                    status = await self._get(session, f"{self.admin}/api/stats")
                self.figures.statuses[status] += 1
                if idempotent and status >= 500:
                    self.figures.idempotent_failures += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.figures.errors[type(exc).__name__] += 1
                if idempotent:
                    self.figures.idempotent_failures += 1
            self.figures.requests[kind] += 1
            rest = gap - (time.monotonic() - started)
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), rest)

    async def _get(self, session: aiohttp.ClientSession, url: str) -> int:
        async with session.get(url) as response:
            await response.read()
            return response.status

    async def hostile(self) -> None:
        """A malformed request and a slowloris client every couple of seconds."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        shapes = [
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n",  # slowloris: never finishes
        ]
        while not self.stop.is_set():
            data = random.choice(shapes)
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(data)
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                self.figures.hostile[answer[9:12].decode() or "closed"] += 1
            except (OSError, TimeoutError):
                self.figures.hostile["error"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2)

    # -- faults -------------------------------------------------------------------------
    async def faults(self) -> None:
        cycle = ["kill", "stall", "reload", "drain", "errors"]
        n = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.fault_every)
            if self.stop.is_set():
                return
            kind = cycle[n % len(cycle)]
            victim = self.backends[n % len(self.backends)]
            n += 1
            self.figures.faults.append(f"{time.strftime('%H:%M:%S')} {kind} {victim.name}")
            print(f"soak: fault {kind} {victim.name}", flush=True)
            if kind == "kill":
                await victim.kill()
                await asyncio.sleep(10)
                await victim.start()
            elif kind == "stall":
                victim.stall()
                await asyncio.sleep(5)
                victim.resume()
            elif kind == "reload":
                os.kill(self.pid, signal.SIGHUP)
            elif kind == "drain":
                async with aiohttp.ClientSession() as s:
                    async with s.post(f"{self.admin}/api/servers/{victim.name}/drain") as r:
                        await r.read()
                    await asyncio.sleep(5)
                    async with s.post(f"{self.admin}/api/servers/{victim.name}/ready") as r:
                        await r.read()
            else:
                await victim.set_faults(error_rate=0.5)
                await asyncio.sleep(10)
                await victim.set_faults(error_rate=0.0)

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> dict[str, object]:
        await self.start()
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.clients)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = [asyncio.create_task(self.client(session, i)) for i in range(self.clients)]
            tasks += [asyncio.create_task(self.hostile()), asyncio.create_task(self.faults())]
            warmup = min(15.0, self.duration / 10)
            await asyncio.sleep(warmup)
            rss_start, fds_start = self.sample()
            while time.monotonic() - started < self.duration:
                await asyncio.sleep(min(10.0, max(0.1, self.duration - (time.monotonic() - started))))
                rss, fds = self.sample()
                total = sum(self.figures.requests.values())
                print(f"soak: {time.monotonic() - started:6.0f}s requests={total} rss={rss} KiB fds={fds}", flush=True)
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Idle connections time out (idle_timeout 5 s): wait for the descriptors to settle.
        for backend in self.backends:
            backend.resume()
        deadline = time.monotonic() + 15
        rss_end, fds_end = self.sample()
        while fds_end > fds_start and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rss_end, fds_end = self.sample()
        report = {
            "duration_s": round(time.monotonic() - started, 1),
            "requests": sum(self.figures.requests.values()),
            "by_kind": dict(self.figures.requests),
            "statuses": dict(sorted(self.figures.statuses.items())),
            "client_errors": dict(self.figures.errors),
            "idempotent_failures": self.figures.idempotent_failures,
            "hostile_answers": dict(self.figures.hostile),
            "faults": self.figures.faults,
            "rss_start_kb": rss_start,
            "rss_end_kb": rss_end,
            "rss_max_kb": max(s[1] for s in self.figures.samples),
            "fds_start": fds_start,
            "fds_end": fds_end,
            "fds_max": max(s[2] for s in self.figures.samples),
        }
        report["flat"] = rss_end - rss_start <= RSS_ALLOWANCE_KB and fds_end <= fds_start + FD_ALLOWANCE
        return report

    async def close(self) -> None:
        if self.lbtui is not None and self.lbtui.returncode is None:
            self.lbtui.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.lbtui.wait()
            except TimeoutError:
                self.lbtui.kill()
        await asyncio.gather(*(b.stop() for b in self.backends), return_exceptions=True)


async def soak(duration: float, fault_every: float, rps: float, clients: int) -> dict[str, object]:
    runner = Soak(duration, fault_every, rps, clients)
    try:
        return await runner.run()
    finally:
        await runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds of traffic (default 1800)")
    parser.add_argument("--fault-every", type=float, default=120, help="seconds between faults (default 120)")
    parser.add_argument("--rps", type=float, default=200, help="client requests per second, total (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients (default 8)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args.duration, args.fault_every, args.rps, args.clients))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["flat"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
