"""The servers table: diffed every refresh, never rebuilt, so the cursor stays put.

Rows are keyed by server name. A refresh removes rows that vanished or no longer
match the filter, adds new ones, ``update_cell``s only cells whose text changed and
re-sorts only when the order really changed; the cursor follows its server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from lbtui.control.base import ServerView
from lbtui.widgets.palette import ColourBook

BLOCKS = "▁▂▃▄▅▆▇█"

def natural(text: str) -> tuple[Any, ...]:
    """Sort "web-2" before "web-10", as an operator expects."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


# (column key, label, width, sort key)
COLUMNS: tuple[tuple[str, str, int, Callable[[ServerView], Any]], ...] = (
    ("name", "server", 12, lambda s: natural(s.name)),
    ("address", "address", 15, lambda s: (s.host, s.port)),
    ("weight", "weight", 7, lambda s: s.weight),
    ("admin", "admin", 5, lambda s: s.admin_state),
    ("health", "health", 13, lambda s: (s.available, s.status)),
    ("conns", "conns", 5, lambda s: s.active_connections),
    ("rps", "req/s", 7, lambda s: s.rps),
    ("errors", "errors", 6, lambda s: s.errors),
    ("p50", "p50 ms", 7, lambda s: s.p50_ms),
    ("p99", "p99 ms", 7, lambda s: s.p99_ms),
    ("trend", "req/s trend", 12, lambda s: sum(s.rps_history)),
)
SORTABLE = tuple(key for key, *_ in COLUMNS)


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """Recent requests/s as block characters, scaled to the row's own peak."""
    values = list(values)[-width:]
    if not values:
        return ""
    peak = max(values)
    if peak <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(v / peak * (len(BLOCKS) - 1) + 0.5))] for v in values)


def _signature(value: Any) -> Any:
    """Text compares equal when only its style differs: compare what is drawn."""
    if isinstance(value, Text):
        return (value.plain, str(value.style), value.justify)
    return value


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


class ServersTable(DataTable[Any]):
    """One row per server; ``show`` applies a refresh as a diff."""

    DEFAULT_CSS = """
    ServersTable {
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="cursor_down_vim"),
        Binding("k", "cursor_up", "Up", show=False, id="cursor_up_vim"),
    ]

    def __init__(self, colours: ColourBook, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.colours = colours
        self.sort_column = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self._cells: dict[str, dict[str, Any]] = {}  # what each visible row shows now
        self._views: dict[str, ServerView] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label, width, _ in COLUMNS:
            self.add_column(label, width=width, key=key)

    # -- public API ---------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        """Name of the server under the cursor."""
        if not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:  # cursor outside a shrunken table
            return None

    def select(self, name: str) -> None:
        if name in self._cells:
            self.move_cursor(row=self.get_row_index(name))

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        self.sort_column = column
        if reverse is not None:
            self.sort_reverse = reverse
        self._apply_order(force=True)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self.show(list(self._views.values()))

    def show(self, servers: Sequence[ServerView]) -> None:
        """Apply a refresh: remove, add, update cells, re-sort; keep the cursor's server."""
        keep = self.selected
        self._views = {s.name: s for s in servers}
        visible = [s for s in servers if self._matches(s)]
        wanted = {s.name for s in visible}
        for name in [n for n in self._cells if n not in wanted]:
            self.remove_row(name)
            del self._cells[name]
        added = False
        for server in visible:
            cells = self._render(server)
            old = self._cells.get(server.name)
            if old is None:
                self.add_row(*cells.values(), key=server.name)
                added = True
            else:
                for column, value in cells.items():
                    if _signature(old[column]) != _signature(value):
                        self.update_cell(server.name, column, value)
            self._cells[server.name] = cells
        self._apply_order(force=added)
        if keep is not None and keep in self._cells:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    # -- helpers --------------------------------------------------------------------------
    def _matches(self, server: ServerView) -> bool:
        text = self.filter_text
        if not text:
            return True
        return any(text in field for field in (server.name.lower(), server.address, server.admin_state, server.status))

    def _apply_order(self, force: bool) -> None:
        sort_key = next(fn for key, _, _, fn in COLUMNS if key == self.sort_column)
        views = self._views
        order = sorted(self._cells, key=lambda n: (sort_key(views[n]), natural(n)), reverse=self.sort_reverse)
        if not force and order == self._order:
            return
        self._order = order
        rank = {name: i for i, name in enumerate(order)}
        keep = self.selected
        self.sort("name", key=lambda cell: rank[cell.plain if isinstance(cell, Text) else str(cell)])
        if keep is not None and keep in self._cells:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _render(self, s: ServerView) -> dict[str, Any]:
        colour = self.colours.colour(s.name)
        weight = str(s.weight)
        if abs(s.effective_weight - s.weight) > 0.005:
            weight = f"{s.weight}→{s.effective_weight:.1f}"
        health_style = "bold" if s.available else ("italic" if s.admin_state != "ready" else "bold reverse")
        if s.state != "up" or s.ejected:
            health_style = "bold reverse"
        admin_style = "" if s.admin_state == "ready" else "bold"
        return {
            "name": Text(s.name, style=f"bold {colour}"),
            "address": s.address,
            "weight": Text(weight, justify="right"),
            "admin": Text(s.admin_state, style=admin_style),
            "health": Text(s.status, style=health_style if s.status != "up" else ""),
            "conns": Text(str(s.active_connections), justify="right"),
            "rps": Text(f"{s.rps:.1f}", justify="right"),
            "errors": Text(str(s.errors), justify="right"),
            "p50": Text(_ms(s.p50_ms), justify="right"),
            "p99": Text(_ms(s.p99_ms), justify="right"),
            "trend": Text(sparkline(s.rps_history), style=colour),
        }
