"""The log pane: operator actions and engine, store and worker events, capped in memory."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import RichLog

from lbtui.control.base import EventView, RequestView

MAX_LINES = 1000

KIND_STYLES = {
    "health_changed": "bold",
    "ejected": "bold",
    "panic_changed": "bold reverse",
    "operator": "bold",
    "error": "bold reverse",
}


def clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class LogPane(RichLog):
    """A capped log; the app feeds it in batches from its refresh loop.

    Each new line grows the log's virtual height. A widget's ``virtual_size`` normally
    asks for a layout of the whole screen when it changes, which repaints every widget
    (header, footer, table, ring) for each logged line, two or more a second. The pane's
    own height is fixed by CSS, so a longer log only moves its scrollbar: the pane
    updates that itself, and a layout happens only when the scrollbar first appears.
    """

    virtual_size: Reactive[Size] = Reactive(Size(0, 0), repaint=True)

    DEFAULT_CSS = """
    LogPane {
        height: 7;
        border-top: solid $primary 50%;
        padding: 0 1;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
        overflow-y: auto;
    }
    """

    def __init__(self, *, clock: Callable[[float], str] = clock_time, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, highlight=False, id=id)
        self.clock = clock
        self.border_title = "log"

    def watch_virtual_size(self, size: Size) -> None:
        self._scroll_update(size)  # scrollbar thumb and bounds; toggling it lays out

    def add_event(self, event: EventView) -> None:
        """An engine/store/worker event."""
        self._line(event.at, event.source, event.describe(), KIND_STYLES.get(event.kind, ""))

    def action(self, text: str, at: float | None = None) -> None:
        """An operator's key press, logged as hatop does."""
        self._line(time.time() if at is None else at, "you", text, "bold")

    def request(self, view: RequestView) -> None:
        """A sampled request (about two a second), dim so events stand out."""
        style = "bold" if view.status >= 500 else "dim"
        self._line(view.at, "request", view.describe(), style)

    def error(self, text: str, at: float | None = None) -> None:
        self._line(time.time() if at is None else at, "error", text, "bold reverse")

    def _line(self, at: float, source: str, text: str, style: str) -> None:
        line = Text()
        line.append(self.clock(at), style="dim")
        line.append(f" {source:<10} ", style="dim")
        line.append(text, style=style)
        self.write(line)
