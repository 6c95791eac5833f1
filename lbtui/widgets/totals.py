"""The totals bar: overall traffic, the policy in use, listeners and component status."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lbtui.control.base import TotalsView


class TotalsBar(Static):
    """Two lines that summarise the balancer; ``show`` replaces the figures."""

    DEFAULT_CSS = """
    TotalsBar {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.totals = TotalsView()
        self.link = "embedded"
        self.paused = False

    def show(self, totals: TotalsView | None = None, *, link: str | None = None, paused: bool | None = None) -> None:
        if totals is not None:
            self.totals = totals
        if link is not None:
            self.link = link
        if paused is not None:
            self.paused = paused
        self.update(self._render_text())

    def _render_text(self) -> Text:
        t = self.totals
        text = Text()
        text.append("req/s ", style="dim")
        text.append(f"{t.rps:,.1f}", style="bold")
        text.append("  errors ", style="dim")
        text.append(f"{t.error_rate * 100:.2f}%", style="bold")
        text.append("  p50 ", style="dim")
        text.append(f"{t.p50_ms:.1f}ms", style="bold")
        text.append("  p99 ", style="dim")
        text.append(f"{t.p99_ms:.1f}ms", style="bold")
        text.append("  up ", style="dim")
        text.append(f"{t.healthy}/{t.total}", style="bold")
        if t.panic:
            text.append("  PANIC", style="bold reverse")
        if self.paused:
            text.append("  PAUSED", style="bold reverse")
        text.append("\n")
        text.append("policy ", style="dim")
        text.append(t.algorithm or "?", style="bold")
        if t.hash_key:
            text.append(f" on {t.hash_key}")
        if t.listeners:
            text.append("  listen ", style="dim")
            text.append(" ".join(t.listeners))
        for name, status in t.components.items():
            text.append(f"  {name} ", style="dim")
            text.append(status, style="bold" if status not in ("ok", "running", "up") else "")
        text.append("  link ", style="dim")
        text.append(self.link, style="bold reverse" if self.link.startswith("disconnected") else "")
        return text
