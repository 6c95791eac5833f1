"""Both stores honour one contract: last writer wins, tombstones, sessions, rollups."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.store import SqliteStore, Store
from cloud.store.mongo import MongoStore, redact_uri
from tests.cloud_support import NxServer, nx_server  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        made: Store = SqliteStore(tmp_path / "state.db")
    else:
        nx: NxServer = request.getfixturevalue("nx_server")
        made = MongoStore(nx.uri, "lbtui_test")
    await made.connect()
    try:
        yield made
    finally:
        await made.close()


def rec(name: str, at: float, **fields: object) -> dict[str, object]:
    return {"name": name, "host": "127.0.0.1", "port": 8000, "weight": 1, "updated_at": at, **fields}


async def test_last_writer_wins_and_replays_are_idempotent(store: Store) -> None:
    assert await store.upsert_server(rec("a", 100.0, weight=5))
    assert await store.upsert_server(rec("a", 200.0, weight=7, updated_by="n2"))
    # A stale write (an old queued change replayed late) must not undo the newer one.
    assert not await store.upsert_server(rec("a", 150.0, weight=1))
    assert not await store.upsert_server(rec("a", 200.0, weight=7, updated_by="n2"))
    [server] = await store.list_servers()
    assert (server["weight"], server["updated_by"], server["updated_at"]) == (7, "n2", 200.0)


async def test_changes_include_tombstones_after_since(store: Store) -> None:
    await store.upsert_server(rec("a", 100.0))
    await store.upsert_server(rec("b", 110.0, admin_state="drain", instance_id="i-1"))
    assert await store.delete_server("a", updated_at=120.0, updated_by="n1")
    changed = await store.changes(105.0)
    assert [(c["name"], c["deleted"]) for c in changed] == [("b", False), ("a", True)]
    assert changed[0]["admin_state"] == "drain" and changed[0]["instance_id"] == "i-1"
    assert [s["name"] for s in await store.list_servers()] == ["b"]
    # An older re-add cannot resurrect a newer deletion.
    assert not await store.upsert_server(rec("a", 119.0))


async def test_settings_sessions_and_events(store: Store) -> None:
    assert await store.get_settings() == {}
    assert await store.put_settings({"algorithm": "consistent_hash", "hash_key": "path", "updated_at": 10.0})
    assert not await store.put_settings({"algorithm": "round_robin", "updated_at": 5.0})
    assert (await store.get_settings())["algorithm"] == "consistent_hash"
    now = time.time()
    await store.put_session("10.0.0.1", "a", now + 60)
    await store.put_session("10.0.0.1", "b", now + 60)  # re-pin replaces
    await store.put_session("10.0.0.2", "a", now - 1)  # already expired: not listed
    assert [(s["client"], s["server"]) for s in await store.list_sessions()] == [("10.0.0.1", "b")]
    for i in range(5):
        await store.append_event({"kind": "weight_changed", "server": "a", "i": i, "at": now + i})
    assert [e["i"] for e in await store.list_events(3)] == [2, 3, 4]


async def test_rollups_replace_by_minute_and_prune(store: Store) -> None:
    doc = {"minute": 1000, "requests": 3, "status": {"2xx": 3}, "codes": {"200": 3},
           "servers": {"127.0.0.1:8000": {"requests": 3, "p50_ms": 1.5, "p99_ms": 9.0}},
           "p50_ms": 1.5, "p99_ms": 9.0}
    await store.put_rollup(doc)
    await store.put_rollup({**doc, "requests": 4})  # same minute again: replaced, not duplicated
    await store.put_rollup({**doc, "minute": 1001, "requests": 1})
    rollups = await store.list_rollups(0)
    assert [(r["minute"], r["requests"]) for r in rollups] == [(1000, 4), (1001, 1)]
    assert rollups[0]["servers"]["127.0.0.1:8000"]["p99_ms"] == 9.0
    assert [r["minute"] for r in await store.list_rollups(1001)] == [1001]
    assert await store.prune_rollups(1001) == 1
    assert [r["minute"] for r in await store.list_rollups(0)] == [1001]


async def test_data_survives_reopen(store: Store) -> None:
    await store.upsert_server(rec("a", 100.0, weight=9, admin_state="maint"))
    await store.put_session("10.0.0.9", "a", time.time() + 60)
    await store.close()
    await store.connect()
    [server] = await store.list_servers()
    assert (server["weight"], server["admin_state"]) == (9, "maint")
    assert [s["client"] for s in await store.list_sessions()] == ["10.0.0.9"]


def test_uri_password_is_redacted() -> None:
    uri = "mongodb://alice:s3cret@db.example:27017/lbtui?authSource=admin"
    assert redact_uri(uri) == "mongodb://alice:***@db.example:27017/lbtui?authSource=admin"
    assert "s3cret" not in MongoStore(uri).describe()
    assert redact_uri("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"


async def test_unreachable_mongo_fails_fast_without_password() -> None:
    from cloud.store import StoreError
    from tests.cloud_support import free_port

    store = MongoStore(f"mongodb://bob:hunter2@127.0.0.1:{free_port()}/", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await store.connect()
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(info.value)
    await store.close()
