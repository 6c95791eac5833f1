"""Access log: JSON lines written off the event loop, rotated by size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
from proxy_support import make_proxy, start_backends, wait_for

from engine.accesslog import AccessLog, AccessRecord, format_batch


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
    """Off the loop every record is its own hand-over."""
    check_rotation(tmp_path)


async def test_rotation_by_size_inside_one_batch(tmp_path) -> None:
    """On the loop the 200 records are one batch: it is cut between lines."""
    check_rotation(tmp_path)


def check_rotation(tmp_path) -> None:
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
        assert not path.read_text()  # still batched: formatted later, by a timer on the loop
        await wait_for(lambda: len(path.read_text().splitlines()) == 3, what="batch on disk")
        assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == ["/t0", "/t1", "/t2"]
    finally:
        await log.aclose()


def test_batch_format_matches_one_record_at_a_time() -> None:
    """The whole-batch formatter writes what each record's own to_json writes, for awkward
    strings too (quotes, control bytes, non-ASCII, no server) and repeated clients."""
    records = [
        record('/q"uote\\back\nline'),
        AccessRecord(1.25, "::1", "PATCH", "/ünï/\u2603?a=b", 502, None, 7, 0, 0.0, 12.0004),
        record("/plain"),
    ]
    data = format_batch([r.entry() for r in records]).decode("ascii")
    assert data.splitlines() == [r.to_json() for r in records]
    assert [json.loads(line)["path"] for line in data.splitlines()][:2] == [records[0].path, records[1].path]


def test_a_record_that_does_not_format_does_not_lose_the_batch() -> None:
    good = record("/ok").entry()
    bad = (1.0, ("127.0.0.1", "GET", "/bad", None, "b0", 0, 0), 0.0, 0.0)  # status missing
    short = (2.0, ("127.0.0.1", "GET"), 0.0, 0.0)  # a key cut short
    lines = format_batch([good, bad, good, short]).decode().splitlines()  # type: ignore[list-item]
    assert [json.loads(line).get("path") for line in lines] == ["/ok", "/bad", "/ok", None]
    assert json.loads(lines[1])["status"] is None and json.loads(lines[3])["malformed"][0] == 2.0


async def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path) -> None:
    """On the loop the three records go out as one batch, cut into three files."""
    path = str(tmp_path / "access.log")
    log = AccessLog(path, max_bytes=300, backups=3)
    log.write(record("/short"))
    log.write(record("/" + "x" * 400))
    log.write(record("/after"))
    assert log.flush()
    log.close()
    newest, middle, oldest = (
        [json.loads(line)["path"] for line in Path(name).read_text().splitlines()]
        for name in (path, path + ".1", path + ".2")
    )
    assert (oldest, middle, newest) == (["/short"], ["/" + "x" * 400], ["/after"])


def test_bytes_from_the_proxy_format_as_their_text() -> None:
    """The proxy hands method and target over as received (bytes, latin-1); repeated
    fields come from the memo, each record keeps its own times."""
    text = [
        AccessRecord(1.0 + i, "10.0.0.1", "GET", "/caf\u00e9", 200, "b0", 0, 14, 0.5 * i, 1.0 * i)
        for i in range(3)
    ]
    raw = [
        (r.time, (r.client, b"GET", "/caf\u00e9".encode("latin-1"), *r.entry()[1][3:]), *r.entry()[2:])
        for r in text
    ]
    lines = format_batch(raw).decode("ascii").splitlines()  # type: ignore[arg-type]
    assert lines == [r.to_json() for r in text]
    assert [json.loads(line)["upstream_ms"] for line in lines] == [0.0, 0.5, 1.0]


def test_the_memo_of_repeated_fields_stays_bounded() -> None:
    from engine import accesslog

    for start in range(0, 3 * accesslog._MEMO_LIMIT, 256):
        batch = [record(f"/p{start + i}").entry() for i in range(256)]
        assert format_batch(batch).count(b"\n") == 256
    assert len(accesslog._MIDDLES) <= accesslog._MEMO_LIMIT + 256
