"""`lbtui attach`: the app over RemoteControl against a real admin API on loopback."""

from __future__ import annotations

from engine import LoadBalancer, Server
from engine.admin import AdminApi
from engine.server import AdminState
from lbtui.app import LbtuiApp
from lbtui.commands.attach import add_parser
from lbtui.control.remote import RemoteControl
from tests.test_tui_app import SIZE, log_text, ready, until


async def test_attached_app_steers_a_headless_balancer() -> None:
    lb = LoadBalancer([Server("127.0.0.1", 9001 + i, name=f"web-{i + 1}") for i in range(3)],
                      algorithm="consistent_hash")
    api = AdminApi(lb, host="127.0.0.1", port=0, keepalive=1.0)
    await api.start()
    try:
        app = LbtuiApp(RemoteControl(api.url, timeout=2.0))
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            assert "connected" in str(app.query_one("#totals").render())
            await pilot.press("j", "d")
            await until(pilot, lambda: lb.require("web-2").admin_state is AdminState.DRAIN)
            await until(pilot, lambda: app.views["web-2"].admin_state == "drain")
            await until(pilot, lambda: "web-2: admin_state_changed" in log_text(app))  # via the SSE stream
            lb.set_health("web-1", False, source="health")  # a change made elsewhere shows up
            await until(pilot, lambda: app.views["web-1"].state == "down")
            await pilot.press("q")  # attached: quitting leaves the balancer running
        assert lb.get_server("web-1") is not None
    finally:
        await api.stop()


def test_attach_command_parses_url_and_token() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["attach", "http://127.0.0.1:9900", "--token", "T"])
    assert (args.url, args.token, args.func.__name__) == ("http://127.0.0.1:9900", "T", "run")
