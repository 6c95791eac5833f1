"""The operator's terminal driven with Pilot over a real LoadBalancer (InProcessControl)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from engine import LoadBalancer, Server
from engine.balancer import ALGORITHMS
from engine.server import AdminState
from lbtui.app import LbtuiApp
from lbtui.control.inprocess import InProcessControl
from lbtui.widgets.add_server_modal import AddServerModal
from lbtui.widgets.confirm_modal import ConfirmModal
from lbtui.widgets.key_finder import KeyFinder

SIZE = (120, 40)


def make_lb(n: int = 4, algorithm: str = "consistent_hash") -> LoadBalancer:
    return LoadBalancer([Server("127.0.0.1", 9001 + i, name=f"web-{i + 1}") for i in range(n)], algorithm=algorithm)


async def until(pilot: Pilot, condition: Callable[[], bool], deadline: float = 3.0) -> None:
    """Wait for a condition with a deadline (no sleep-and-hope)."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await pilot.pause(0.02)


def log_text(app: LbtuiApp) -> str:
    return "\n".join(strip.text for strip in app.log_pane.lines)


async def ready(app: LbtuiApp, pilot: Pilot) -> None:
    await until(pilot, lambda: app.refreshes >= 1 and app.table.row_count == len(app.views) > 0)


async def test_table_shows_every_server_and_cursor_moves_with_vim_keys() -> None:
    lb = make_lb()
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.table.row_count == 4
        assert app.table.selected == "web-1"
        await pilot.press("j", "j")
        assert app.table.selected == "web-3"
        await pilot.press("k")
        assert app.table.selected == "web-2"
        await pilot.press("down")
        assert app.table.selected == "web-3"


async def test_keys_change_the_engine_and_are_logged() -> None:
    lb = make_lb()
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("j", "d")  # drain web-2
        await until(pilot, lambda: lb.require("web-2").admin_state is AdminState.DRAIN)
        await pilot.press("m")
        await until(pilot, lambda: lb.require("web-2").admin_state is AdminState.MAINT)
        await pilot.press("r")
        await until(pilot, lambda: lb.require("web-2").admin_state is AdminState.READY)
        await pilot.press("f")
        await until(pilot, lambda: not lb.require("web-2").healthy)
        await until(pilot, lambda: app.views["web-2"].state == "down")
        await pilot.press("f")
        await until(pilot, lambda: lb.require("web-2").healthy)
        await pilot.press("plus", "plus")
        await until(pilot, lambda: lb.require("web-2").weight == 3)
        await pilot.press("minus")
        await until(pilot, lambda: lb.require("web-2").weight == 2)
        await until(pilot, lambda: "weight_changed" in log_text(app))
        text = log_text(app)
        for line in ("drain web-2", "maint web-2", "ready web-2", "fail web-2", "recover web-2", "weight web-2 → 3"):
            assert line in text
        assert "admin_state_changed" in text and "health_changed" in text
        assert app.table.selected == "web-2"  # the cursor stayed on its server through refreshes


async def test_add_server_through_the_form_with_validation() -> None:
    lb = make_lb()
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AddServerModal))
        await pilot.press(*"web-9", "tab", "tab", *"99999", "enter")  # bad port: refused in place
        error = app.screen.query_one("#error")
        await until(pilot, lambda: "port" in str(error.render()))
        assert lb.get_server("web-9") is None
        port = app.screen.query_one("#field-port")
        port.value = "9009"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: lb.get_server("web-9") is not None)
        assert lb.require("web-9").port == 9009
        await until(pilot, lambda: "web-9" in app.views and app.table.row_count == 5)
        assert "add web-9" in log_text(app)
        # A duplicate name is refused by the engine and shown in the form, not raised.
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AddServerModal))
        await pilot.press(*"web-1", "tab", "tab", *"9100", "enter")
        error = app.screen.query_one("#error")
        await until(pilot, lambda: "already exists" in str(error.render()))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, AddServerModal))


async def test_remove_asks_first() -> None:
    lb = make_lb()
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("j", "j", "x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmModal))
        assert lb.get_server("web-3") is not None
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await until(pilot, lambda: lb.get_server("web-3") is None)
        await until(pilot, lambda: app.table.row_count == 3 and "web-3" not in app.views)
        assert "remove web-3" in log_text(app)


async def test_switch_algorithm() -> None:
    lb = make_lb(algorithm="round_robin")
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("g")
        await until(pilot, lambda: app.screen.query("OptionList"))
        options = app.screen.query_one("OptionList")
        target = list(ALGORITHMS).index("maglev")
        options.highlighted = target  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: lb.algorithm == "maglev")
        await until(pilot, lambda: app.ring.view.kind == "maglev")
        assert abs(sum(app.ring.view.shares.values()) - 1.0) < 1e-9
        assert "algorithm maglev" in log_text(app)


@pytest.mark.parametrize("algorithm", ["consistent_hash", "round_robin"])
async def test_key_finder_agrees_with_the_engine(algorithm: str) -> None:
    lb = make_lb(6, algorithm)
    lb.set_health("web-2", False)
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, KeyFinder))
        finder = app.screen
        assert isinstance(finder, KeyFinder)
        for key in ("user-42", "cart/17", "10.0.0.9"):
            field = finder.query_one("#key")
            field.value = key  # type: ignore[attr-defined]
            await until(pilot, lambda: finder.location is not None and finder.location.key == key)
            want = lb.locate(key)
            got = finder.location
            assert got is not None
            assert (got.owner, got.fallbacks, got.if_owner_fails) == (want["owner"], want["fallbacks"],
                                                                     want["if_owner_fails"])
            assert got.position == pytest.approx(want["position"])
            answer = str(finder.query_one("#answer").render())
            assert want["owner"] in answer
            if algorithm == "consistent_hash":
                served = lb.route({"key": key})
                assert served is not None and got.serving == served.name
            assert app.ring.marker == pytest.approx(want["position"])
            # The drawing samples the ring; at full resolution the marked position is the owner's.
            full = await app.control.ring(1_000_000)
            positions = [p for p, _ in full.points]
            assert full.points[bisect_left(positions, want["position"]) % len(positions)][1] == want["owner"]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, KeyFinder))
        assert "find key '10.0.0.9'" in log_text(app)


async def test_health_transition_appears_in_table_log_and_ring() -> None:
    lb = make_lb()
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        server = lb.require("web-3")
        lb.report_check(server, False, "connection refused")
        await until(pilot, lambda: app.views["web-3"].status == "up 1/3 fails")
        lb.report_check(server, False, "connection refused")
        lb.report_check(server, False, "connection refused")
        await until(pilot, lambda: app.views["web-3"].status == "down")
        await until(pilot, lambda: "web-3: health_changed (state=down" in log_text(app))
        await until(pilot, lambda: app.ring.available.get("web-3") is False)
        lb.report_check(server, True)
        await until(pilot, lambda: app.views["web-3"].status == "down 1/2 ok")


async def test_pause_stops_redraws_and_filter_and_sort_keep_the_cursor() -> None:
    lb = make_lb(8)
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("p")
        count = app.refreshes
        lb.set_weight("web-1", 5)
        await pilot.pause(0.4)
        assert app.refreshes == count and app.views["web-1"].weight == 1
        await pilot.press("p")
        await until(pilot, lambda: app.views["web-1"].weight == 5)
        await pilot.press("j", "j", "j")  # web-4
        await pilot.press("S")  # sort by name, reversed
        assert app.table.selected == "web-4"
        assert app.table.get_row_index("web-8") == 0
        await pilot.press("slash", *"web-1")
        await until(pilot, lambda: app.table.row_count == 1)
        await pilot.press("escape")
        await pilot.press("ctrl+u", "escape")


async def test_help_lists_every_binding() -> None:
    app = LbtuiApp(InProcessControl(make_lb()))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        palette = {command.help for command in app.get_system_commands(app.screen)}
        assert {d for a, d in app.DESCRIPTIONS.items() if a != "quit"} <= palette  # all in the command palette
        await pilot.press("question_mark")
        await until(pilot, lambda: app.screen.query("#keys"))
        keys = str(app.screen.query_one("#keys").render())
        for description in app.DESCRIPTIONS.values():
            assert description in keys


async def test_quit_embedded_confirms_then_shuts_down_gracefully() -> None:
    stopped: list[bool] = []

    async def shutdown() -> None:
        stopped.append(True)

    app = LbtuiApp(InProcessControl(make_lb(), on_shutdown=shutdown))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmModal))
        assert not stopped
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await until(pilot, lambda: bool(stopped))
    assert app.return_code == 0


async def test_hundred_servers_refresh_diffs_rows_and_keys_still_act() -> None:
    lb = make_lb(100)
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        table = app.table
        row_keys = set(table.rows)
        await pilot.press("j", "j")
        before = app.refreshes
        await until(pilot, lambda: app.refreshes >= before + 3)
        assert set(table.rows) == row_keys  # same row objects: updated, never rebuilt
        assert table.selected == "web-3"
        await pilot.press("d")
        # Key latency is a benchmark figure (tests/bench/bench_tui_overhead.py), not asserted here.
        await until(pilot, lambda: lb.require("web-3").admin_state is AdminState.DRAIN)


async def test_changed_cells_repaint_and_unchanged_rows_keep_their_text() -> None:
    """Cells are patched in place (not through update_cell): what is drawn must follow."""
    lb = make_lb(6)
    app = LbtuiApp(InProcessControl(lb))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        table = app.table

        def drawn(name: str) -> str:
            return table.render_line(table.get_row_index(name) + 1).text  # line 0 is the header

        await pilot.pause()
        untouched = drawn("web-1")
        assert untouched.split()[:2] == ["web-1", "127.0.0.1:9001"]
        server = lb.require("web-4")
        for _ in range(3):
            lb.begin(server)  # three open connections
        lb.drain("web-4")
        lb.set_weight("web-5", 7)
        await until(pilot, lambda: drawn("web-4").split()[2:5] == ["1", "drain", "up"])
        assert drawn("web-4").split()[5] == "3"
        await until(pilot, lambda: drawn("web-5").split()[2] == "7")
        assert drawn("web-1") == untouched
        lb.ready("web-4")
        await until(pilot, lambda: drawn("web-4").split()[3] == "ready")


async def test_run_embedded_closes_and_stops_the_gateway_when_a_stop_is_requested() -> None:
    import asyncio

    from engine.config import AdminConfig, Config, HealthConfig, ListenerConfig
    from engine.gateway import Gateway
    from lbtui.app import run_embedded

    config = Config(
        listeners=(ListenerConfig("web", "127.0.0.1", 0, "http", None, None),),
        admin=AdminConfig(enabled=False),
        health=HealthConfig(enabled=False),
    ).with_overrides()
    gateway = Gateway(config)
    await gateway.start()
    ui = asyncio.create_task(run_embedded(gateway, headless=True))
    try:
        deadline = time.monotonic() + 5
        while not gateway.listeners[0].proxy.observers:  # type: ignore[union-attr]  # the app is up, sampling
            assert time.monotonic() < deadline and not ui.done()
            await asyncio.sleep(0.02)
        gateway.request_stop()  # what SIGTERM does
        await asyncio.wait_for(ui, 5)
        assert gateway.stop_requested and not gateway.listeners
    finally:
        ui.cancel()
        await gateway.stop(1.0)
