"""Reports: summaries merge minutes correctly and render in every format, from a real store."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET

import pytest

from cloud.store import SqliteStore
from engine.accesslog import AccessRecord
from lbtui.cli import main
from lbtui.reporting import parse_since, render, summarize
from workers.analytics import AnalyticsWorker, InMemoryRollupStore

NOW = time.time()
HOUR0 = int(NOW // 3600) * 3600 - 2 * 3600  # two whole hours ago


async def _rollups(store) -> list[dict]:
    worker = AnalyticsWorker(store, clock=lambda: NOW)
    # Hour 0: 3 minutes, minute 1 is the peak; hour 1: 1 quiet minute with errors.
    for minute, count in ((0, 20), (1, 50), (2, 5)):
        for i in range(count):
            t = HOUR0 + minute * 60 + i % 60
            worker.observe(AccessRecord(t, "c", "GET", "/", 200, "a" if i % 2 else "b", 0, 10, 4.0, 5.0 + minute))
    for i in range(3):
        worker.observe(AccessRecord(HOUR0 + 3600 + 5, "c", "GET", "/", 502, "a", 0, 10, 90.0, 100.0))
    await worker.flush()
    return await store.list_rollups(0)


async def test_summary_finds_peaks_lulls_hours_and_merged_percentiles() -> None:
    summary = summarize(await _rollups(InMemoryRollupStore()), HOUR0 - 60, NOW)
    assert summary.total.requests == 78 and summary.total.errors == 3
    assert summary.peak_minute.start == HOUR0 + 60 and summary.peak_minute.requests == 50
    assert summary.lowest_minute.requests == 3
    assert [h.requests for h in summary.hours] == [75, 3]
    assert summary.peak_hour.start == HOUR0 and summary.lowest_hour.start == HOUR0 + 3600
    assert len(summary.days) >= 1 and sum(d.requests for d in summary.days) == 78
    hour0 = summary.hours[0]
    assert hour0.servers["a"].requests + hour0.servers["b"].requests == 75
    # Merged histograms: 20 requests at 5 ms, 50 at 6, 5 at 7. A merged p50 is 6 and p99 is 7;
    # averaging the minutes' p99s would say 6.
    assert 5.8 <= hour0.to_dict()["p50_ms"] <= 6.2 and 6.8 <= hour0.to_dict()["p99_ms"] <= 7.2
    assert summarize(await _rollups(InMemoryRollupStore()), HOUR0 + 3000, NOW).total.requests == 3


async def test_every_format_renders() -> None:
    summary = summarize(await _rollups(InMemoryRollupStore()), HOUR0 - 60, NOW)
    data = json.loads(render(summary, "json"))
    assert data["total"]["requests"] == 78 and data["peak_minute"]["requests"] == 50
    assert data["total"]["servers"]["a"]["requests"] == 40
    assert len(data["hours"]) == 2 and data["total"]["codes"] == {"200": 75, "502": 3}
    text = render(summary, "text")
    assert "peak minute" in text and "Hourly" in text and "78 in 4 minutes" in text
    markdown = render(summary, "markdown")
    assert markdown.startswith("# lbtui traffic report") and "| server | requests |" in markdown
    html = render(summary, "html")
    svg = html[html.index("<svg") : html.index("</svg>") + 6]
    root = ET.fromstring(svg)  # well-formed, self-contained
    bars = root.findall("{http://www.w3.org/2000/svg}rect[@class='requests']")
    assert len(bars) == 4 and root.find("{http://www.w3.org/2000/svg}polyline") is not None
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # no CDN, no remote assets


def test_empty_range_renders_in_every_format() -> None:
    summary = summarize([], NOW - 3600, NOW)
    for fmt in ("text", "markdown", "html", "json"):
        assert render(summary, fmt)
    assert "no traffic recorded" in render(summary, "html")


def test_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("1h", 10_000) == 6400
    assert parse_since("30m", 10_000) == 8200
    assert parse_since("1970-01-01T01:00:00", 0) == 3600
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", 0)


def test_cli_reads_the_embedded_store(tmp_path, capsys) -> None:
    path = tmp_path / "state.db"

    async def fill() -> None:
        store = SqliteStore(path)
        await store.connect()
        await _rollups(store)
        await store.close()

    asyncio.run(fill())
    out = tmp_path / "report.html"
    assert main(["report", "--store", str(path), "--since", "1d", "--format", "html", "-o", str(out)]) == 0
    assert "<svg" in out.read_text()
    assert main(["report", "--store", str(path), "--since", "1d", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["requests"] == 78
    assert main(["report", "--store", str(tmp_path / "missing.db")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["report", "--store", str(path), "--since", "soon"]) == 2
