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


async def test_status_keeps_the_last_hour_with_its_peak_and_lowest_minute() -> None:
    import json

    clock = Clock(BASE + 70 * 60 + 10)  # inside minute 70; minutes 0..9 fall out of the hour
    worker = AnalyticsWorker(InMemoryRollupStore(), clock=clock)
    for minute in range(71):
        count = 1 + minute % 7 + (20 if minute == 40 else 0)
        for n in range(count):
            status = 503 if (minute == 40 and n < 3) else 200
            worker.observe(record(BASE + minute * 60 + n, status=status, server="a" if n % 3 else "b", ms=2 + n))
    await worker.flush()
    status = worker.status()
    json.dumps(status)  # the admin API serves it as it is
    first = BASE // 60
    assert status["window"] == {"first": first + 11, "last": first + 70, "current": first + 70}
    recent = status["recent"]
    assert [m["minute"] - first for m in recent] == list(range(11, 71))
    docs = {d["minute"]: d for d in await worker.store.list_rollups(0)}
    for summary in recent:  # the same figures the store keeps
        doc = docs[summary["minute"]]
        assert (summary["requests"], summary["errors"], summary["p50_ms"], summary["p99_ms"]) == (
            doc["requests"], doc["errors"], doc["p50_ms"], doc["p99_ms"])
        assert summary["servers"] == {name: s["requests"] for name, s in doc["servers"].items()}
    assert status["peak_minute"] == {"minute": first + 40, "requests": 1 + 40 % 7 + 20, "errors": 3}
    # The quietest finished minute: minute 70 is still running (and has 1 request) so it does not count.
    assert status["lowest_minute"] == {"minute": first + 14, "requests": 1, "errors": 0}


async def test_recent_is_built_once_per_fold_and_follows_the_clock() -> None:
    clock = Clock(BASE + 30)
    worker = AnalyticsWorker(InMemoryRollupStore(), clock=clock)
    worker.observe(record(BASE + 1))
    worker.fold()
    cached = worker.status()["recent"]
    assert worker.status()["recent"] is cached  # polled four times a second: not rebuilt
    worker.fold()  # nothing new: still the same
    assert worker.status()["recent"] is cached
    worker.observe(record(BASE + 2))
    worker.fold()
    assert worker.status()["recent"] is not cached and worker.status()["recent"][0]["requests"] == 2
    clock.now = BASE + 61 * 60  # an hour later without traffic: the minute leaves the window
    status = worker.status()
    assert status["recent"] == [] and status["peak_minute"] is None and status["lowest_minute"] is None
    assert status["window"]["last"] == BASE // 60 + 61


def test_recent_minutes_list_at_most_the_busiest_servers() -> None:
    from workers.analytics import OTHER, RECENT_SERVERS

    worker = AnalyticsWorker(InMemoryRollupStore(), clock=Clock(BASE + 30))
    for i in range(RECENT_SERVERS + 5):
        for _ in range(2 if i < RECENT_SERVERS else 1):
            worker.observe(record(BASE + 1, server=f"s{i:03d}"))
    worker.fold()
    servers = worker.status()["recent"][0]["servers"]
    assert len(servers) == RECENT_SERVERS + 1 and servers[OTHER] == 5
    assert sum(servers.values()) == worker.status()["recent"][0]["requests"]


async def test_first_write_waits_an_interval_and_a_stop_still_flushes() -> None:
    import asyncio

    store = InMemoryRollupStore()
    worker = AnalyticsWorker(store, interval=30.0, clock=Clock(BASE + 30))
    worker.start()
    worker.observe(record(BASE + 1))
    await asyncio.sleep(0)  # the task is in its first wait, not writing
    assert worker.runs == 0 and store.rollups == {}
    async with asyncio.timeout(3):  # stop cuts the wait short, and teardown writes what is left
        await worker.stop()
    assert [d["requests"] for d in await store.list_rollups(0)] == [1]
