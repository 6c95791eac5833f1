"""The hash ring, drawn with the Line API: each server's arcs in its colour.

Every perimeter cell stands for an angle, i.e. a position in the hash space, and is
coloured by the owner a key at that position would go to (the next point clockwise).
Arcs of servers that would not take traffic (down, drain, maint, ejected) are shaded,
so a health change shows exactly which arcs move. The key finder's key is a marker.
For Maglev there is no ring: the panel lists the lookup table's shares.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from lbtui.control.base import RingView
from lbtui.widgets.palette import ColourBook

LEGEND_ROWS = 6


class HashRing(Widget):
    """Draws a ``RingView``; call ``show`` with fresh data, ``mark`` for the key finder."""

    DEFAULT_CSS = """
    HashRing {
        width: 1fr;
        height: 1fr;
        min-height: 7;
    }
    """

    marker: reactive[float | None] = reactive(None)
    """Position (0..1) of the key finder's key, or None."""

    def __init__(self, colours: ColourBook, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.colours = colours
        self.view = RingView()
        self.available: dict[str, bool] = {}
        self._positions: list[float] = []
        self._owners: list[str] = []
        self._cells: dict[tuple[int, int], float] = {}  # (x, y) -> position on the ring
        self._geometry: tuple[int, int, int] = (0, 0, 0)
        self._centre = (0.0, 0.0)
        self._radius = (0.0, 0.0)

    # -- public API -----------------------------------------------------------------------
    def show(self, view: RingView, available: dict[str, bool]) -> None:
        """New ring data (membership, weight or health changed): redraw."""
        self.view = view
        self.available = dict(available)
        self._positions = [p for p, _ in view.points]
        self._owners = [o for _, o in view.points]
        self.refresh()

    def owner_at(self, position: float) -> str | None:
        """Who serves a key at ``position``: the first point at or after it, wrapping."""
        if not self._positions:
            return None
        index = bisect_left(self._positions, position)
        return self._owners[index % len(self._owners)]

    # -- drawing ----------------------------------------------------------------------------
    def _layout(self, size: Size) -> None:
        legend = min(len(self.view.shares) + 1, max(LEGEND_ROWS, size.height // 3))
        if self._geometry == (size.width, size.height, legend):
            return
        self._geometry = (size.width, size.height, legend)
        ring_height = max(3, size.height - legend)
        ry = max(1.0, (ring_height - 1) / 2)
        rx = min(ry * 2.0, (size.width - 2) / 2)
        ry = min(ry, rx / 2.0)  # terminal cells are about twice as tall as wide
        self._centre = (size.width / 2.0, ry + 0.5)
        self._radius = (rx, ry)
        cells: dict[tuple[int, int], float] = {}
        cx, cy = self._centre
        for y in range(int(2 * ry + 2)):
            for x in range(size.width):
                dx = (x + 0.5 - cx) / rx
                dy = (y + 0.5 - cy) / ry
                distance = math.hypot(dx, dy)
                if abs(distance - 1.0) <= 0.5 / ry + 0.05:
                    angle = math.atan2(dx, -dy)  # 0 at twelve o'clock, clockwise
                    cells[(x, y)] = (angle / (2 * math.pi)) % 1.0
        self._cells = cells

    def _marker_cell(self) -> tuple[int, int] | None:
        if self.marker is None or not self._cells:
            return None
        target = self.marker

        def gap(item: tuple[tuple[int, int], float]) -> float:
            d = abs(item[1] - target)
            return min(d, 1.0 - d)

        return min(self._cells.items(), key=gap)[0]

    def render_line(self, y: int) -> Strip:
        size = self.size
        self._layout(size)
        base = self.rich_style
        if self.view.kind == "maglev" or not self._positions:
            return self._legend_line(y, base, size.width, top=0)
        ring_rows = int(2 * self._radius[1] + 2)
        if y >= ring_rows:
            return self._legend_line(y - ring_rows, base, size.width, top=0)
        marker = self._marker_cell()
        segments: list[Segment] = []
        for x in range(size.width):
            position = self._cells.get((x, y))
            if position is None:
                segments.append(Segment(" ", base))
                continue
            owner = self.owner_at(position) or ""
            colour = self.colours.colour(owner)
            if marker == (x, y):
                segments.append(Segment("◆", base + Style(color=colour, bold=True, reverse=True)))
            elif self.available.get(owner, True):
                segments.append(Segment("█", base + Style(color=colour)))
            else:
                segments.append(Segment("░", base + Style(color=colour)))
        inner = self._inner_text(y)
        if inner:
            start = max(0, int(self._centre[0] - len(inner) / 2))
            for offset, char in enumerate(inner):
                x = start + offset
                if x < len(segments) and (x, y) not in self._cells:
                    segments[x] = Segment(char, base + Style(dim=False))
        return Strip(segments, size.width).simplify()

    def _inner_text(self, y: int) -> str:
        """The middle of the ring: what it shows and the marked key."""
        cy = int(self._centre[1])
        if self._radius[1] < 4:  # too small a ring to write inside
            return ""
        if y == cy - 1 and self._radius[1] >= 3:
            return f"{len(self.view.shares)} servers"
        if y == cy:
            return f"{len(self.view.points)} points"
        if y == cy + 1 and self.marker is not None:
            return f"◆ key @ {self.marker:.3f}"
        return ""

    def _legend_line(self, row: int, base: Style, width: int, top: int) -> Strip:
        """Shares of the keyspace, largest first, one server per line."""
        shares = sorted(self.view.shares.items(), key=lambda item: (-item[1], item[0]))
        title = "Maglev table shares" if self.view.kind == "maglev" else "share of keyspace"
        lines: list[list[Segment]] = [[Segment(title[:width], base + Style(bold=True))]]
        room = max(1, self.size.height - (0 if self.view.kind == "maglev" or not self._positions else
                                          int(2 * self._radius[1] + 2)) - 1)
        shown = shares if len(shares) <= room else shares[: max(0, room - 1)]
        for name, share in shown:
            colour = self.colours.colour(name)
            mark = "■ " if self.available.get(name, True) else "□ "
            text = f"{name[: max(1, width - 10)]:<{max(1, width - 10)}}{share * 100:6.1f}%"
            lines.append([Segment(mark, base + Style(color=colour, bold=True)), Segment(text[: width - 2], base)])
        if len(shown) < len(shares):
            lines.append([Segment(f"… {len(shares) - len(shown)} more", base + Style(dim=True))])
        if row < len(lines):
            return Strip(lines[row]).adjust_cell_length(width, base)  # pad: no gaps in the background
        return Strip.blank(width, base)
