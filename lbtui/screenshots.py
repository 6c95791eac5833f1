"""A deterministic demo state for snapshot tests and ``screenshots/*.svg``.

Live figures (requests/s, the sparklines, timestamps) depend on the clock, so the demo
control freezes them; everything else (servers, states, ring, key finder) is the real
engine. Run ``python -m lbtui.screenshots [DIR]`` to rewrite the screenshots.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine.accesslog import AccessRecord
from engine.balancer import LoadBalancer
from engine.server import Server
from lbtui.app import LbtuiApp
from lbtui.control.base import EventCallback, EventView, ServerView, TotalsView
from lbtui.control.inprocess import InProcessControl
from workers.analytics import AnalyticsWorker, InMemoryRollupStore
from workers.base import WorkerState

SIZE = (120, 36)
DEMO_KEY = "user-1842"
EPOCH = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC: a fixed time for the demo log

RPS = {"web-1": 212.0, "web-2": 143.5, "web-3": 0.0, "web-4": 0.0, "web-5": 71.2, "web-6": 70.4}
HISTORY = {
    "web-1": (180, 190, 205, 199, 210, 221, 215, 208, 212, 219, 214, 212),
    "web-2": (150, 148, 151, 146, 140, 139, 144, 147, 142, 145, 141, 143),
    "web-3": (70, 66, 58, 41, 30, 22, 12, 6, 2, 0, 0, 0),
    "web-4": (72, 70, 71, 40, 0, 0, 0, 0, 0, 0, 0, 0),
    "web-5": (60, 64, 69, 70, 72, 71, 73, 70, 69, 71, 72, 71),
    "web-6": (0, 0, 0, 0, 0, 0, 12, 30, 48, 60, 66, 70),
}
SCRIPT = (
    ("server_added", "web-6", {"address": "127.0.0.1:8006", "weight": 1}, "operator"),
    ("admin_state_changed", "web-3", {"old": "ready", "new": "drain"}, "operator"),
    ("health_changed", "web-4", {"state": "down", "error": "connection refused"}, "health"),
    ("weight_changed", "web-1", {"old": 2, "new": 3}, "strategist"),
    ("store_synced", None, {"servers": 6}, "store"),
)


ANALYTICS_NOW = EPOCH + 3600 + 30  # 01:00:30 UTC: the demo hour is 00:01 to 01:00
SHARES = {"web-1": 6, "web-2": 4, "web-3": 3, "web-5": 2, "web-6": 1}


def demo_analytics() -> AnalyticsWorker:
    """A real analytics worker fed an hour of made-up but deterministic traffic.

    A slow wave (lowest at 00:33) with a burst at 00:41 (the peak, with 5xx), a dip at
    00:17, a few minutes with errors, and web-4 gone since it went down at 00:30.
    """
    worker = AnalyticsWorker(InMemoryRollupStore(), clock=lambda: ANALYTICS_NOW)
    first = int(EPOCH // 60) + 1
    for i in range(60):
        minute = first + i
        count = int(90 + 60 * math.sin(i / 7) + (180 if i == 40 else 0) - (70 if i == 16 else 0))
        count = count // 3 if i == 59 else count  # the minute still running
        errors = {40: 9, 23: 2, 52: 1}.get(i, 0)
        names = [n for n, share in SHARES.items() for _ in range(share)] + (["web-4"] * 2 if i < 30 else [])
        for n in range(count):
            server = names[(n * 7 + i) % len(names)]
            slow = 0.0 if n % 40 else 25.0 + (i % 9)
            total = 2.0 + (i % 11) * 0.3 + slow + (40.0 if i == 40 and n % 5 == 0 else 0.0)
            status = 503 if n < errors else 200
            worker.observe(AccessRecord(minute * 60 + n * 59 / max(count, 1), "127.0.0.1", "GET", "/books",
                                        status, server, 0, 512, total * 0.9, total))
    worker.fold()
    worker.state = WorkerState.RUNNING  # frozen demo: shown as the running worker it stands for
    return worker


def demo_balancer() -> LoadBalancer:
    """Six servers in every state an operator meets, with real latency histograms."""
    servers = [
        Server("127.0.0.1", 8001, 3, name="web-1"),
        Server("127.0.0.1", 8002, 2, name="web-2"),
        Server("127.0.0.1", 8003, 2, name="web-3"),
        Server("127.0.0.1", 8004, 1, name="web-4"),
        Server("127.0.0.1", 8005, 1, name="web-5"),
        Server("127.0.0.1", 8006, 1, name="web-6"),
    ]
    lb = LoadBalancer(servers, algorithm="consistent_hash", hash_key="header:x-user")
    for i, server in enumerate(servers):
        for n in range(40 * (6 - i)):
            lb._count(server)  # counted as routed, without the clock-dependent policies
            lb.begin(server)
            lb.finish(server, 500 if n % 97 == 5 else 200, 0.002 + 0.0005 * i + (0.03 if n % 50 == 0 else 0.0))
    lb.drain("web-3")
    lb.set_health("web-4", False)
    lb.report_check(lb.require("web-4"), True)  # "down 1/2 ok"
    lb.report_check(lb.require("web-5"), False, "timeout")  # "up 1/3 fails"
    return lb


class DemoControl(InProcessControl):
    """The real engine with its clock-dependent figures frozen."""

    async def servers(self) -> list[ServerView]:
        views = await super().servers()
        return [replace(v, rps=RPS.get(v.name, 0.0), rps_history=tuple(map(float, HISTORY.get(v.name, ()))))
                for v in views]

    async def totals(self) -> TotalsView:
        totals = await super().totals()
        totals.rps = sum(RPS.values())
        return totals

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        for i, (kind, server, detail, source) in enumerate(SCRIPT):
            callback(EventView(kind, server, detail, source, EPOCH + 60 * i))
        return super().subscribe(callback)


def demo_clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


def demo_app() -> LbtuiApp:
    analytics = demo_analytics()
    control = DemoControl(
        demo_balancer(),
        listeners=("http://127.0.0.1:8080",),
        status=lambda: {"components": {"store": {"state": "sqlite"}, "health": {"state": "running"},
                                       "strategist": {"state": "off"}, "analytics": analytics.status()}},
    )
    return LbtuiApp(control, title="lbtui demo", log_clock=demo_clock)


async def settle(app: LbtuiApp, pilot: object, until: Callable[[], bool] | None = None, deadline: float = 5.0) -> None:
    """Wait (with a deadline) until the app has drawn at least once and ``until`` holds."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if app.refreshes >= 1 and (until is None or until()):
            break
        await pilot.pause(0.02)
    else:
        raise TimeoutError("the demo app did not settle")
    await pilot.pause()


async def open_key_finder(app: LbtuiApp, pilot: object, key: str = DEMO_KEY) -> None:
    from textual.pilot import Pilot

    from lbtui.widgets.key_finder import KeyFinder

    assert isinstance(pilot, Pilot)
    await settle(app, pilot)
    await pilot.press("e", *key)
    await settle(app, pilot, lambda: isinstance(app.screen, KeyFinder) and app.screen.location is not None
                 and app.screen.location.key == key)


async def open_analytics(app: LbtuiApp, pilot: object) -> None:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await settle(app, pilot)
    draws = app.analytics_panel.draws
    await pilot.press("v")
    await settle(app, pilot, lambda: app.analytics_panel.draws > draws)


async def write_screenshots(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("main", "key_finder", "help", "analytics"):
        app = demo_app()
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            if name == "key_finder":
                await open_key_finder(app, pilot)
            elif name == "analytics":
                await open_analytics(app, pilot)
            elif name == "help":
                await pilot.press("question_mark")
                await pilot.pause(0.1)
            path = directory / f"{name}.svg"
            path.write_text(app.export_screenshot(title=f"lbtui: {name.replace('_', ' ')}"), encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "screenshots"
    for path in asyncio.run(write_screenshots(directory)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
