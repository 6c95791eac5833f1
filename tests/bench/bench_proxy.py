"""Proxy benchmark: lbtui against HAProxy and nginx, with wrk, in one command.

    python tests/bench/bench_proxy.py [--quick] [--rounds 9] [--duration 4] [--markdown FILE]
                                      [--profile FILE] [--no-tcp] [--no-memory] [--no-reference]

Why this shape: on a small shared machine the absolute figures drift by tens of percent
from minute to minute, so every path runs in the same rounds (round 1: all paths, round
2: all paths, ...) and the verdicts are ratios to HAProxy measured in the same run, from
the medians of the rounds. Everything listens on 127.0.0.1 only; every child process
runs in its own process group and is killed on exit, Ctrl-C included.

Why 9 rounds by default (the issue measured 5; ``--rounds 5`` still does): this VM has
stalls that give a whole round a p99 of 10-140 ms on any path, the direct one to nginx
included, about one round in four. A median of 5 is then set by stalls in about one run
in ten; 9 rounds halve that. Each table counts the rounds that stalled
(``STALL_FACTOR``), so a verdict moved by them says so.

Paths (three nginx backends answering a 14-byte body, round robin over them):
  direct       wrk -> one nginx backend (the ceiling)
  haproxy      HAProxy, nbthread 1, http-reuse always, active checks every 1 s
  nginx        nginx proxy, 1 worker, upstream keepalive 64
  minimal      a bare Protocols + httptools + uvloop proxy (minimal_proxy.py): what
               Python can do here, the reference for lbtui's own overhead
  lbtui        lbtui's Gateway on uvloop: round robin, stats with percentiles,
               JSON access log to a file, active HTTP checks every 1 s, admin API
  haproxy-tcp  HAProxy mode tcp (wrk's HTTP carried over the L4 proxy)
  lbtui-tcp    lbtui TcpProxy, same features
Then memory: lbtui's RSS with 100 configured servers, idle, and with 10,000 idle client
connections open.

Needs only the standard library; wrk, haproxy and nginx come from apt when missing
(root; policy-rc.d keeps their system services from starting), lbtui runs under the
interpreter given by --python (default: this one, which must have lbtui installed).
Each proxy's CPU time per request is reported too: on a shared machine it moves far
less than requests/s, so it is the figure to trust when the load average is high.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BODY = "hello, world!\n"  # 14 bytes, as in the measurements
APT_PACKAGES = ("wrk", "haproxy", "nginx")
BAR_RPS, BAR_P99, GOAL_RPS = 0.7, 1.5, 1.0
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A setup step failed; shown as one line, never a traceback."""


# -- tools -----------------------------------------------------------------------------
def tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def ensure_tools(skip_install: bool) -> dict[str, str]:
    """Install wrk, haproxy and nginx from apt when missing, without starting their services."""
    missing = [name for name in APT_PACKAGES if tool(name) is None]
    if missing and not skip_install:
        if os.geteuid() != 0:
            raise BenchError(
                f"missing {', '.join(missing)}; run as root or: sudo apt-get install -y {' '.join(missing)}"
            )
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        # policy-rc.d 101 keeps Debian from starting nginx on :80 and haproxy system-wide.
        policy = Path("/usr/sbin/policy-rc.d")
        created = False
        if not policy.exists():
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            created = True
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
                if done.returncode != 0:
                    raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()[-400:]}")
        finally:
            if created:
                policy.unlink(missing_ok=True)
    paths = {name: tool(name) for name in APT_PACKAGES}
    absent = [name for name, path in paths.items() if path is None]
    if absent:
        raise BenchError(f"not available: {', '.join(absent)}")
    return {name: str(path) for name, path in paths.items()}


def ensure_python(python: str) -> None:
    """lbtui needs its own dependencies (uvloop and httptools among them) in ``python``.

    They come with lbtui's installation (pyproject.toml), so a missing one means lbtui is
    not installed in that interpreter: say how to fix it rather than pip-install into it.
    """
    probe = "import uvloop, httptools, aiohttp, engine.gateway"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(
            f"{python} cannot run lbtui ({last}); install lbtui first (pip install -e '.[test]') "
            "or pass --python with the interpreter of its virtualenv"
        )


def version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


# -- processes -------------------------------------------------------------------------
@dataclass(slots=True)
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the child leads its own group


@dataclass(slots=True)
class Children:
    """Every process the benchmark starts; ``stop_all`` kills whole process groups."""

    workdir: Path
    items: list[Child] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], *, stdout_pipe: bool = False, env: dict[str, str] | None = None
    ) -> Child:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else err,
                stderr=err,
                start_new_session=True,
                env=env,
            )
        child = Child(name, proc, log)
        self.items.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pgid, signal.SIGTERM)
        try:
            child.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        # nginx workers outlive a killed master: always sweep the whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(2.0)
        if child.proc.stdout is not None:
            child.proc.stdout.close()
        if child in self.items:
            self.items.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.items)):
            self.stop(child)


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
        return response.status, response.read()


def wait_http(child: Child, port: int, deadline_s: float = 15.0) -> None:
    """Until a GET through ``port`` answers the backend body, or fail with the child's log."""
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}:\n{tail(child.log)}")
        try:
            status, body = http_get(port, timeout=1.0)
            if status == 200 and body == BODY.encode():
                return
            last = f"status {status}, body {body[:40]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise BenchError(f"{child.name} not answering on {port} ({last}):\n{tail(child.log)}")


def read_ready(child: Child, deadline_s: float = 20.0) -> dict[str, object]:
    """The launcher's ``READY {json}`` line, within a deadline."""
    assert child.proc.stdout is not None
    fd = child.proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.split(b"\n"):
                if line.startswith(b"READY "):
                    return json.loads(line[6:])
        elif child.proc.poll() is not None:
            break
    raise BenchError(f"{child.name} did not start:\n{tail(child.log)}")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat_fields(int(entry))
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; [0] is state


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a group (the nginx master and worker)."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            f = _stat_fields(pid)
            total += int(f[11]) + int(f[12])
    return total / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- configurations --------------------------------------------------------------------
def nginx_head(workdir: Path, name: str) -> str:
    temp = "\n".join(
        f"    {k}_temp_path {workdir}/{name}-{k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
{temp}
"""


def nginx_backends_conf(workdir: Path, ports: list[int], extra_ports: list[int]) -> str:
    location = f'location / {{ default_type text/plain; return 200 "{BODY.rstrip()}\\n"; }}'
    blocks = [f"    server {{ listen 127.0.0.1:{p}; {location} }}" for p in ports]
    if extra_ports:  # the memory test's other 97 servers: one block, many listen lines
        listens = " ".join(f"listen 127.0.0.1:{p};" for p in extra_ports)
        blocks.append(f"    server {{ {listens} {location} }}")
    return nginx_head(workdir, "backends") + "\n".join(blocks) + "\n}\n"


def nginx_proxy_conf(workdir: Path, port: int, backends: list[int]) -> str:
    servers = " ".join(f"server 127.0.0.1:{p};" for p in backends)
    return (
        nginx_head(workdir, "nginx-proxy")
        + f"""    upstream backends {{ {servers} keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )


def haproxy_conf(port: int, backends: list[int], mode: str) -> str:
    http = mode == "http"
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p} check inter 1s" for i, p in enumerate(backends, 1))
    return f"""global
    nbthread 1
    maxconn 9000
defaults
    mode {mode}
    timeout connect 3s
    timeout client 60s
    timeout server 60s
{"    timeout http-request 10s" if http else ""}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
{"    http-reuse always" if http else ""}
{"    option httpchk GET /healthz" if http else ""}
{servers}
"""


def lbtui_conf(workdir: Path, name: str, port: int, backends: list[int], mode: str) -> str:
    servers = "\n".join(
        f'[[servers]]\nname = "b{i}"\nhost = "127.0.0.1"\nport = {p}\n' for i, p in enumerate(backends, 1)
    )
    check = 'http_path = "/healthz"\n' if mode == "http" else ""
    return f"""# {name}: written by tests/bench/bench_proxy.py
[[listeners]]
name = "bench"
host = "127.0.0.1"
port = {port}
mode = "{mode}"

[balancer]
algorithm = "round_robin"

[health]
enabled = true
interval = 1.0
timeout = 1.0
rise = 2
fall = 3
{check}
[access_log]
path = "{workdir}/{name}-access.log"
max_bytes = 52428800
backups = 1

[admin]
enabled = true
host = "127.0.0.1"
port = 0

{servers}"""


# -- wrk -------------------------------------------------------------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_PCT = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(slots=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # proxy (or backend, for direct) CPU per request


def parse_wrk(text: str) -> tuple[float, float, float, int]:
    rps = _RPS.search(text)
    pct = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _PCT.finditer(text)}
    if rps is None or "50" not in pct or "99" not in pct:
        raise BenchError(f"cannot parse wrk output:\n{text[-600:]}")
    errors = sum(int(x) for x in _SOCKERR.search(text).groups()) if _SOCKERR.search(text) else 0
    non2xx = _NON2XX.search(text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return float(rps.group(1)), pct["50"], pct["99"], errors


def run_wrk(wrk: str, port: int, duration: float, connections: int, threads: int, pgid: int) -> Sample:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "2s",
        f"http://127.0.0.1:{port}/",
    ]
    cpu0 = group_cpu_seconds(pgid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    cpu1 = group_cpu_seconds(pgid)
    if done.returncode != 0:
        raise BenchError(f"wrk failed on port {port}: {done.stderr.strip()[-300:]}")
    rps, p50, p99, errors = parse_wrk(done.stdout)
    requests = rps * duration
    return Sample(rps, p50, p99, errors, (cpu1 - cpu0) * 1e6 / requests if requests else float("nan"))


# -- memory ----------------------------------------------------------------------------
def _wait_fds(pid: int, target: float, deadline_s: float) -> int:
    """Until lbtui holds ``target`` descriptors (it accepted, not just the kernel's backlog)."""
    deadline = time.monotonic() + deadline_s
    while (count := fd_count(pid)) < target and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def hold_connections(port: int, count: int, pid: int, base_fds: int) -> dict[str, float]:
    """Open ``count`` idle connections, sample lbtui's RSS, send one request each, sample again.

    Blocking connects in batches, each batch waited for until lbtui accepted it: the
    accept queue never overflows (a dropped SYN costs a 1 s retry) and all 10,000 are
    open well within lbtui's 10 s header timeout, so none is closed before the sample.
    """
    socks: list[socket.socket] = []
    result: dict[str, float] = {}
    started = time.monotonic()
    failed = 0
    try:
        for first in range(0, count, 500):
            for _ in range(min(500, count - first)):
                s = socket.socket()
                s.settimeout(5.0)
                try:
                    s.connect(("127.0.0.1", port))
                except OSError:
                    failed += 1
                    s.close()
                    continue
                socks.append(s)
            _wait_fds(pid, base_fds + 0.98 * len(socks), 5.0)
        result["open_seconds"] = time.monotonic() - started
        result["open_failed"] = failed
        result["fds_open"] = _wait_fds(pid, base_fds + len(socks), 5.0)
        result["rss_connected"] = rss_mib(pid)

        # One request on each, answers read through a selector, all within one deadline.
        request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
        pending: dict[int, tuple[socket.socket, bytearray]] = {}
        with selectors.DefaultSelector() as selector:
            for s in socks:
                s.setblocking(False)
                try:
                    s.send(request)
                except OSError:
                    continue
                pending[s.fileno()] = (s, bytearray())
                selector.register(s, selectors.EVENT_READ)
            answered = 0
            deadline = time.monotonic() + 30.0
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    s, buffer = pending[key.fd]
                    try:
                        chunk = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    buffer += chunk
                    head, sep, body = bytes(buffer).partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    complete = sep and length and len(body) >= int(length.group(1))
                    if complete or not chunk:
                        answered += bool(complete) and head.startswith(b"HTTP/1.1 200")
                        selector.unregister(s)
                        del pending[key.fd]
        result["answered"] = answered
        time.sleep(0.5)  # let the access log thread drain its queue before sampling
        result["fds_keepalive"] = fd_count(pid)
        result["rss_keepalive"] = rss_mib(pid)
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 15.0
    while fd_count(pid) > base_fds + 50 and time.monotonic() < deadline:
        time.sleep(0.1)
    result["rss_closed"] = rss_mib(pid)
    result["fds_closed"] = fd_count(pid)
    return result


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise BenchError(
            f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors the memory test needs"
        )


# -- the run ---------------------------------------------------------------------------
@dataclass(slots=True)
class Path_:
    name: str
    label: str
    port: int
    child: Child
    mode: str  # "http" or "tcp": which HAProxy it is compared with


@dataclass(slots=True)
class Row:
    path: Path_
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms"


STALL_FACTOR = 8.0
"""A round whose p99 is above this many times its own p50 stalled: quiet rounds here stay
within 2-4x on every path, and the stalls this VM has make it 9-150x."""


def stalled(row: Row) -> int:
    return sum(1 for s in row.samples if s.p99_ms > STALL_FACTOR * s.p50_ms)


def table(rows: list[Row], baseline: Row) -> list[list[str]]:
    out = [
        [
            "path",
            "requests/s",
            "p50",
            "p99",
            "rps vs HAProxy",
            "p99 vs HAProxy",
            "CPU µs/req",
            "stalled rounds",
            "errors",
        ]
    ]
    base_rps, base_p99 = baseline.median("rps"), baseline.median("p99_ms")
    for row in rows:
        out.append(
            [
                row.path.label,
                fmt_int(row.median("rps")),
                fmt_ms(row.median("p50_ms")),
                fmt_ms(row.median("p99_ms")),
                f"{row.median('rps') / base_rps:.2f}",
                f"{row.median('p99_ms') / base_p99:.2f}",
                f"{row.median('cpu_us'):.1f}",
                f"{stalled(row)}/{len(row.samples)}",
                str(row.errors),
            ]
        )
    return out


def render_text(cells: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_md(cells: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(cells[0]) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cells[0]))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def verdict(row: Row, baseline: Row) -> tuple[str, str, float, float]:
    rps = row.median("rps") / baseline.median("rps")
    p99 = row.median("p99_ms") / baseline.median("p99_ms")
    bar = "met" if rps >= BAR_RPS and p99 <= BAR_P99 else "NOT met"
    goal = "met" if rps >= GOAL_RPS else "NOT met"
    return bar, goal, rps, p99


def verdict_lines(name: str, row: Row, baseline: Row) -> list[str]:
    bar, goal, rps, p99 = verdict(row, baseline)
    # Cross-checks that drift less on a shared machine than the ratio of medians:
    # lbtui / HAProxy within each round, and the ratio of CPU time per request.
    pairs = list(zip(row.samples, baseline.samples))
    paired = statistics.median(r.rps / b.rps for r, b in pairs)
    paired_p99 = statistics.median(r.p99_ms / b.p99_ms for r, b in pairs)
    cpu, base_cpu = row.median("cpu_us"), baseline.median("cpu_us")
    return [
        f"{name} bar (>= {BAR_RPS}x HAProxy requests/s and p99 <= {BAR_P99}x): {bar} ({rps:.2f}x, p99 {p99:.2f}x)",
        f"{name} goal (>= {GOAL_RPS}x HAProxy requests/s): {goal} ({rps:.2f}x)",
        (
            f"{name} cross-checks: median of the per-round ratios {paired:.2f}x, p99 {paired_p99:.2f}x; "
            f"CPU per request lbtui {cpu:.1f} µs, HAProxy {base_cpu:.1f} µs, so {base_cpu / cpu:.2f}x when CPU-bound; "
            f"stalled rounds (p99 > {STALL_FACTOR:g}x p50) lbtui {stalled(row)}, HAProxy {stalled(baseline)} "
            f"of {len(pairs)}"
        ),
    ]


def lbtui_argv(python: str, config: Path) -> list[str]:
    return [python, str(HERE / "lbtui_bench_server.py"), "--config", str(config)]


def start_lbtui(
    children: Children, python: str, workdir: Path, name: str, backends: list[int], mode: str
) -> tuple[Child, int, dict[str, object]]:
    config = workdir / f"{name}.toml"
    port = free_ports(1)[0]
    config.write_text(lbtui_conf(workdir, name, port, backends, mode))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = children.start(name, lbtui_argv(python, config), stdout_pipe=True, env=env)
    ready = read_ready(child)
    return child, port, ready


def wait_all_healthy(admin: str, count: int, deadline_s: float = 15.0) -> int:
    """Until the balancer reports ``count`` healthy servers (rise 2 at 1 s: about 2 s)."""
    deadline = time.monotonic() + deadline_s
    healthy = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{admin}/api/stats", timeout=2.0) as response:
                healthy = int(json.loads(response.read())["healthy"])
            if healthy >= count:
                return healthy
        time.sleep(0.2)
    return healthy


def main() -> int:
    parser = argparse.ArgumentParser(description="lbtui vs HAProxy vs nginx, with wrk (loopback only)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s (a smoke run, not for figures)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (9; the issue's table used 5)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--memory-servers", type=int, default=100)
    parser.add_argument("--no-tcp", action="store_true", help="skip the TCP (L4) comparison")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory test")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the minimal Protocols proxy (the reference row)"
    )
    parser.add_argument("--skip-install", action="store_true", help="never call apt-get")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs lbtui")
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (configs, logs)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="after the rounds, sample lbtui under wrk with py-spy; collapsed stacks to FILE",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 2, 2.0
    if args.rounds < 1 or not 1 <= args.duration <= 60:
        parser.error("--rounds must be >= 1 and --duration within 1..60 s")

    # SIGTERM and SIGHUP unwind like Ctrl-C, so the finally below always kills the children.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background with SIGINT ignored

    workdir = Path(tempfile.mkdtemp(prefix="lbtui-bench-"))
    children = Children(workdir)
    try:
        return run(args, workdir, children)
    except BenchError as exc:
        print(f"bench_proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_proxy: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if args.keep:
            print(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path, children: Children) -> int:
    tools = ensure_tools(args.skip_install)
    ensure_python(args.python)
    wrk, haproxy, nginx = tools["wrk"], tools["haproxy"], tools["nginx"]
    began = time.monotonic()

    # Backends: one nginx, three server blocks (plus the memory test's extra servers).
    extra = 0 if args.no_memory else max(0, args.memory_servers - 3)
    ports = free_ports(3 + extra + 6)
    backends, extra_ports, front = ports[:3], ports[3 : 3 + extra], ports[3 + extra :]
    (workdir / "backends.conf").write_text(nginx_backends_conf(workdir, backends, extra_ports))
    nginx_argv = [nginx, "-p", str(workdir), "-e", str(workdir / "nginx-startup.log"), "-c"]
    backend = children.start("backends", [*nginx_argv, str(workdir / "backends.conf")])
    for p in backends:
        wait_http(backend, p)

    paths: list[Path_] = [Path_("direct", "direct to one backend (ceiling)", backends[0], backend, "http")]
    (workdir / "haproxy.cfg").write_text(haproxy_conf(front[0], backends, "http"))
    hap = children.start("haproxy", [haproxy, "-db", "-f", str(workdir / "haproxy.cfg")])
    paths.append(
        Path_(
            "haproxy",
            f"HAProxy {_short(version([haproxy, '-v']))}, nbthread 1, http-reuse always",
            front[0],
            hap,
            "http",
        )
    )
    (workdir / "nginx-proxy.conf").write_text(nginx_proxy_conf(workdir, front[1], backends))
    ngx = children.start("nginx-proxy", [*nginx_argv, str(workdir / "nginx-proxy.conf")])
    paths.append(
        Path_(
            "nginx",
            f"nginx {_short(version([nginx, '-v']))}, 1 worker, upstream keepalive 64",
            front[1],
            ngx,
            "http",
        )
    )
    if not args.no_reference:
        ref = children.start(
            "minimal",
            [
                args.python,
                str(HERE / "minimal_proxy.py"),
                "--port",
                str(front[3]),
                "--backends",
                ",".join(map(str, backends)),
            ],
        )
        paths.append(
            Path_(
                "minimal",
                "minimal Protocols+httptools+uvloop proxy (reference, not lbtui)",
                front[3],
                ref,
                "http",
            )
        )
    lb_http, lb_port, lb_ready = start_lbtui(children, args.python, workdir, "lbtui-http", backends, "http")
    paths.append(
        Path_("lbtui", "lbtui HttpProxy (uvloop, 1 process, all features on)", lb_port, lb_http, "http")
    )
    if not args.no_tcp:
        (workdir / "haproxy-tcp.cfg").write_text(haproxy_conf(front[2], backends, "tcp"))
        hap_tcp = children.start("haproxy-tcp", [haproxy, "-db", "-f", str(workdir / "haproxy-tcp.cfg")])
        paths.append(Path_("haproxy-tcp", "HAProxy mode tcp, nbthread 1", front[2], hap_tcp, "tcp"))
        lb_tcp, lb_tcp_port, _ = start_lbtui(children, args.python, workdir, "lbtui-tcp", backends, "tcp")
        paths.append(
            Path_(
                "lbtui-tcp", "lbtui TcpProxy (uvloop, 1 process, all features on)", lb_tcp_port, lb_tcp, "tcp"
            )
        )
    for path in paths:
        wait_http(path.child, path.port)
    wait_all_healthy(str(lb_ready["admin"]), 3)

    load_before = os.getloadavg()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, load average {load_before[0]:.2f}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s --latency; {args.rounds} interleaved rounds; {len(paths)} paths",
        flush=True,
    )
    for path in paths:  # warm-up: pools filled, caches hot; not counted
        run_wrk(wrk, path.port, 1, args.connections, args.threads, path.child.pgid)
    rows = {path.name: Row(path) for path in paths}
    for round_no in range(1, args.rounds + 1):
        for path in paths:
            sample = run_wrk(wrk, path.port, args.duration, args.connections, args.threads, path.child.pgid)
            rows[path.name].samples.append(sample)
            print(
                f"  round {round_no}/{args.rounds}  {path.name:<12} {fmt_int(sample.rps):>9} req/s  "
                f"p50 {fmt_ms(sample.p50_ms):>9}  p99 {fmt_ms(sample.p99_ms):>9}  "
                f"cpu {sample.cpu_us:5.1f} µs/req  errors {sample.errors}",
                flush=True,
            )

    load_after = os.getloadavg()
    if args.profile:
        profile(args, wrk, lb_port, lb_http)
    lbtui_stats = fetch_json(f"{lb_ready['admin']}/api/stats")
    access_lines = count_lines(workdir / "lbtui-http-access.log")

    http_rows = [rows[n] for n in ("direct", "haproxy", "nginx", "minimal", "lbtui") if n in rows]
    http_cells = table(http_rows, rows["haproxy"])
    print("\nHTTP (medians of the rounds)\n" + render_text(http_cells))
    lines = verdict_lines("HTTP", rows["lbtui"], rows["haproxy"])
    print("\n".join(lines))
    tcp_cells: list[list[str]] | None = None
    tcp_lines: list[str] = []
    if not args.no_tcp:
        tcp_rows = [rows["direct"], rows["haproxy-tcp"], rows["lbtui-tcp"]]
        tcp_cells = table(tcp_rows, rows["haproxy-tcp"])
        print("\nTCP / L4 (medians of the rounds)\n" + render_text(tcp_cells))
        tcp_lines = verdict_lines("TCP", rows["lbtui-tcp"], rows["haproxy-tcp"])
        print("\n".join(tcp_lines))
    print(
        f"\nlbtui features seen working: {access_lines:,} access-log lines written; "
        f"stats p50 {lbtui_stats.get('p50_ms', '?')} ms / p99 {lbtui_stats.get('p99_ms', '?')} ms over "
        f"{lbtui_stats.get('requests', '?'):,} requests; {lbtui_stats.get('healthy', '?')} servers healthy by active checks"
    )

    memory: dict[str, float] | None = None
    if not args.no_memory:
        # Stop the throughput instances first, so the memory run has the machine to itself.
        for child in [c for c in list(children.items) if c.name.startswith("lbtui")]:
            children.stop(child)
        memory = memory_test(args, workdir, children, backends + extra_ports)
        print(
            f"\nMemory: lbtui with {args.memory_servers} servers (health checks every 1 s)\n"
            f"  idle baseline:                     {memory['rss_idle']:.1f} MiB ({memory['fds_idle']:.0f} fds)\n"
            f"  {memory['opened']:,.0f} idle client connections:    {memory['rss_connected']:.1f} MiB "
            f"(+{memory['rss_connected'] - memory['rss_idle']:.1f} MiB, "
            f"{(memory['rss_connected'] - memory['rss_idle']) * 1024 / max(1, memory['opened']):.2f} KiB each; "
            f"{memory['fds_open']:.0f} fds; opened in {memory['open_seconds']:.1f} s)\n"
            f"  same, after one request each:      {memory['rss_keepalive']:.1f} MiB "
            f"({memory['answered']:,.0f} answered 200, sent at once; {memory['fds_keepalive']:.0f} fds: lbtui now "
            f"also keeps ~{memory['fds_keepalive'] - memory['fds_open']:,.0f} idle upstream connections)\n"
            f"  client connections closed again:   {memory['rss_closed']:.1f} MiB ({memory['fds_closed']:.0f} fds)"
        )

    elapsed = time.monotonic() - began
    print(
        f"\nload average (1 min) {load_before[0]:.2f} before the rounds, {load_after[0]:.2f} after; "
        f"above {os.cpu_count()} means other work shared the CPUs and every figure is noisier"
    )
    print(f"finished in {elapsed:.0f} s")
    if args.markdown:
        env = environment(args, tools)
        env["load"] = f"{load_before[0]:.2f} before the rounds, {load_after[0]:.2f} after"
        args.markdown.write_text(
            markdown(
                args, env, http_cells, lines, tcp_cells, tcp_lines, memory, access_lines, lbtui_stats, rows
            )
        )
        print(f"wrote {args.markdown}")
    return 0


def memory_test(
    args: argparse.Namespace, workdir: Path, children: Children, servers: list[int]
) -> dict[str, float]:
    servers = servers[: args.memory_servers]
    child, port, ready = start_lbtui(children, args.python, workdir, "lbtui-memory", servers, "http")
    wait_http(child, port)
    healthy = wait_all_healthy(str(ready["admin"]), len(servers), deadline_s=20.0)
    pid = child.proc.pid
    # Warm the code paths once, so the baseline is a balancer that has served traffic.
    for _ in range(200):
        http_get(port)
    time.sleep(1.0)
    rss_idle = statistics.median(_sample(lambda: rss_mib(pid), 3, 0.3))
    fds_idle = fd_count(pid)
    raise_nofile(args.idle_connections + 1024)
    result = hold_connections(port, args.idle_connections, pid, fds_idle)
    if child.proc.poll() is not None:
        raise BenchError(f"lbtui died during the memory test:\n{tail(child.log)}")
    result.update(
        rss_idle=rss_idle,
        fds_idle=fds_idle,
        healthy=healthy,
        opened=args.idle_connections - result.get("open_failed", 0),
    )
    children.stop(child)
    return result


def profile(args: argparse.Namespace, wrk: str, port: int, child: Child) -> None:
    """Where lbtui's time goes under load: py-spy's collapsed stacks, and the top frames."""
    spy = shutil.which("py-spy") or str(Path(args.python).parent / "py-spy")
    if not os.access(spy, os.X_OK):
        print("profile: py-spy not found (pip install py-spy into the interpreter's environment)")
        return
    seconds = max(3, int(args.duration))
    load = subprocess.Popen(
        [wrk, "-t1", f"-c{args.connections}", f"-d{seconds + 2}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        done = subprocess.run(
            [
                spy,
                "record",
                "-p",
                str(child.proc.pid),
                "-d",
                str(seconds),
                "-r",
                "500",
                "-f",
                "raw",
                "-o",
                str(args.profile),
                "--nonblocking",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            load.wait(seconds + 10)
        if load.poll() is None:
            load.kill()
    if done.returncode != 0 or not args.profile.exists():
        print(f"profile: py-spy failed: {done.stderr.strip()[-300:]}")
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"\nprofile of lbtui under wrk ({total} samples, wall clock; {args.profile}):")
    for title, table_ in (("self", own), ("inclusive", inclusive)):
        print(f"  top {title}:")
        for frame, n in sorted(table_.items(), key=lambda kv: -kv[1])[:15]:
            print(f"    {100 * n / max(1, total):5.1f}%  {frame}")


def _sample(fn, count: int, gap: float) -> list[float]:  # type: ignore[no-untyped-def]
    values = []
    for i in range(count):
        if i:
            time.sleep(gap)
        values.append(fn())
    return values


def _short(text: str) -> str:
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else text


def fetch_json(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=3.0) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def count_lines(path: Path) -> int:
    total = 0
    for p in sorted(path.parent.glob(path.name + "*")):
        with open(p, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def environment(args: argparse.Namespace, tools: dict[str, str]) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    py = subprocess.run(
        [
            args.python,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); import uvloop, httptools, engine._native as n;"
            " print(sys.version.split()[0], uvloop.__version__, httptools.__version__, n.MODE)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.split()
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "kernel": platform.release(),
        "haproxy": _short(version([tools["haproxy"], "-v"])),
        "nginx": _short(version([tools["nginx"], "-v"])),
        "wrk": _short(version([tools["wrk"], "-v"])),
        "python": py[0] if py else "?",
        "uvloop": py[1] if len(py) > 1 else "?",
        "httptools": py[2] if len(py) > 2 else "?",
        "lbtui hot modules": py[3] if len(py) > 3 else "?",  # "compiled" (mypyc) or "python"
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def markdown(
    args, env, http_cells, http_lines, tcp_cells, tcp_lines, memory, access_lines, stats, rows
) -> str:  # type: ignore[no-untyped-def]
    out = [
        "# Proxy benchmark: lbtui vs HAProxy vs nginx",
        "",
        (
            f"`python tests/bench/bench_proxy.py --rounds {args.rounds} --duration {args.duration:g}` "
            f"on {env['cpu']} (shared by wrk, the backends and the proxy), Linux {env['kernel']}, {env['date']}."
        ),
        (
            f"wrk {env['wrk']} `-t{args.threads} -c{args.connections} -d{args.duration:g}s --latency`, keep-alive, "
            f"three nginx {env['nginx']} backends (one process, 1 worker) answering a 14-byte body, round robin; "
            f"medians of {args.rounds} interleaved rounds. HAProxy {env['haproxy']}; Python {env['python']}, "
            f"uvloop {env['uvloop']}, httptools {env['httptools']}."
        ),
        "",
        (
            f"Load average (1 min): {env['load']}; above the CPU count, other work shared the CPUs during the run, "
            "which moves requests/s and p99 from round to round more than CPU µs/req."
        ),
        "",
        (
            "lbtui runs its production path (`Config` -> `Gateway`, `tests/bench/lbtui_bench_server.py`) on uvloop in one "
            f"process, its hot modules {env['lbtui hot modules']} (`engine/_native.py`), with its real features on: "
            "round-robin policy, per-server stats with latency percentiles, a JSON "
            "access log to a file, active HTTP health checks every 1 s, the admin API. HAProxy has `check inter 1s` too; "
            "neither HAProxy nor nginx writes an access log. CPU µs/req is the proxy's own CPU time (for `direct`, the "
            "backend's) divided by the requests it served: on a shared machine it moves less than requests/s. "
            "The `minimal` row (`tests/bench/minimal_proxy.py`, not lbtui) is a bare asyncio Protocols + httptools + "
            "uvloop proxy with pooled upstream connections and nothing else: what Python can do here; the gap between "
            "it and lbtui is the cost of lbtui's own request path."
        ),
        "",
        "## HTTP",
        "",
        render_md(http_cells),
        "",
        *[f"- {line}" for line in http_lines],
        "",
    ]
    if tcp_cells is not None:
        out += [
            "## TCP (L4): wrk's HTTP carried through the proxy",
            "",
            render_md(tcp_cells),
            "",
            *[f"- {line}" for line in tcp_lines],
            "",
        ]
    out += [
        (
            f"During the HTTP rounds lbtui wrote {access_lines:,} access-log lines and its own stats reported "
            f"p50 {stats.get('p50_ms', '?')} ms and p99 {stats.get('p99_ms', '?')} ms (time to the upstream's answer, "
            "without wrk's client side)."
        ),
        "",
    ]
    if memory is not None:
        delta = memory["rss_connected"] - memory["rss_idle"]
        out += [
            f"## Memory: lbtui with {args.memory_servers} servers",
            "",
            "| state | RSS | descriptors |",
            "|---|---:|---:|",
            f"| idle, after 200 warm-up requests | {memory['rss_idle']:.1f} MiB | {memory['fds_idle']:.0f} |",
            (
                f"| {memory['opened']:,.0f} idle client connections (no request yet) | {memory['rss_connected']:.1f} MiB "
                f"(+{delta:.1f} MiB, {delta * 1024 / max(1, memory['opened']):.2f} KiB each) | {memory['fds_open']:.0f} |"
            ),
            (
                f"| the same connections after one request each, sent at once (idle keep-alive; lbtui now also "
                f"keeps ~{memory['fds_keepalive'] - memory['fds_open']:,.0f} idle upstream connections, at most "
                f"`pool_size` 64 per server) | {memory['rss_keepalive']:.1f} MiB | {memory['fds_keepalive']:.0f} |"
            ),
            (
                f"| client connections closed again (idle upstream connections stay pooled until `idle_timeout`; "
                f"CPython keeps freed memory for reuse) | {memory['rss_closed']:.1f} MiB | {memory['fds_closed']:.0f} |"
            ),
            "",
        ]
    out += [
        "Per round (requests/s):",
        "",
        "| path | " + " | ".join(f"r{i + 1}" for i in range(args.rounds)) + " |",
        "|---|" + "---:|" * args.rounds,
    ]
    for row in rows.values():
        out.append(f"| {row.path.name} | " + " | ".join(fmt_int(s.rps) for s in row.samples) + " |")
    out += [
        "",
        "Per round (p99):",
        "",
        "| path | " + " | ".join(f"r{i + 1}" for i in range(args.rounds)) + " |",
        "|---|" + "---:|" * args.rounds,
    ]
    for row in rows.values():
        out.append(f"| {row.path.name} | " + " | ".join(fmt_ms(s.p99_ms) for s in row.samples) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
