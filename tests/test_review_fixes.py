"""Regression tests for the review: each failed before its fix.

Bad input must be a 4xx or one line, never a 500 or a traceback; one bad server must
not end health checking for every server; a hand-edited store document must not stall
store sync.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud.store.mongo import MongoStore
from cloud.store import StoreError
from engine.admin import AdminApi
from engine.balancer import LoadBalancer
from engine.config import Config, ConfigError, host_problem, mongodb_uri_problem, server_name_problem
from engine.health import HealthChecker
from engine.server import Server
from lbtui.commands.attach import preflight
from workers.runtime import build_node
from workers.store_sync import StoreSync

TIMEOUT = aiohttp.ClientTimeout(total=5)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminApi, aiohttp.ClientSession]]:
    lb = LoadBalancer([Server("127.0.0.1", 9001, 1, "s0")], "consistent_hash")
    api = AdminApi(lb, port=0)
    await api.start()
    async with aiohttp.ClientSession(api.url, timeout=TIMEOUT) as session:
        yield api, session
    await api.stop()


async def _send(session: aiohttp.ClientSession, method: str, path: str, body: str) -> tuple[int, Any]:
    async with session.request(method, path, data=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/api/servers", "[" * 20_000 + "]" * 20_000),  # RecursionError in json
        ("PUT", "/api/servers/s0/weight", '{"weight": ' + "9" * 5000 + "}"),  # past int digit limit
    ],
)
async def test_hostile_json_bodies_are_400_not_500(admin: Any, method: str, path: str, body: str) -> None:
    _, session = admin
    status, answer = await _send(session, method, path, body)
    assert status == 400 and answer == {"error": "body must be valid JSON"}


async def test_balance_factor_past_float_range_is_400(admin: Any) -> None:
    _, session = admin
    body = json.dumps({"algorithm": "consistent_hash", "balance_factor": 10**400})
    status, answer = await _send(session, "PUT", "/api/algorithm", body)
    assert status == 400 and "balance_factor" in answer["error"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"host": "127.0.0.1", "port": 80, "name": "a;Domain=evil.example"}, "name"),  # cookie injection
        ({"host": "127.0.0.1", "port": 80, "name": "a/b"}, "name"),  # not addressable in URLs
        ({"host": "127.0.0.1", "port": 80, "name": "x\u0000y"}, "name"),
        ({"host": "127.0.0.1", "port": 80, "name": "ünï"}, "name"),
        ({"host": "a" * 64 + ".example", "port": 80}, "host"),  # IDNA UnicodeError in getaddrinfo
        ({"host": "h/../x", "port": 80}, "host"),
    ],
)
async def test_admin_applies_the_config_files_name_and_host_rules(
    admin: Any, payload: dict[str, Any], field: str
) -> None:
    api, session = admin
    status, answer = await _send(session, "POST", "/api/servers", json.dumps(payload))
    assert status == 400 and answer["error"].startswith(f"{field}:")
    assert [s.name for s in api.lb.servers] == ["s0"]


def test_config_rejects_bad_hosts_and_accepts_an_ipv6_default_name() -> None:
    with pytest.raises(ConfigError, match=r"servers\[0\]\.host"):
        Config.from_dict({"servers": [{"host": "a" * 64 + ".example", "port": 80}]})
    config = Config.from_dict({"servers": [{"host": "::1", "port": 80}]})
    assert config.servers[0].name == "::1:80"


def test_shared_rules() -> None:
    assert host_problem("127.0.0.1") is None and host_problem("[::1]") is None
    assert host_problem("backend-1.internal") is None
    assert host_problem("bad host") and host_problem("") and host_problem("ünï")
    assert server_name_problem("web-1") is None and server_name_problem("a,b")
    assert mongodb_uri_problem("mongodb://u:p@127.0.0.1:1/db") is None
    assert mongodb_uri_problem("mongodb://u:p@") and mongodb_uri_problem("mongodb://u:p@[::1")
    assert "secret" not in (mongodb_uri_problem("mongodb://u:secret@[::1") or "")


async def test_one_unresolvable_host_does_not_end_health_checks_for_all() -> None:
    """getaddrinfo raises UnicodeError (not OSError) for a label over 63 characters."""
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    bad, good = Server("a" * 64 + ".example", 80, name="bad"), Server("127.0.0.1", port, name="good")
    dead = Server("127.0.0.1", 1, name="dead")
    checker = HealthChecker(0.02, 1.0, 1, 1, servers=[bad, good, dead])
    try:
        checker.start()
        async with asyncio.timeout(5):
            while checker.rounds < 3:
                await asyncio.sleep(0.01)
        assert checker.running
        assert not bad.healthy and good.healthy and not dead.healthy
        assert "UnicodeError" in bad.health.last_error
    finally:
        await checker.aclose()
        listener.close()
        await listener.wait_closed()


class _HandEditedStore:
    """Only what StoreSync._pull reads; the first documents were edited by hand."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    async def changes(self, since: float) -> list[dict[str, Any]]:
        return self.records

    async def get_settings(self) -> dict[str, Any]:
        return {"algorithm": "random", "updated_at": 5.0, "updated_by": "other"}

    async def list_servers(self) -> list[dict[str, Any]]:
        return [r for r in self.records if isinstance(r.get("name"), str)]

    def describe(self) -> str:
        return "hand-edited"


async def test_store_sync_skips_malformed_records_and_keeps_syncing() -> None:
    lb = LoadBalancer([Server("127.0.0.1", 9001, name="s0")], "round_robin")
    good = {"name": "s1", "host": "127.0.0.1", "port": 9002, "updated_at": 3.0, "updated_by": "other"}
    store = _HandEditedStore([
        {"name": "x", "host": "127.0.0.1", "port": 1, "updated_at": "yesterday"},
        {"name": "y", "host": "127.0.0.1", "port": None, "updated_at": 1.0, "updated_by": "other"},
        {"name": "z;evil", "host": "127.0.0.1", "port": 2, "updated_at": 1.0, "updated_by": "other"},
        {"name": "w", "host": "a" * 64, "port": 3, "updated_at": 1.0, "updated_by": "other"},
        good,
    ])
    sync = StoreSync(lb, store, node_id="me")  # type: ignore[arg-type]
    await sync._pull()
    assert sorted(s.name for s in lb.servers) == ["s0", "s1"]
    assert lb.algorithm == "random"


def test_health_prober_gets_the_configured_expect_status() -> None:
    config = Config.from_dict({"health": {"expect_status": 204}})
    lb = LoadBalancer([], "round_robin")
    node = build_node(config, lb, probe_health=True, store=object())  # type: ignore[arg-type]
    checker = node.workers["health"].checker  # type: ignore[attr-defined]
    assert (checker.expect_low, checker.expect_high) == (204, 204)


async def test_mongo_store_with_a_malformed_uri_raises_store_error() -> None:
    store = MongoStore("mongodb://u:pw@[::1")
    with pytest.raises(StoreError) as caught:
        await store.connect()
    assert "pw" not in str(caught.value)


async def test_attach_preflight_names_an_unreachable_admin_api() -> None:
    problem = await preflight("http://127.0.0.1:1", None, timeout=2.0)
    assert problem is not None and "cannot connect" in problem


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--target", "http://[::1", "--duration", "1"],
        ["simulate", "--target", "http://127.0.0.1:99999", "--duration", "1"],
        ["attach", "http://[::1"],
        ["attach", "http://127.0.0.1:1"],
        ["report", "--mongodb-uri", "mongodb://u:pw@[::1"],
        ["report", "--mongodb-uri", "http://x"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lbtui", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lbtui: "), lines
    assert "Traceback" not in done.stderr


async def test_reload_keeps_command_line_overrides(tmp_path):
    """SIGHUP re-reads the file but keeps --port/--admin-port/--mongodb-uri; secrets stay hidden."""
    from engine.config import Config

    path = tmp_path / "lbtui.toml"
    path.write_text('[[listeners]]\nport = 8080\n[admin]\nport = 8404\n[[servers]]\nhost = "127.0.0.1"\nport = 9001\n')
    config = Config.load(path).with_overrides(port=0, admin_port=0, mongodb_uri="mongodb://u:hunter2@127.0.0.1:1/")
    path.write_text(path.read_text() + '[[servers]]\nhost = "127.0.0.1"\nport = 9002\n')
    again = config.reread()
    assert again.listeners[0].port == 0 and again.admin.port == 0
    assert again.store.mongodb_uri == "mongodb://u:hunter2@127.0.0.1:1/"
    assert len(again.servers) == 2
    assert "hunter2" not in repr(again) and "hunter2" not in str(again.redacted())


async def test_a_worker_whose_setup_fails_reports_it_and_retries():
    import asyncio

    from workers.base import Worker

    class Flaky(Worker):
        name = "flaky"

        def __init__(self) -> None:
            super().__init__(interval=0.01)
            self.setups = 0
            self.steps = 0

        async def setup(self) -> None:
            self.setups += 1
            if self.setups < 3:
                raise ConnectionError("store not there yet")

        async def step(self) -> None:
            self.steps += 1

    worker = Flaky()
    worker.start()
    try:
        async with asyncio.timeout(5):
            while worker.steps == 0:
                await asyncio.sleep(0.01)
        assert worker.setups == 3
        assert worker.failures == 2 and "store not there yet" in worker.last_error
        assert worker.status()["ok"]
    finally:
        await worker.stop()
