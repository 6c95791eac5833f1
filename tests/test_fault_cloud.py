"""Cloud faults under load: the MongoDB server killed and restarted, CloudWatch erroring.

Traffic flows through a live Gateway the whole time. The store is the nx-27017
wire-protocol server (started by ``tests/cloud_support.NxServer``); CloudWatch is a real
HTTP endpoint on loopback that answers every call with an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cloud.aws.clients import AwsClients, AwsSettings
from cloud.backend import BackendHandle, start_backend
from cloud.store.mongo import MongoStore
from engine.balancer import LoadBalancer
from engine.server import AdminState
from fault_support import CLIENT_TIMEOUT, Load, gateway_toml, listener_url, record_figures, start_gateway, wait_until
from tests.cloud_support import NxServer, nx_server  # noqa: F401  (fixture)
from workers.store_sync import StoreSync
from workers.strategist import Strategist, StrategistSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def handles() -> AsyncIterator[list[BackendHandle]]:
    started = [await start_backend(f"b{i}") for i in range(3)]
    yield started
    await asyncio.gather(*(h.stop() for h in started), return_exceptions=True)


def _mongo(nx: NxServer) -> MongoStore:
    return MongoStore(nx.uri, "lbtui_fault", timeout=0.5, client_options={"heartbeatFrequencyMS": 500})


async def test_mongodb_killed_and_restarted_under_load(
    tmp_path: Path, handles: list[BackendHandle], nx_server: NxServer  # noqa: F811
) -> None:
    gw = await start_gateway(tmp_path / "lbtui.toml", gateway_toml([(h.name, h.port) for h in handles]))
    assert gw.admin is not None
    sync = StoreSync(gw.lb, _mongo(nx_server), interval=0.2, node_id="gw", use_watch=False, max_backoff=0.5)
    peer_lb = LoadBalancer([], "round_robin")  # a second lbtui sharing the store
    peer = StoreSync(peer_lb, _mongo(nx_server), interval=0.2, node_id="peer", use_watch=False, max_backoff=0.5)
    sync.start()
    load = await Load(listener_url(gw), clients=4, rate=50).start()
    try:
        await wait_until(lambda: sync.loaded and sync.pending == 0, 10, "store seeded")
        peer.start()
        await wait_until(lambda: len(peer_lb.servers) == 3, 10, "peer loaded")
        nx_server.kill()
        killed_at = time.monotonic()
        await wait_until(lambda: not sync.connected, 10, "outage noticed")
        noticed = time.monotonic() - killed_at
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            async with session.post(f"{gw.admin.url}/api/servers/b2/drain") as response:
                assert response.status == 200
            async with session.put(f"{gw.admin.url}/api/servers/b0/weight", json={"weight": 7}) as response:
                assert response.status == 200
        queued = sync.pending
        await load.wait_for_more(150)  # routing goes on without the store
        during = load.count()
        nx_server.start()
        restarted_at = time.monotonic()
        await wait_until(lambda: sync.connected and sync.pending == 0, 15, "reconnect and replay")
        replayed = time.monotonic() - restarted_at
        await wait_until(
            lambda: peer_lb.require("b2").admin_state is AdminState.DRAIN and peer_lb.require("b0").weight == 7,
            10,
            "peer to converge",
        )
        converged = time.monotonic() - restarted_at
        await load.wait_for_more(50)
    finally:
        await load.stop()
        await sync.stop()
        await peer.stop()
        await sync.store.close()
        await peer.store.close()
        await gw.stop()
    failures = load.failures()
    record_figures(
        "MongoDB killed and restarted",
        requests=load.count(),
        requests_during_outage=during,
        client_errors=len(failures),
        seconds_to_notice_outage=round(noticed, 2),
        operator_actions_queued=queued,
        seconds_to_replay_after_restart=round(replayed, 2),
        seconds_for_peer_to_converge=round(converged, 2),
    )
    assert failures == [], failures[:5]
    assert queued >= 2


async def test_cloudwatch_erroring_keeps_weights_and_traffic(
    tmp_path: Path, handles: list[BackendHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    calls = 0

    async def broken(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503, text="<Error><Code>ServiceUnavailable</Code></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    gw = await start_gateway(tmp_path / "lbtui.toml", gateway_toml([(h.name, h.port) for h in handles]))
    for i, server in enumerate(gw.lb.servers):
        server.meta["instance_id"] = f"i-{i:03d}"
        gw.lb.set_weight(server.name, 30 + i, source="test")
    weights = {s.name: s.weight for s in gw.lb.servers}
    aws = AwsClients(
        AwsSettings(endpoint_url=endpoint, max_attempts=1, access_key_id="testing", secret_access_key="testing")
    )
    strategist = Strategist(gw.lb, aws, StrategistSettings(poll_interval=0.2))
    load = await Load(listener_url(gw), clients=4, rate=50).start()
    strategist.start()
    try:
        await wait_until(lambda: calls >= 3, 15, "three failed CloudWatch polls")
        await load.wait_for_more(100)
        status = strategist.status()
    finally:
        await strategist.stop()
        await aws.close()
        await load.stop()
        await gw.stop()
        await runner.cleanup()
    record_figures(
        "CloudWatch erroring",
        failed_polls=calls,
        weights_before=weights,
        weights_after={s.name: s.weight for s in gw.lb.servers},
        client_errors=len(load.failures()),
        worker_ok=status.get("ok"),
        last_error=str(status.get("last_error"))[:80],
    )
    assert {s.name: s.weight for s in gw.lb.servers} == weights
    assert not status.get("ok") and status.get("last_error")
    assert load.failures() == []
