"""Store sync with real stores: two balancers share nx-27017; restarts; a killed MongoDB."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloud.store import SqliteStore, Store
from cloud.store.mongo import MongoStore
from engine import events as ev
from engine.balancer import LoadBalancer
from engine.events import Event
from engine.server import AdminState, Server
from tests.cloud_support import NxServer, nx_server, wait_for  # noqa: F401  (fixture)
from workers.store_sync import StoreSync


def pool() -> list[Server]:
    return [Server("127.0.0.1", 9001 + i, weight=10, name=f"s{i}") for i in range(3)]


def mongo(nx: NxServer) -> MongoStore:
    # Short timeouts so an outage is noticed (and recovery found) quickly in tests.
    return MongoStore(nx.uri, "lbtui_sync", timeout=0.5, client_options={"heartbeatFrequencyMS": 500})


def routes(lb: LoadBalancer, keys: int = 2000) -> list[str | None]:
    picks = []
    for i in range(keys):
        server = lb.route({"key": f"user-{i}"})
        picks.append(server.name if server else None)
    return picks


def record_events(lb: LoadBalancer) -> list[Event]:
    seen: list[Event] = []
    lb.events.subscribe(seen.append)
    return seen


async def test_two_instances_converge_within_two_seconds(nx_server: NxServer) -> None:  # noqa: F811
    use_watch = None  # detect: nx-27017 reports a standalone server, so this is the polling path
    lb_a = LoadBalancer(pool(), "consistent_hash")
    lb_b = LoadBalancer([], "round_robin")
    sync_a = StoreSync(lb_a, mongo(nx_server), node_id="a", use_watch=use_watch)
    sync_b = StoreSync(lb_b, mongo(nx_server), node_id="b", use_watch=use_watch)
    sync_a.start()
    try:
        await wait_for(lambda: sync_a.loaded and sync_a.pending == 0, 5, "node a to seed the store")
        sync_b.start()
        await wait_for(lambda: len(lb_b.servers) == 3 and lb_b.algorithm == "consistent_hash", 5,
                       "node b to load servers and algorithm")
        assert sync_a.mode == sync_b.mode == "polling"
        seen_a = record_events(lb_a)

        lb_a.set_weight("s1", 30)
        started = time.monotonic()
        await wait_for(lambda: lb_b.require("s1").weight == 30, 2.0, "weight change on b")
        lb_b.drain("s2")
        await wait_for(lambda: lb_a.require("s2").admin_state is AdminState.DRAIN, 2.0, "drain on a")
        elapsed = time.monotonic() - started
        assert elapsed < 4.0

        # Both route every key to the same server.
        picks_a, picks_b = routes(lb_a), routes(lb_b)
        assert picks_a == picks_b
        assert set(picks_a) == {"s0", "s1"}  # s2 is draining on both
        # Applying remote changes did not echo: a's own weight change came back as nothing,
        # and b's drain arrived exactly once.
        from_store = [e for e in seen_a if e.source == "store"]
        assert [(e.kind, e.server) for e in from_store] == [(ev.ADMIN_STATE_CHANGED, "s2")]
        await wait_for(lambda: sync_a.pending == 0 and sync_b.pending == 0, 3, "queues to drain")
        assert sync_a.status()["connected"] and sync_a.status()["ok"]
    finally:
        await sync_a.stop()
        await sync_b.stop()
        await sync_a.store.close()
        await sync_b.store.close()


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
async def test_restart_restores_servers_weights_states_and_sessions(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    def make_store() -> Store:
        if kind == "sqlite":
            return SqliteStore(tmp_path / "state.db")
        return mongo(request.getfixturevalue("nx_server"))

    lb = LoadBalancer(pool(), "consistent_hash", sticky=True, sticky_method="ip", session_ttl=600)
    sync = StoreSync(lb, make_store(), interval=0.1, node_id="one")
    sync.start()
    await wait_for(lambda: sync.loaded, 5, "first load")
    lb.set_weight("s0", 7)
    lb.maint("s1")
    lb.add_server(Server("127.0.0.1", 9100, weight=3, name="extra"))
    pins = {f"10.0.0.{i}": lb.route({"client_ip": f"10.0.0.{i}"}).name for i in range(20)}  # type: ignore[union-attr]
    await wait_for(lambda: sync.pending == 0, 5, "everything pushed")
    await sync.stop()
    await sync.store.close()

    # A fresh process: nothing but the store.
    lb2 = LoadBalancer([], "round_robin", sticky=True, sticky_method="ip", session_ttl=600)
    sync2 = StoreSync(lb2, make_store(), interval=0.1, node_id="two")
    sync2.start()
    try:
        await wait_for(lambda: sync2.loaded, 5, "reload")
        assert {s.name: (s.weight, s.admin_state.value) for s in lb2.servers} == {
            "s0": (7, "ready"), "s1": (10, "maint"), "s2": (10, "ready"), "extra": (3, "ready")}
        assert lb2.algorithm == "consistent_hash"
        assert lb2.affinity is not None
        restored = {client: server for client, server, _ in lb2.affinity.items()}
        assert restored == pins
        # The restored pins are honoured by routing.
        assert all(lb2.route({"client_ip": ip}).name == name for ip, name in pins.items())  # type: ignore[union-attr]
    finally:
        await sync2.stop()
        await sync2.store.close()


async def test_mongo_killed_mid_run_queues_and_converges(nx_server: NxServer) -> None:  # noqa: F811
    lb_a = LoadBalancer(pool(), "consistent_hash")
    lb_b = LoadBalancer([], "consistent_hash")
    sync_a = StoreSync(lb_a, mongo(nx_server), interval=0.2, node_id="a", use_watch=False, max_backoff=0.5)
    sync_b = StoreSync(lb_b, mongo(nx_server), interval=0.2, node_id="b", use_watch=False, max_backoff=0.5)
    sync_a.start()
    try:
        await wait_for(lambda: sync_a.loaded and sync_a.pending == 0, 5, "seed")
        sync_b.start()
        await wait_for(lambda: len(lb_b.servers) == 3, 5, "b loaded")

        nx_server.kill()
        await wait_for(lambda: not sync_a.connected and not sync_b.connected, 10, "both to notice the outage")
        status = sync_a.status()
        assert status["last_error"] and "mongodb" in status["last_error"] and not status["ok"]

        # Operator actions during the outage: all accepted locally, routing continues.
        lb_a.set_weight("s0", 25)
        lb_a.drain("s2")
        lb_a.add_server(Server("127.0.0.1", 9200, weight=4, name="s3"))
        lb_a.remove_server("s1")
        assert sync_a.pending >= 4
        assert all(name in {"s0", "s3"} for name in routes(lb_a, 200))

        nx_server.start()  # same port, same data file
        await wait_for(lambda: sync_a.connected and sync_a.pending == 0, 15, "a to reconnect and replay")
        await wait_for(lambda: {s.name for s in lb_b.servers} == {"s0", "s2", "s3"}, 5, "b to converge")
        assert lb_b.require("s0").weight == 25
        assert lb_b.require("s2").admin_state is AdminState.DRAIN
        assert routes(lb_a) == routes(lb_b)
        assert sync_a.status()["ok"]
    finally:
        await sync_a.stop()
        await sync_b.stop()
        await sync_a.store.close()
        await sync_b.store.close()


async def test_last_writer_wins_when_both_change_one_server(tmp_path: Path) -> None:
    store_path = tmp_path / "shared.db"
    lb_a, lb_b = LoadBalancer(pool()), LoadBalancer(pool())
    clock = {"a": 1000.0, "b": 2000.0}  # b's clock runs ahead: its writes are the later ones
    sync_a = StoreSync(lb_a, SqliteStore(store_path), interval=0.1, node_id="a", clock=lambda: clock["a"])
    sync_b = StoreSync(lb_b, SqliteStore(store_path), interval=0.1, node_id="b", clock=lambda: clock["b"])
    for sync in (sync_a, sync_b):
        sync.start()
    try:
        await wait_for(lambda: sync_a.loaded and sync_b.loaded, 5, "load")
        lb_a.set_weight("s0", 3)
        lb_b.set_weight("s0", 8)
        await wait_for(lambda: lb_a.require("s0").weight == 8 and sync_a.pending == sync_b.pending == 0, 5,
                       "b's later write to win on a")
        assert lb_b.require("s0").weight == 8
    finally:
        for sync in (sync_a, sync_b):
            await sync.stop()
            await sync.store.close()


async def test_a_rejected_stale_write_is_logged_and_the_winner_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "shared.db")
    lb = LoadBalancer(pool())
    # A long interval: only the local change wakes the worker, so it writes before it reads.
    sync = StoreSync(lb, store, interval=60, node_id="a", clock=lambda: 1000.0)
    sync.start()
    try:
        await wait_for(lambda: sync.loaded and sync.pending == 0, 5, "load")
        other = SqliteStore(tmp_path / "shared.db")
        await other.connect()
        await other.upsert_server({"name": "s0", "host": "127.0.0.1", "port": 9001, "weight": 8,
                                   "updated_at": 5000.0, "updated_by": "b"})
        await other.close()
        lb.set_weight("s0", 3)
        await wait_for(lambda: lb.require("s0").weight == 8, 5, "the newer remote write to win")
        assert sync.conflicts == 1
        assert "conflict on s0" in caplog.text
    finally:
        await sync.stop()
        await store.close()
