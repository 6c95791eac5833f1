"""The analytics view: a real AnalyticsWorker's figures, in the app and over the admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from cloud.backend import BackendHandle, start_backend
from cloud.store import SqliteStore
from engine import LoadBalancer, Server
from engine.accesslog import AccessRecord
from engine.admin import AdminApi
from engine.config import Config
from engine.gateway import Gateway
from engine.server import AdminState
from lbtui.app import LbtuiApp
from lbtui.control.base import AnalyticsView
from lbtui.control.inprocess import InProcessControl
from lbtui.control.remote import RemoteControl
from lbtui.screenshots import SIZE, demo_app, open_analytics
from lbtui.widgets.analytics_view import render_analytics
from lbtui.widgets.palette import ColourBook
from tests.test_tui_app import log_text, ready, until
from workers.analytics import AnalyticsWorker
from workers.runtime import attach

NOW = 1_767_229_230.0  # 01:00:30 UTC on 2026-01-01
FIRST = int(NOW // 60) - 59


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def traffic(worker: AnalyticsWorker) -> None:
    """Sixty minutes: a wave, a peak at minute 40 with 5xx, web-3 only in the first half."""
    for i in range(60):
        count = 10 + (i * 7) % 23 + (50 if i == 40 else 0)
        for n in range(count):
            server = ("web-1", "web-2", "web-1", "web-3" if i < 30 else "web-2")[n % 4]
            status = 502 if i == 40 and n < 4 else 200
            worker.observe(AccessRecord((FIRST + i) * 60 + n % 60, "127.0.0.1", "GET", f"/k/{n}", status, server,
                                        0, 64, 1.0 + n % 9, 1.5 + n % 9))


class CountingControl(InProcessControl):
    """Counts the analytics reads, to prove the view is not fetched while hidden."""

    calls = 0

    async def analytics(self) -> AnalyticsView:
        self.calls += 1
        return await super().analytics()


def panel_text(app: LbtuiApp) -> str:
    size = app.analytics_panel.content_size
    return render_analytics(app.analytics_panel.view, size.width, size.height, app.colours, app._minute_clock).plain


async def test_the_view_shows_the_workers_figures(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.connect()
    worker = AnalyticsWorker(store, clock=Clock(NOW))
    traffic(worker)
    assert await worker.run_once()
    lb = LoadBalancer([Server("127.0.0.1", 9001 + i, name=f"web-{i + 1}") for i in range(3)])
    control = CountingControl(lb, status=lambda: {"components": {"analytics": worker.status()}})
    app = LbtuiApp(control, log_clock=lambda at: time.strftime("%H:%M:%S", time.gmtime(at)))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            refreshes = app.refreshes
            await until(pilot, lambda: app.refreshes >= refreshes + 3)
            assert control.calls == 0  # hidden: never fetched
            await pilot.press("v")
            await until(pilot, lambda: app.analytics_panel.view.available)
            assert app.table.region.area == 0 and app.analytics_panel.region.area > 0  # it took their place

            # What the worker rolled up into the store is what the view says.
            docs = await store.list_rollups(0)
            total = sum(d["requests"] for d in docs)
            errors = sum(d["errors"] for d in docs)
            peak = max(docs, key=lambda d: d["requests"])
            lowest = min((d for d in docs if d["minute"] < int(NOW // 60)), key=lambda d: (d["requests"], d["minute"]))
            view = app.analytics_panel.view
            assert (view.requests, view.errors) == (total, errors) == (1_310, 4)
            assert (view.peak.minute, view.peak.requests) == (peak["minute"], peak["requests"])
            assert (view.lowest.minute, view.lowest.requests) == (lowest["minute"], lowest["requests"])
            per_server: dict[str, int] = {}
            for doc in docs:
                for name, figures in doc["servers"].items():
                    per_server[name] = per_server.get(name, 0) + figures["requests"]
            assert view.servers == per_server
            assert [m.p99_ms for m in view.minutes] == [d["p99_ms"] for d in docs]
            text = panel_text(app)
            assert f"{total:,} req" in text and f"errors {errors} (0.31%)" in text
            assert f"▲ peak 00:41 {peak['requests']}/min" in text
            assert f"▼ lowest {time.strftime('%H:%M', time.gmtime(lowest['minute'] * 60))}" in text
            for name, count in per_server.items():
                assert f"{name} {count / total * 100:.1f}%" in text
            assert f"max {max(d['p99_ms'] for d in docs):.1f}" in text

            # At most one redraw a second, however often the screen refreshes.
            draws, started, refreshes = app.analytics_panel.draws, time.monotonic(), app.refreshes
            await until(pilot, lambda: app.refreshes >= refreshes + 4)
            assert app.analytics_panel.draws - draws <= (time.monotonic() - started) / 1.0 + 1

            # The table's keys are off while it is hidden, and back with it.
            await pilot.press("d")
            assert app.check_action("drain", ()) is False and "drain web-1" not in log_text(app)
            assert lb.require("web-1").admin_state is AdminState.READY
            await pilot.press("v")
            await until(pilot, lambda: app.table.region.area > 0)
            calls = control.calls
            await pilot.press("d")
            await until(pilot, lambda: lb.require("web-1").admin_state is AdminState.DRAIN)
            assert control.calls == calls
    finally:
        await store.close()


async def test_without_a_worker_the_view_says_why() -> None:
    lb = LoadBalancer([Server("127.0.0.1", 9001, name="web-1")])
    app = LbtuiApp(InProcessControl(lb, status=lambda: {"components": {}}))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(app, pilot)
        await pilot.press("v")
        await until(pilot, lambda: "no analytics worker" in app.analytics_panel.view.reason)
        assert "analytics unavailable: no analytics worker" in panel_text(app)


def test_analytics_view(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: open_analytics(app, pilot))


def test_analytics_view_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()
    assert snap_compare(app, terminal_size=(80, 24), run_before=lambda pilot: open_analytics(app, pilot))


# -- over the admin API ------------------------------------------------------------------
async def wait_for(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def backends() -> AsyncIterator[list[BackendHandle]]:
    handles = [await start_backend(f"b{i}") for i in range(2)]
    yield handles
    await asyncio.gather(*(h.stop() for h in handles), return_exceptions=True)


async def test_remote_analytics_through_a_real_gateway(tmp_path: Path, backends: list[BackendHandle]) -> None:
    path = tmp_path / "lbtui.toml"
    servers = "".join(f'[[servers]]\nname = "{b.name}"\nhost = "127.0.0.1"\nport = {b.port}\n' for b in backends)
    path.write_text(f'[[listeners]]\nname = "web"\nport = 0\n\n[admin]\nport = 0\n\n'
                    f'[store]\npath = "{tmp_path / "state.db"}"\n\n{servers}')
    gateway = Gateway(Config.load(path), stop_grace=5)
    await gateway.start()
    control: RemoteControl | None = None
    try:
        await attach(gateway)  # the real wiring: the analytics worker observes the listener
        served: dict[str, int] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for n in range(30):
                async with session.get(f"http://127.0.0.1:{gateway.listeners[0].port}/echo?n={n}") as response:
                    assert response.status == 200
                    name = response.headers["X-Served-By"]
                    served[name] = served.get(name, 0) + 1
        worker = gateway.components["analytics"].__self__  # type: ignore[attr-defined]
        assert isinstance(worker, AnalyticsWorker)
        await wait_for(lambda: worker.records + len(worker._pending) == 30)  # observed after the reply
        worker.fold()  # what its next step does first; synchronous, so no race with the task
        assert worker.status()["ok"], worker.status()["last_error"]  # no write before the store is open
        assert gateway.admin is not None
        control = RemoteControl(gateway.admin.url, timeout=3.0)
        await control.start()
        view = await control.analytics()
        assert view.available and view.requests == 30 and view.errors == 0
        assert view.servers == served
        assert len(view.minutes) == 60 and view.peak is not None
        assert view == AnalyticsView.from_status(worker.status())  # the worker's own figures
    finally:
        if control is not None:
            await control.close()
        await gateway.stop()


async def test_remote_analytics_without_a_worker_says_why() -> None:
    lb = LoadBalancer([Server("127.0.0.1", 9001, name="web-1")])
    api = AdminApi(lb, host="127.0.0.1", port=0)
    await api.start()
    control = RemoteControl(api.url, timeout=2.0)
    await control.start()
    try:
        view = await control.analytics()
        assert not view.available and "no analytics worker" in view.reason
    finally:
        await control.close()
        await api.stop()


def test_a_status_from_an_older_or_broken_worker_is_a_reason_not_a_crash() -> None:
    assert "reports no recent window" in AnalyticsView.from_status({"state": "running"}).reason
    assert AnalyticsView.from_status({"error": "status unavailable: ZeroDivisionError"}).reason.startswith("status")
    broken = AnalyticsView.from_status({"window": {"first": "x"}, "recent": []})
    assert "unreadable" in broken.reason
    text = render_analytics(broken, 78, 14, ColourBook(), lambda at: "00:00").plain
    assert text.startswith("analytics unavailable")
