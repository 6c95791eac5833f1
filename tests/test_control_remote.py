"""RemoteControl against the real admin API (engine/admin.py) on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from engine import LoadBalancer, Server
from engine.admin import AdminApi
from engine.server import AdminState
from lbtui.control.base import ControlError, Disconnected, EventView, Link
from lbtui.control.remote import RemoteControl

TOKEN = "s3cret-token-for-tests-0123456789"


async def until(condition: Callable[[], bool], deadline: float = 3.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@pytest.fixture
def lb() -> LoadBalancer:
    return LoadBalancer([Server("127.0.0.1", 9001 + i, name=f"web-{i + 1}") for i in range(4)],
                        algorithm="consistent_hash")


@pytest.fixture
async def admin(lb: LoadBalancer) -> AsyncIterator[AdminApi]:
    api = AdminApi(lb, host="127.0.0.1", port=0, token=TOKEN, keepalive=1.0)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def remote(admin: AdminApi) -> AsyncIterator[RemoteControl]:
    control = RemoteControl(admin.url, TOKEN, timeout=2.0)
    await control.start()
    try:
        yield control
    finally:
        await control.close()


async def test_reads_match_the_engine(lb: LoadBalancer, remote: RemoteControl) -> None:
    servers = await remote.servers()
    assert [s.name for s in servers] == ["web-1", "web-2", "web-3", "web-4"]
    assert servers[0].address == "127.0.0.1:9001" and servers[0].available
    totals = await remote.totals()
    assert (totals.algorithm, totals.hash_key, totals.total) == ("consistent_hash", "client_ip", 4)
    ring = await remote.ring(256)
    assert ring.kind == "ring" and 0 < len(ring.points) <= 256
    assert sum(ring.shares.values()) == pytest.approx(1.0)
    location = await remote.locate("user/42?x=1 y")
    want = lb.locate("user/42?x=1 y")
    assert (location.owner, location.fallbacks, location.serving) == (want["owner"], want["fallbacks"],
                                                                      want["serving"])
    assert remote.link is Link.CONNECTED


async def test_actions_change_the_engine_and_events_stream_back(lb: LoadBalancer, remote: RemoteControl) -> None:
    events: list[EventView] = []
    remote.subscribe(events.append)
    await until(lambda: remote.link is Link.CONNECTED and bool(remote._stream))
    await asyncio.sleep(0.1)  # the stream subscribes on the server side once connected
    await remote.drain("web-2")
    assert lb.require("web-2").admin_state is AdminState.DRAIN
    await remote.maint("web-2")
    await remote.ready("web-2")
    assert lb.require("web-2").admin_state is AdminState.READY
    await remote.set_health("web-3", False)
    assert not lb.require("web-3").healthy
    await remote.set_weight("web-1", 4)
    assert lb.require("web-1").weight == 4
    await remote.add_server("web-9", "127.0.0.1", 9009, 2)
    assert lb.require("web-9").weight == 2
    await remote.remove_server("web-9")
    assert lb.get_server("web-9") is None
    await remote.set_algorithm("maglev")
    assert lb.algorithm == "maglev"
    await remote.set_algorithm("consistent_hash", "header:x-user")
    assert str(lb.hash_key) == "header:x-user"
    await until(lambda: any(e.kind == "server_removed" for e in events))
    kinds = [e.kind for e in events]
    assert "admin_state_changed" in kinds and "weight_changed" in kinds and "health_changed" in kinds


async def test_refusals_are_control_errors_with_the_reason(remote: RemoteControl) -> None:
    with pytest.raises(ControlError, match="already exists"):
        await remote.add_server("web-1", "127.0.0.1", 9001, 1)
    with pytest.raises(ControlError, match="no server|not found|unknown"):
        await remote.drain("nope")
    with pytest.raises(ControlError, match="weight"):
        await remote.set_weight("web-1", 5000)
    with pytest.raises(ControlError, match="algorithm"):
        await remote.set_algorithm("fastest")


async def test_wrong_token_is_refused(admin: AdminApi) -> None:
    control = RemoteControl(admin.url, "wrong-token-wrong-token", timeout=2.0)
    await control.start()
    try:
        with pytest.raises(ControlError):
            await control.servers()
    finally:
        await control.close()


async def test_lost_balancer_is_reported_not_raised_to_the_operator(lb: LoadBalancer) -> None:
    api = AdminApi(lb, host="127.0.0.1", port=0)
    await api.start()
    control = RemoteControl(api.url, timeout=1.0)
    events: list[EventView] = []
    control.subscribe(events.append)
    await control.start()
    try:
        await control.servers()
        assert control.link is Link.CONNECTED
        await api.stop()
        with pytest.raises(Disconnected):
            await control.servers()
        assert control.link is Link.DISCONNECTED
        await until(lambda: any(e.kind == "disconnected" for e in events))
        # The balancer comes back on the same port: the next call and the stream recover.
        again = AdminApi(lb, host="127.0.0.1", port=api.port or 0)
        await again.start()
        try:
            await until(lambda: any(e.kind == "reconnected" for e in events), deadline=8.0)
            assert [s.name for s in await control.servers()][:1] == ["web-1"]
            assert control.link is Link.CONNECTED
        finally:
            await again.stop()
    finally:
        await control.close()
