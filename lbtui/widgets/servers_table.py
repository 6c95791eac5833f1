"""The servers table: diffed every refresh, never rebuilt, so the cursor stays put.

Rows are keyed by server name. A refresh removes rows that vanished or no longer
match the filter, adds new ones, rewrites only cells whose text changed and re-sorts
only when the order really changed; the cursor follows its server.

Why not ``DataTable.update_cell``: each call bumps the table's update counter, which
is part of every render-cache key, so one changed figure re-renders every visible
cell (the profile's biggest cost with 100 servers). ``_patch_cells`` instead writes
the value, drops only that cell's and row's cache entries and repaints only that
row's region. It leans on DataTable internals of the pinned Textual release (8.2.8)
and falls back to ``update_cell`` if they are not there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from lbtui.control.base import ServerView
from lbtui.widgets.palette import ColourBook

BLOCKS = "▁▂▃▄▅▆▇█"

def natural(text: str) -> tuple[Any, ...]:
    """Sort "web-2" before "web-10", as an operator expects."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: shown only when the table is wide enough for its priority."""

    key: str
    label: str
    width: int  # the narrowest it may be
    priority: int  # 0 always shown; higher ones are dropped first when space runs out
    sort_key: Callable[[ServerView], Any]
    grow: int = 0  # extra cells it may take when the terminal is wide


COLUMNS: tuple[Column, ...] = (
    Column("name", "server", 6, 0, lambda s: natural(s.name), grow=10),
    Column("address", "address", 10, 4, lambda s: (s.host, s.port), grow=11),
    Column("weight", "weight", 6, 1, lambda s: s.weight),
    Column("admin", "admin", 5, 1, lambda s: s.admin_state),
    Column("health", "health", 9, 0, lambda s: (s.available, s.status)),
    Column("conns", "conn", 4, 2, lambda s: s.active_connections, grow=1),
    Column("rps", "req/s", 6, 0, lambda s: s.rps, grow=1),
    Column("errors", "errs", 5, 2, lambda s: s.errors, grow=1),
    Column("p50", "p50ms", 5, 2, lambda s: s.p50_ms, grow=1),
    Column("p99", "p99ms", 5, 1, lambda s: s.p99_ms, grow=1),
    Column("trend", "trend", 6, 3, lambda s: sum(s.rps_history), grow=6),
)
BY_KEY = {column.key: column for column in COLUMNS}
CELL_PADDING = 1  # blank cells each side of a column


def fit_columns(width: int, name_width: int = 6) -> list[tuple[Column, int]]:
    """The columns that fit ``width`` cells, most important first to stay, with widths.

    Less important columns (address, trend, then counters) drop out of narrow
    terminals; the name column is as wide as the longest name (within limits), and
    spare room goes to the columns that can use it.
    """
    base = {c.key: (max(c.width, min(name_width, c.width + c.grow)) if c.key == "name" else c.width)
            for c in COLUMNS}
    shown = list(COLUMNS)
    def used(cols: list[Column]) -> int:
        return sum(base[c.key] + 2 * CELL_PADDING for c in cols)
    for priority in sorted({c.priority for c in COLUMNS}, reverse=True):
        if used(shown) <= width or priority == 0:
            break
        shown = [c for c in shown if c.priority != priority]
    widths = {c.key: base[c.key] for c in shown}
    spare = width - used(shown)
    for key in ("address", "trend", "rps", "p50", "p99", "errors", "conns"):
        column = BY_KEY[key]
        if key in widths and spare > 0:
            limit = column.width + column.grow - widths[key]
            extra = min(spare, max(0, limit))
            widths[key] += extra
            spare -= extra
    return [(c, widths[c.key]) for c in shown]


SORTABLE = tuple(column.key for column in COLUMNS)


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """Recent requests/s as block characters, scaled to the row's own peak."""
    values = list(values)[-width:]
    if not values:
        return ""
    peak = max(values)
    if peak <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(v / peak * (len(BLOCKS) - 1) + 0.5))] for v in values)


# What a cell draws: its text, style and justification (address cells: the text alone).
# Compared tick to tick, so a rich Text is built only for a cell that really changed.
Spec = tuple[str, str, str] | str


def _to_cell(spec: Spec) -> Any:
    if isinstance(spec, str):
        return spec
    text, style, justify = spec
    return Text(text, style=style, justify=justify) if justify else Text(text, style=style)  # type: ignore[arg-type]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _count(value: int) -> str:
    """Counters in at most five cells: 98765, 123k, 4.5M."""
    if value < 100_000:
        return str(value)
    if value < 10_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1_000_000:.1f}M"


def short_health(status: str) -> str:
    """The health machine in nine cells: "up 2/3 fails" -> "up 2/3", "ejected 30s" -> "eject 30s"."""
    words = status.split()
    if not words:
        return status
    if words[0] == "ejected" and len(words) > 1:
        seconds = int(words[1].rstrip("s") or 0) if words[1].rstrip("s").isdigit() else 0
        return f"eject {seconds}s" if seconds < 100 else f"eject {seconds // 60}m"
    return " ".join(words[:2])


def short_address(host: str, port: int, width: int) -> str:
    """host:port in ``width`` cells; the port always shows.

    An IP keeps its last octets ("…0.0.1:8001": they tell hosts of a subnet apart), a
    hostname its first characters ("backend-7.…:80").
    """
    full = f"{host}:{port}"
    if len(full) <= width:
        return full
    room = width - len(str(port)) - 2  # ":" and "…"
    if room < 1:
        return f":{port}"[-width:]
    if host.replace(".", "").isdigit() or ":" in host:
        return f"…{host[len(host) - room:]}:{port}"
    return f"{host[:room]}…:{port}"


class ServersTable(DataTable[Any]):
    """One row per server; ``show`` applies a refresh as a diff."""

    DEFAULT_CSS = """
    ServersTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="cursor_down_vim"),
        Binding("k", "cursor_up", "Up", show=False, id="cursor_up_vim"),
    ]

    def __init__(self, colours: ColourBook, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=CELL_PADDING)
        self.colours = colours
        self.sort_column = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self.layout_columns: list[tuple[Column, int]] = []
        self._cells: dict[str, dict[str, Spec]] = {}  # what each visible row shows now
        self._views: dict[str, ServerView] = {}
        self._shown: dict[str, ServerView] = {}  # the view each row was last drawn from
        self._order: list[str] = []
        self._order_keys: list[Any] = []  # the sort keys ``_order`` was made from
        self._natural: dict[str, tuple[Any, ...]] = {}
        self._order_names: list[str] = []
        self._fitted: tuple[int, int] = (0, 0)  # (width, name width) of the current layout

    def on_mount(self) -> None:
        self._fit(80)

    def on_resize(self) -> None:
        self._fit(self.size.width - 1)  # one cell for the vertical scrollbar

    # -- public API ---------------------------------------------------------------------
    @property
    def columns_shown(self) -> list[str]:
        return [column.key for column, _ in self.layout_columns]

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
        if self._name_width() != self._fitted[1] and self._fitted[0] and self._fit(self._fitted[0], keep):
            return  # a name of another length arrived: the columns were laid out again
        visible = [s for s in servers if self._matches(s)] if self.filter_text else servers
        wanted = {s.name for s in visible}
        for name in [n for n in self._cells if n not in wanted]:
            self.remove_row(name)
            del self._cells[name]
            self._shown.pop(name, None)
        added = False
        changes: dict[str, dict[str, Spec]] = {}
        for server in visible:
            name = server.name
            old = self._cells.get(name)
            if old is None:
                cells = self._render(server)
                self.add_row(*map(_to_cell, cells.values()), key=name)
                self._cells[name] = cells
                added = True
            elif self._shown.get(name) != server:  # an idle server's row is not even rendered
                cells = self._render(server)
                changed = {column: spec for column, spec in cells.items() if old[column] != spec}
                if changed:
                    changes[name] = changed
                    self._cells[name] = cells
            self._shown[name] = server
        if changes:
            self._patch_cells(changes)
        self._apply_order(force=added)
        if keep is not None and keep in self._cells:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _patch_cells(self, changes: dict[str, dict[str, Spec]]) -> None:
        """Write changed cells and repaint only their rows (see the module docstring)."""
        try:
            data = self._data
            caches = (self._cell_render_cache, self._row_render_cache, self._row_renderable_cache, self._line_cache)
            locations = self._row_locations
        except AttributeError:  # another Textual: the public, slower way
            for name, cells in changes.items():
                for column, spec in cells.items():
                    self.update_cell(name, column, _to_cell(spec))
            return
        cell_cache, row_cache, renderable_cache, line_cache = caches
        rows = {RowKey(name) for name in changes}
        indexes = set()
        touched: set[tuple[RowKey, ColumnKey]] = set()
        for name, cells in changes.items():
            row_key = RowKey(name)
            row = data[row_key]
            for column, spec in cells.items():
                row[ColumnKey(column)] = _to_cell(spec)
                touched.add((row_key, ColumnKey(column)))
            indexes.add(locations.get(row_key))
        # Cache keys start (row, column, ...) for cells, (row, line, ...) for rows and
        # (update count, row index) for a row's renderables; lines are cheap: all go.
        for key in [k for k in cell_cache.keys() if (k[0], k[1]) in touched]:
            cell_cache.discard(key)
        for key in [k for k in row_cache.keys() if k[0] in rows]:
            row_cache.discard(key)
        for key in [k for k in renderable_cache.keys() if k[1] in indexes]:
            renderable_cache.discard(key)
        line_cache.clear()
        top, bottom = self.scroll_offset.y, self.scroll_offset.y + self.size.height
        for index in indexes:
            if index is not None and top - 1 <= index <= bottom:  # rows off screen need no repaint
                self.refresh_row(index)

    # -- helpers --------------------------------------------------------------------------
    def _name_width(self) -> int:
        return max((len(name) for name in self._views), default=6)

    def _fit(self, width: int, keep: str | None = None) -> bool:
        """Choose columns for ``width`` cells; rebuild the table (True) only when that changes."""
        if width <= 0:
            return False
        name_width = self._name_width()
        layout = fit_columns(width, name_width)
        self._fitted = (width, name_width)
        if [(c.key, w) for c, w in layout] == [(c.key, w) for c, w in self.layout_columns]:
            return False
        keep = keep or self.selected
        self.layout_columns = layout
        self.clear(columns=True)
        self._cells, self._order, self._shown, self._order_keys = {}, [], {}, []
        for column, column_width in layout:
            self.add_column(column.label, width=column_width, key=column.key)
        if self._views:
            self.show(list(self._views.values()))
        if keep is not None and keep in self._cells:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        return True

    def _matches(self, server: ServerView) -> bool:
        text = self.filter_text
        if not text:
            return True
        return any(text in field for field in (server.name.lower(), server.address, server.admin_state, server.status))

    def _apply_order(self, force: bool) -> None:
        """Sort the rows, unless the sort keys (hence the order) are what they were."""
        by_name = self.sort_column == "name"
        sort_key = BY_KEY[self.sort_column].sort_key
        names = list(self._cells)
        keys: list[Any] = names if by_name else [sort_key(self._views[n]) for n in names]
        if not force and names == self._order_names and keys == self._order_keys:
            return  # nothing that decides the order changed: no sort, no repaint
        self._order_names, self._order_keys = names, keys
        natural_keys = self._natural
        for name in names:
            if name not in natural_keys:
                natural_keys[name] = natural(name)
        pairs = sorted(zip(keys, names), reverse=self.sort_reverse,
                       key=lambda kv: natural_keys[kv[1]] if by_name else (kv[0], natural_keys[kv[1]]))
        order = [name for _, name in pairs]
        if not force and order == self._order:
            return
        self._order = order
        rank = {name: i for i, name in enumerate(order)}
        keep = self.selected
        self.sort("name", key=lambda cell: rank[cell.plain if isinstance(cell, Text) else str(cell)])
        if keep is not None and keep in self._cells:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def _render(self, s: ServerView) -> dict[str, Spec]:
        """What the cells of the shown columns draw, in column order."""
        colour = self.colours.colour(s.name)
        return {column.key: self._cell(column.key, width, s, colour) for column, width in self.layout_columns}

    @staticmethod
    def _cell(key: str, width: int, s: ServerView, colour: str) -> Spec:
        if key == "name":
            return (s.name, f"bold {colour}", "")
        if key == "address":
            return short_address(s.host, s.port, width)
        if key == "weight":
            weight = str(s.weight)
            if abs(s.effective_weight - s.weight) > 0.005:
                weight = f"{s.weight}→{s.effective_weight:.0f}" if s.weight >= 10 else f"{s.weight}→{s.effective_weight:.1f}"
            return (weight, "", "right")
        if key == "admin":
            return (s.admin_state, "" if s.admin_state == "ready" else "bold", "")
        if key == "health":
            style = "" if s.status == "up" else "bold"
            if s.state != "up" or s.ejected:
                style = "bold reverse"
            return (short_health(s.status), style, "")
        if key == "conns":
            return (_count(s.active_connections), "", "right")
        if key == "rps":
            return (f"{s.rps:.1f}" if s.rps < 1000 else f"{s.rps:.0f}", "", "right")
        if key == "errors":
            return (_count(s.errors), "bold" if s.errors else "", "right")
        if key == "p50":
            return (_ms(s.p50_ms), "", "right")
        if key == "p99":
            return (_ms(s.p99_ms), "", "right")
        if key == "trend":
            return (sparkline(s.rps_history, width), colour, "")
        raise KeyError(key)
