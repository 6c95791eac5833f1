"""Snapshots of the main screen, the key finder and the help screen from the demo state."""

from __future__ import annotations

from lbtui.screenshots import SIZE, demo_app, open_key_finder, settle


def test_main_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settle(app, pilot))


def test_main_screen_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()
    assert snap_compare(app, terminal_size=(80, 24), run_before=lambda pilot: settle(app, pilot))


def test_key_finder(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: open_key_finder(app, pilot))


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = demo_app()

    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(app, pilot)
        await pilot.press("question_mark")
        await settle(app, pilot, lambda: bool(app.screen.query("#keys")))

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)
