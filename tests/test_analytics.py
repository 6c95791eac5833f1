"""Analytics rollups: per-minute counts and percentiles, late records, retention, outages."""

from __future__ import annotations

import pytest

from cloud.store import SqliteStore
from engine.accesslog import AccessRecord
from workers.analytics import AnalyticsWorker, InMemoryRollupStore, histogram_from_doc

BASE = 28_000_000 * 60  # an epoch minute boundary


def record(t: float, status: int = 200, server: str | None = "a", ms: float = 10.0) -> AccessRecord:
    return AccessRecord(t, "127.0.0.1", "GET", "/", status, server, 0, 100, ms * 0.9, ms)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryRollupStore()
        return
    sqlite = SqliteStore(tmp_path / "state.db")
    await sqlite.connect()
    yield sqlite
    await sqlite.close()


async def test_minutes_are_rolled_up_with_codes_servers_and_percentiles(store) -> None:
    clock = Clock(BASE + 150)
    worker = AnalyticsWorker(store, clock=clock)
    for i in range(90):
        worker.observe(record(BASE + i % 60, server="a" if i % 3 else "b", ms=1 + i))
    worker.observe(record(BASE + 61, status=503, server=None, ms=2))
    worker.observe(record(BASE + 62, status=404, server="b", ms=4))
    assert await worker.flush() == 2
    docs = await store.list_rollups(0)
    assert [d["minute"] for d in docs] == [BASE // 60, BASE // 60 + 1]
    first, second = docs
    assert first["requests"] == 90 and first["status"] == {"2xx": 90} and first["codes"] == {"200": 90}
    assert first["servers"]["a"]["requests"] == 60 and first["servers"]["b"]["requests"] == 30
    assert 40 <= first["p50_ms"] <= 50 and 85 <= first["p99_ms"] <= 95
    assert histogram_from_doc(first["latency"]).total == 90
    assert second["status"] == {"5xx": 1, "4xx": 1} and second["errors"] == 1
    assert set(second["servers"]) == {"b"}  # a 503 with no server counts overall only


async def test_a_late_record_updates_its_minute_instead_of_overwriting_it(store) -> None:
    clock = Clock(BASE + 30)
    worker = AnalyticsWorker(store, clock=clock)
    worker.observe(record(BASE + 1))
    await worker.flush()
    clock.now = BASE + 65
    worker.observe(record(BASE + 59))  # finished just before the minute turned
    await worker.flush()
    docs = await store.list_rollups(0)
    assert [(d["minute"], d["requests"]) for d in docs] == [(BASE // 60, 2)]


async def test_retention_prunes_old_minutes(store) -> None:
    clock = Clock(BASE)
    worker = AnalyticsWorker(store, clock=clock, retention_minutes=10)
    for minute in range(30):
        worker.observe(record(BASE + minute * 60))
    clock.now = BASE + 30 * 60
    await worker.run_once()
    minutes = [d["minute"] - BASE // 60 for d in await store.list_rollups(0)]
    assert minutes == list(range(20, 30))


class FlakyStore(InMemoryRollupStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def put_rollup(self, doc) -> None:
        if self.down:
            raise ConnectionError("store unreachable")
        await super().put_rollup(doc)


async def test_nothing_is_lost_while_the_store_is_down() -> None:
    store = FlakyStore()
    worker = AnalyticsWorker(store, clock=Clock(BASE + 200))
    for i in range(10):
        worker.observe(record(BASE + i))
    assert not await worker.run_once()
    assert "store unreachable" in worker.status()["last_error"]
    worker.observe(record(BASE + 70))
    store.down = False
    assert await worker.run_once()
    assert [d["requests"] for d in await store.list_rollups(0)] == [10, 1]


async def test_observer_registers_on_a_proxy_and_is_only_an_append() -> None:
    class Proxy:
        observers: list = []

    worker = AnalyticsWorker(InMemoryRollupStore())
    proxy = Proxy()
    worker.attach(proxy)
    worker.attach(proxy)
    assert proxy.observers == [worker.observe]
    for observer in proxy.observers:
        observer(record(BASE))
    assert worker.status()["pending"] == 1 and worker.status()["records"] == 0
    worker.detach(proxy)
    assert proxy.observers == []
