"""Access log: JSON lines written off the event loop, rotated by size."""

from __future__ import annotations

import json
import os

import aiohttp
from proxy_support import make_proxy, start_backends, wait_for

from engine.accesslog import AccessLog, AccessRecord


def record(path: str = "/x", status: int = 200) -> AccessRecord:
    return AccessRecord(1700000000.5, "127.0.0.1", "GET", path, status, "b0", 0, 14, 1.23456, 2.5)


def test_lines_are_json_with_every_field(tmp_path) -> None:
    log = AccessLog(str(tmp_path / "access.log"))
    log.write(record("/a"))
    log.write(record("/b", 503))
    assert log.flush()
    log.close()
    lines = (tmp_path / "access.log").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first == {
        "time": 1700000000.5,
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/a",
        "status": 200,
        "server": "b0",
        "bytes_in": 0,
        "bytes_out": 14,
        "upstream_ms": 1.235,
        "total_ms": 2.5,
    }
    assert second["status"] == 503
    log.write(record())  # after close: dropped silently, never raises


def test_rotation_by_size_keeps_the_backups(tmp_path) -> None:
    path = str(tmp_path / "access.log")
    log = AccessLog(path, max_bytes=2000, backups=2)
    for index in range(200):
        log.write(record(f"/{index}"))
    assert log.flush()
    log.close()
    assert os.path.exists(path + ".1") and os.path.exists(path + ".2")
    assert not os.path.exists(path + ".3")
    for name in (path, path + ".1", path + ".2"):
        assert os.path.getsize(name) <= 2000
    with open(path) as handle:
        newest = [json.loads(line)["path"] for line in handle]
    assert newest[-1] == "/199"


async def test_proxy_writes_one_line_per_request(tmp_path) -> None:
    backends = await start_backends(1)
    fx = await make_proxy(backends)
    log = AccessLog(str(tmp_path / "access.log"))
    fx.proxy.access_log = log
    try:
        async with aiohttp.ClientSession() as session:
            for index in range(5):
                async with session.get(f"{fx.url}/r{index}") as response:
                    await response.read()
        await wait_for(lambda: fx.proxy.active_requests == 0, what="requests done")
        assert log.flush()
        lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
        assert [line["path"] for line in lines] == [f"/r{i}" for i in range(5)]
        assert all(line["status"] == 200 and line["server"] == "b0" for line in lines)
    finally:
        await log.aclose()
        await fx.proxy.stop(1)
        await backends[0].stop()


async def test_records_written_on_the_loop_reach_disk_without_flush(tmp_path) -> None:
    """On an event loop records go out in batches, a timer hands each batch over."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    try:
        for index in range(3):
            log.write(record(f"/t{index}"))
        assert not path.read_text()  # still batched: nothing formatted on the loop
        await wait_for(lambda: len(path.read_text().splitlines()) == 3, what="batch on disk")
        assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == ["/t0", "/t1", "/t2"]
    finally:
        await log.aclose()
