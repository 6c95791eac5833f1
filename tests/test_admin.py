"""Admin API over real sockets: every endpoint, the token, and 4xx JSON for bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.admin import AdminApi, AdminSecurityError
from engine.balancer import LoadBalancer
from engine.config import ConfigError
from engine.server import AdminState, Health, Server

TOKEN = "test-token-0123456789abcdef"
TIMEOUT = aiohttp.ClientTimeout(total=5)


class FakeControl:
    """Stands in for the Gateway: records what the admin API asked of it."""

    def __init__(self) -> None:
        self.started_at = time.time() - 5
        self.stop_requested = False
        self.reload_error: ConfigError | None = None
        self.reloads = 0

    def status(self) -> dict[str, Any]:
        return {"listeners": [{"name": "web", "port": 1}], "components": {"store": {"state": "ok"}}}

    async def reload(self) -> dict[str, Any]:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloads += 1
        return {"added": ["x"], "removed": [], "updated": [], "changed": [], "restart_required": []}

    def request_stop(self) -> None:
        self.stop_requested = True

    def listener_metrics(self) -> list[dict[str, Any]]:
        return [{"name": "web", "active_requests": 0, "connections": 2}]


def make_lb() -> LoadBalancer:
    servers = [Server("127.0.0.1", 9001 + i, 1, f"s{i}") for i in range(3)]
    return LoadBalancer(servers, "consistent_hash", hash_key="header:x-user")


@pytest.fixture
async def api() -> AsyncIterator[tuple[AdminApi, FakeControl, aiohttp.ClientSession]]:
    control = FakeControl()
    admin = AdminApi(make_lb(), control=control, port=0, keepalive=0.2)
    await admin.start()
    async with aiohttp.ClientSession(admin.url, timeout=TIMEOUT) as session:
        yield admin, control, session
    await admin.stop()


async def call(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, path, **kw) as response:
        assert response.content_type == "application/json", f"{method} {path}: {response.content_type}"
        return response.status, await response.json()


async def test_list_servers_carries_the_names_scripts_rely_on(api: Any) -> None:
    _, _, session = api
    status, body = await call(session, "GET", "/api/servers")
    assert status == 200
    assert [s["name"] for s in body["servers"]] == ["s0", "s1", "s2"]
    for key in (
        "name",
        "host",
        "port",
        "weight",
        "effective_weight",
        "state",
        "status",
        "admin_state",
        "active_connections",
        "requests",
        "errors",
        "rps",
        "p50_ms",
        "p99_ms",
    ):
        assert key in body["servers"][0], key
    status, one = await call(session, "GET", "/api/servers/s1")
    assert status == 200 and one["port"] == 9002


async def test_add_and_remove_servers(api: Any) -> None:
    admin, _, session = api
    status, body = await call(
        session, "POST", "/api/servers", json={"name": "new", "host": "127.0.0.1", "port": 9100, "weight": 3}
    )
    assert status == 201 and body["name"] == "new" and body["weight"] == 3
    assert admin.lb.get_server("new") is not None
    assert "new" in admin.lb.ring.ring.nodes, "the ring learns the new server"
    status, body = await call(session, "POST", "/api/servers", json={"host": "127.0.0.1", "port": 9101})
    assert status == 201 and body["name"] == "127.0.0.1:9101" and body["weight"] == 1
    status, body = await call(session, "DELETE", "/api/servers/new")
    assert (status, body) == (200, {"removed": "new"})
    assert admin.lb.get_server("new") is None


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"name": "s0", "host": "127.0.0.1", "port": 9200}, 409, "already exists"),
        ({"host": "127.0.0.1"}, 400, "port is required"),
        ({"port": 9200}, 400, "host is required"),
        ({"host": "127.0.0.1", "port": "80"}, 400, "port must be a whole number"),
        ({"host": "127.0.0.1", "port": 0}, 400, "from 1 to 65535"),
        ({"host": "127.0.0.1", "port": True}, 400, "port must be a whole number"),
        ({"host": "127.0.0.1", "port": 80, "weight": 5000}, 400, "weight must be from 0 to 1000"),
        ({"host": "bad host", "port": 80}, 400, "host"),
        ({"host": "h", "port": 80, "colour": "red"}, 400, "unknown field 'colour'"),
        ([1, 2], 400, "JSON object"),
    ],
)
async def test_add_server_bad_input_is_4xx_json(api: Any, payload: Any, status: int, reason: str) -> None:
    admin, _, session = api
    got, body = await call(session, "POST", "/api/servers", json=payload)
    assert got == status and reason in body["error"]
    assert len(admin.lb.servers) == 3


async def test_malformed_json_and_unknown_things(api: Any) -> None:
    _, _, session = api
    status, body = await call(
        session, "POST", "/api/servers", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "valid JSON" in body["error"]
    status, body = await call(session, "DELETE", "/api/servers/nobody")
    assert status == 404 and "nobody" in body["error"]
    status, body = await call(session, "POST", "/api/servers/nobody/drain")
    assert status == 404
    status, body = await call(session, "GET", "/api/nothing-here")
    assert status == 404 and "error" in body
    status, body = await call(session, "PATCH", "/api/servers")
    assert status == 405 and "error" in body
    status, body = await call(
        session, "POST", "/api/servers", data=b"x" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert status == 413 and "too large" in body["error"]


async def test_drain_maint_ready_and_operator_health(api: Any) -> None:
    admin, _, session = api
    lb: LoadBalancer = admin.lb
    for action, state in (
        ("drain", AdminState.DRAIN),
        ("maint", AdminState.MAINT),
        ("ready", AdminState.READY),
    ):
        status, body = await call(session, "POST", f"/api/servers/s1/{action}")
        assert status == 200 and body["admin_state"] == action
        assert lb.require("s1").admin_state is state
    status, body = await call(session, "POST", "/api/servers/s2/health", json={"up": False})
    assert status == 200 and body["state"] == "down" and lb.require("s2").health.state is Health.DOWN
    assert lb.require("s2") not in lb.eligible()
    status, body = await call(session, "POST", "/api/servers/s2/health", json={"up": "no"})
    assert status == 400 and "true or false" in body["error"]
    status, body = await call(session, "POST", "/api/servers/s2/health", json={"up": True})
    assert status == 200 and body["state"] == "up"


async def test_weight(api: Any) -> None:
    admin, _, session = api
    status, body = await call(session, "PUT", "/api/servers/s0/weight", json={"weight": 7})
    assert status == 200 and body["weight"] == 7 and admin.lb.require("s0").weight == 7
    for bad in ({"weight": -1}, {"weight": 1.5}, {}, {"weight": None}):
        status, body = await call(session, "PUT", "/api/servers/s0/weight", json=bad)
        assert status == 400 and "weight" in body["error"]
    assert admin.lb.require("s0").weight == 7


async def test_route_agrees_with_the_engine(api: Any) -> None:
    admin, _, session = api
    for key in ("alice", "bob", "user-42"):
        status, body = await call(session, "GET", "/api/route", params={"key": key})
        assert status == 200
        assert body["owner"] == admin.lb.ring.ring.get_node(key)
        assert body["serving"] == admin.lb.route({"headers": {"x-user": key}}).name
        assert isinstance(body["hash"], int) and len(body["fallbacks"]) == 2
    status, body = await call(session, "GET", "/api/route")
    assert status == 400 and "key" in body["error"]
    status, body = await call(session, "GET", "/api/route", params={"key": "k", "fallbacks": "lots"})
    assert status == 400


async def test_algorithm_switch_and_its_errors(api: Any) -> None:
    admin, _, session = api
    status, body = await call(
        session,
        "PUT",
        "/api/algorithm",
        json={"algorithm": "bounded_hash", "hash_key": "cookie:sid", "balance_factor": 1.5},
    )
    assert status == 200
    assert body == {"algorithm": "bounded_hash", "hash_key": "cookie:sid", "balance_factor": 1.5}
    assert admin.lb.algorithm == "bounded_hash" and admin.lb.balance_factor == 1.5
    status, body = await call(session, "PUT", "/api/algorithm", json={"algorithm": "rr"})
    assert status == 200 and body["algorithm"] == "round_robin"
    for bad, reason in (
        ({"algorithm": "fastest"}, "unknown algorithm"),
        ({"algorithm": "consistent_hash", "hash_key": "header"}, "needs a name"),
        ({"algorithm": "consistent_hash", "balance_factor": 0.5}, "at least 1.0"),
        ({}, "algorithm is required"),
    ):
        status, body = await call(session, "PUT", "/api/algorithm", json=bad)
        assert status == 400 and reason in body["error"], body
    assert admin.lb.algorithm == "round_robin", "a rejected change changes nothing"


async def test_stats_status_and_ring(api: Any) -> None:
    admin, _, session = api
    admin.lb.route({"client_ip": "10.0.0.1"})
    status, body = await call(session, "GET", "/api/stats")
    assert status == 200 and body["requests"] == 1 and body["uptime"] >= 5
    status, body = await call(session, "GET", "/api/status")
    assert status == 200 and body["components"]["store"] == {"state": "ok"}
    status, body = await call(session, "GET", "/api/ring", params={"max_points": "64"})
    assert status == 200
    assert 0 < len(body["points"]) <= 64
    assert all(0 <= p < 1 and o in {"s0", "s1", "s2"} for p, o in body["points"])
    assert sum(body["shares"].values()) == pytest.approx(1.0)
    status, body = await call(session, "GET", "/api/ring", params={"max_points": "0"})
    assert status == 400


async def test_reload_and_shutdown_go_to_the_control(api: Any) -> None:
    _, control, session = api
    status, body = await call(session, "POST", "/api/reload")
    assert status == 200 and body["added"] == ["x"] and control.reloads == 1
    control.reload_error = ConfigError("/etc/lbtui.toml", "servers[0].port", "must be from 1 to 65535")
    status, body = await call(session, "POST", "/api/reload")
    assert status == 422 and body["error"] == "/etc/lbtui.toml: servers[0].port: must be from 1 to 65535"
    status, body = await call(session, "POST", "/api/shutdown")
    assert status == 202 and control.stop_requested


async def test_metrics_endpoint(api: Any) -> None:
    _, _, session = api
    async with session.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "lbtui_server_requests",
        "lbtui_server_request_duration_seconds",
        "lbtui_listener_connections",
    } <= names


async def test_unexpected_errors_are_a_bare_json_500(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    admin, _, session = api

    def explode() -> dict[str, Any]:
        raise RuntimeError("secret internals /etc/passwd")

    class Exploding:  # the admin's balancer, for this call: its stats raise
        stats = staticmethod(explode)

    monkeypatch.setattr(admin, "lb", Exploding())
    status, body = await call(session, "GET", "/api/stats")
    assert (status, body) == (500, {"error": "internal error"})


# -- events ----------------------------------------------------------------------------
async def read_event(response: aiohttp.ClientResponse) -> dict[str, Any] | str:
    """The next SSE message: a decoded data payload, or the comment text."""
    lines: list[str] = []
    while True:
        raw = await response.content.readline()
        assert raw, "stream ended"
        line = raw.decode().rstrip("\n")
        if line == "":
            if lines:
                break
            continue
        lines.append(line)
    if lines[0].startswith(":"):
        return lines[0][1:].strip()
    data = "".join(line[5:].strip() for line in lines if line.startswith("data:"))
    return json.loads(data)


async def test_events_stream_engine_events_and_keepalives(api: Any) -> None:
    admin, _, session = api
    async with session.get("/api/events") as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert await read_event(response) == "connected"
        async with aiohttp.ClientSession(admin.url, timeout=TIMEOUT) as other:
            await call(other, "POST", "/api/servers/s1/drain")
            await call(other, "PUT", "/api/servers/s0/weight", json={"weight": 4})
        async with asyncio.timeout(5):
            first, drained, third = [await read_event(response) for _ in range(3)]
        assert isinstance(first, dict) and first["kind"] == "admin_state_changed"
        assert first["server"] == "s1" and first["source"] == "admin" and first["detail"]["new"] == "drain"
        assert isinstance(drained, dict) and drained["kind"] == "drained", (
            "nothing in flight: drained at once"
        )
        assert isinstance(third, dict) and third["kind"] == "weight_changed" and third["detail"]["new"] == 4
        async with asyncio.timeout(5):
            assert await read_event(response) == "keepalive"


async def test_slow_event_clients_are_dropped_not_buffered() -> None:
    lb = make_lb()
    admin = AdminApi(lb, port=0, queue_size=4, keepalive=30)
    await admin.start()
    try:
        async with aiohttp.ClientSession(admin.url, timeout=TIMEOUT) as session:
            async with session.get("/api/events") as response:
                assert await read_event(response) == "connected"
                # Publish faster than the handler can run: the bounded queue overflows.
                for weight in range(2, 40):
                    lb.set_weight("s0", weight)
                async with asyncio.timeout(5):
                    body = await response.content.read()
                assert b"event: dropped" in body
        assert admin.dropped_clients == 1
        assert len(admin.streams) == 0
        assert not lb.events._subscribers, "the dropped client unsubscribed"
    finally:
        await admin.stop()


async def test_stop_ends_open_event_streams() -> None:
    admin = AdminApi(make_lb(), port=0)
    await admin.start()
    async with aiohttp.ClientSession(admin.url, timeout=TIMEOUT) as session:
        async with session.get("/api/events") as response:
            assert await read_event(response) == "connected"
            async with asyncio.timeout(5):
                await admin.stop()
                assert await response.content.read() == b""


# -- auth ------------------------------------------------------------------------------
async def test_token_is_required_on_every_endpoint_when_set() -> None:
    admin = AdminApi(make_lb(), port=0, token=TOKEN)
    await admin.start()
    try:
        async with aiohttp.ClientSession(admin.url, timeout=TIMEOUT) as session:
            for method, path in (
                ("GET", "/api/servers"),
                ("GET", "/metrics"),
                ("POST", "/api/servers/s0/drain"),
                ("GET", "/api/events"),
                ("GET", "/no/such/path"),
            ):
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"},
                ):
                    status, body = await call(session, method, path, headers=headers)
                    assert status == 401 and "token" in body["error"], (method, path, headers)
            assert admin.lb.require("s0").admin_state is AdminState.READY
            good = {"Authorization": f"Bearer {TOKEN}"}
            status, _ = await call(session, "POST", "/api/servers/s0/drain", headers=good)
            assert status == 200
            async with session.get("/metrics", headers=good) as response:
                assert response.status == 200
    finally:
        await admin.stop()


async def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    admin = AdminApi(make_lb(), host="0.0.0.0", port=0)
    with pytest.raises(AdminSecurityError, match="without a token"):
        await admin.start()
    assert admin.port is None, "nothing was bound"


async def test_loopback_without_a_token_is_open() -> None:
    admin = AdminApi(make_lb(), host="::1", port=0)
    try:
        await admin.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            status, _ = await call(session, "GET", f"{admin.url}/api/servers")
            assert status == 200
    finally:
        await admin.stop()
