"""The totals bar: overall traffic, the policy in use, listeners and component status."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lbtui.control.base import TotalsView


class TotalsBar(Static):
    """The balancer in two lines (three when narrow); ``show`` replaces the figures.

    Items are laid out like words: an item never breaks across lines, so at 80 columns
    the status items move to a third line instead of being cut off.
    """

    DEFAULT_CSS = """
    TotalsBar {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.totals = TotalsView()
        self.link = "embedded"
        self.paused = False
        self._lines = 0
        self._text = Text()

    def show(self, totals: TotalsView | None = None, *, link: str | None = None, paused: bool | None = None) -> None:
        if totals is not None:
            self.totals = totals
        if link is not None:
            self.link = link
        if paused is not None:
            self.paused = paused
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        text = self._render_text()
        if text == self._text:
            return  # same figures, same styles: nothing to repaint
        self._text = text
        lines = text.plain.count("\n") + 1
        # A relayout of the screen only when the bar's height changes, not on every tick.
        self.update(text, layout=lines != self._lines)
        self._lines = lines

    def _items(self) -> list[list[Text]]:
        """Groups of items; each group starts on a new line."""
        t = self.totals

        def item(label: str, value: str, style: str = "bold") -> Text:
            text = Text()
            if label:
                text.append(f"{label} ", style="dim")
            text.append(value, style=style)
            return text

        traffic = [
            item("req/s", f"{t.rps:,.1f}"),
            item("errors", f"{t.error_rate * 100:.2f}%"),
            item("p50", f"{t.p50_ms:.1f}ms"),
            item("p99", f"{t.p99_ms:.1f}ms"),
            item("up", f"{t.healthy}/{t.total}"),
        ]
        if t.panic:
            traffic.append(item("", "PANIC", "bold reverse"))
        if self.paused:
            traffic.append(item("", "PAUSED", "bold reverse"))
        policy = Text()
        policy.append("policy ", style="dim")
        policy.append(t.algorithm or "?", style="bold")
        if t.hash_key:
            policy.append(f" on {t.hash_key}")
        setup = [policy]
        if t.listeners:
            setup.append(item("listen", " ".join(t.listeners), ""))
        for name, status in t.components.items():
            setup.append(item(name, status, "bold" if status not in ("ok", "running", "up") else ""))
        if self.link != "embedded":  # the title bar already says "embedded"
            setup.append(item("link", self.link, "bold reverse" if self.link.startswith("disconnected") else ""))
        return [traffic, setup]

    def _render_text(self) -> Text:
        width = max(20, self.content_size.width or 118)
        lines: list[Text] = []
        for group in self._items():
            line = Text()
            for entry in group:
                if line.cell_len and line.cell_len + 2 + entry.cell_len > width:
                    lines.append(line)
                    line = Text()
                if line.cell_len:
                    line.append("  ")
                line.append_text(entry)
            lines.append(line)
        return Text("\n").join(lines)
