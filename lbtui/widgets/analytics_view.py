"""The analytics view: the last hour per minute, from the analytics worker's rollups.

Requests per minute as a bar chart (errors, the peak and the lowest minute marked under
it), p50 and p99 per minute on one shared scale, and each server's share of the hour in
the colours the table and the ring use. Drawing is a pure function of an
``AnalyticsView`` and the size, so tests can read exactly what the operator sees; the
app feeds it at most once a second and only while it is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widget import Widget

from lbtui.control.base import AnalyticsView, MinuteView
from lbtui.widgets.palette import ColourBook

EIGHTHS = " ▁▂▃▄▅▆▇█"
GUTTER = 8  # y-axis labels: "  1,234 " then the bars
AXIS_EVERY = 15  # a time label every quarter hour
MIN_BAR_ROWS, MAX_BAR_ROWS = 3, 20
BAR_STYLE = "#17a398"
ERROR_STYLE = "bold #e4572e"
PEAK_STYLE = "bold #d99a00"
LOWEST_STYLE = "bold #3b82f6"
P50_STYLE = "#3b82f6"
P99_STYLE = "#c2469d"
PEAK_MARK, LOWEST_MARK, ERROR_MARK = "▲", "▼", "×"

MinuteClock = Callable[[float], str]  # epoch seconds -> "HH:MM"


def bar_rows(height: int, other_rows: int) -> int:
    """Bars get what the summary, marks, time axis, p50, p99 and shares leave."""
    return max(MIN_BAR_ROWS, min(MAX_BAR_ROWS, height - other_rows))


def flow(items: Sequence[Text], width: int, lead: str = "") -> list[Text]:
    """Items laid out like words: an item never breaks across lines."""
    lines: list[Text] = []
    line = Text()
    line.append(lead, style="dim")  # only the lead: a line style would dim every item
    for item in items:
        if line.cell_len > len(lead) and line.cell_len + 2 + item.cell_len > width:
            lines.append(line)
            line = Text(" " * len(lead))
        elif line.cell_len > len(lead):
            line.append("  ")
        line.append_text(item)
    lines.append(line)
    return lines


def visible_minutes(view: AnalyticsView, width: int) -> list[MinuteView]:
    """The newest minutes that fit beside the gutter (all sixty from 68 columns up)."""
    room = max(1, width - GUTTER - 1)
    return view.minutes[-room:]


def bar_cells(value: int, top: int, rows: int) -> list[str]:
    """One column of the bar chart, top row first; any traffic shows at least an eighth."""
    if value <= 0 or top <= 0:
        return [" "] * rows
    eighths = max(1, round(value / top * rows * 8))
    cells = []
    for row in range(rows - 1, -1, -1):
        fill = min(8, max(0, eighths - row * 8))
        cells.append(EIGHTHS[fill])
    return cells


def spark(values: Sequence[float], top: float) -> str:
    """One row of eighths scaled to ``top``; a minute without traffic stays blank."""
    if top <= 0:
        return " " * len(values)
    return "".join(EIGHTHS[max(1, round(v / top * 8))] if v > 0 else " " for v in values)


def figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def summary_lines(view: AnalyticsView, width: int, clock: MinuteClock) -> list[Text]:
    """The window, its totals, and the peak and lowest minutes (two lines when narrow)."""
    span = f"{clock(view.minutes[0].start)}–{clock(view.minutes[-1].start)}" if view.minutes else "last hour"
    items = [
        Text.assemble((f"{span} ", "dim"), (f"{view.requests:,} req", "bold")),
        Text.assemble(("errors ", "dim"), (f"{view.errors:,} ({view.error_rate * 100:.2f}%)",
                                           ERROR_STYLE if view.errors else "bold")),
    ]
    if view.peak is not None:
        items.append(Text.assemble((f"{PEAK_MARK} peak ", PEAK_STYLE),
                                   (f"{clock(view.peak.start)} {view.peak.requests:,}/min", "bold")))
    if view.lowest is not None:
        items.append(Text.assemble((f"{LOWEST_MARK} lowest ", LOWEST_STYLE),
                                   (f"{clock(view.lowest.start)} {view.lowest.requests:,}/min", "bold")))
    return flow(items, width)


def share_lines(view: AnalyticsView, width: int, colours: ColourBook) -> list[Text]:
    """Each server's share of the window's requests, largest first, in its colour."""
    items = [Text.assemble(("■ ", colours.colour(name)), f"{name} ", (f"{share * 100:.1f}%", "bold"))
             for name, share in view.shares.items()]
    if not items:
        return [Text("servers  no requests in the last hour", style="dim")]
    return flow(items, width, "servers ")


def time_axis(minutes: Sequence[MinuteView], clock: MinuteClock) -> Text:
    """Quarter-hour labels under their minute, skipped where they would overlap."""
    cells = [" "] * len(minutes)
    free_from = 0
    for i, minute in enumerate(minutes):
        if minute.minute % AXIS_EVERY == 0 and i >= free_from:
            label = "╵" + clock(minute.start)
            if i + len(label) > len(cells):
                break
            cells[i:i + len(label)] = label
            free_from = i + len(label) + 1
    return Text(" " * GUTTER + "".join(cells), style="dim")


def render_analytics(view: AnalyticsView, width: int, height: int, colours: ColourBook, clock: MinuteClock) -> Text:
    """Everything the view shows, for a ``width`` x ``height`` area."""
    if not view.available:
        return Text.assemble(("analytics unavailable: ", "bold"), (view.reason, ""))
    minutes = visible_minutes(view, width)
    summary = summary_lines(view, width, clock)
    shares = share_lines(view, width, colours)
    rows = bar_rows(height, len(summary) + 4 + len(shares))
    top = max((m.requests for m in view.minutes), default=0)
    peak = view.peak.minute if view.peak else None
    lowest = view.lowest.minute if view.lowest else None
    lines = list(summary)

    columns = [bar_cells(m.requests, top, rows) for m in minutes]
    styles = []
    for m in minutes:
        if m.minute == peak:
            styles.append(PEAK_STYLE)
        elif m.errors:
            styles.append(ERROR_STYLE)
        elif m.minute == lowest:
            styles.append(LOWEST_STYLE)
        elif m.minute >= view.current:
            styles.append(f"{BAR_STYLE} dim")  # the minute still being counted
        else:
            styles.append(BAR_STYLE)
    for row in range(rows):
        label = f"{top:,}" if row == 0 else ("0" if row == rows - 1 else "")
        line = Text(f"{label:>{GUTTER - 2}} ┤" if label else " " * (GUTTER - 1) + "│", style="dim")
        for column, style in zip(columns, styles, strict=True):
            line.append(column[row], style=style)
        lines.append(line)

    marks = Text("req/min".rjust(GUTTER - 1) + " ", style="dim")
    for m in minutes:
        if m.minute == peak:
            marks.append(PEAK_MARK, style=PEAK_STYLE)
        elif m.minute == lowest:
            marks.append(LOWEST_MARK, style=LOWEST_STYLE)
        elif m.errors:
            marks.append(ERROR_MARK, style=ERROR_STYLE)
        else:
            marks.append(" ")
    lines.append(marks)
    lines.append(time_axis(minutes, clock))

    # Each on its own scale, named at the end: on a shared one p50 would be a flat line.
    for label, values, style in (("p50 ms", [m.p50_ms for m in minutes], P50_STYLE),
                                 ("p99 ms", [m.p99_ms for m in minutes], P99_STYLE)):
        top_ms = max(values, default=0.0)
        line = Text(label.rjust(GUTTER - 1) + " ", style="dim")
        line.append(spark(values, top_ms), style=style)
        line.append(f" max {figure(top_ms)}", style="dim")
        lines.append(line)
    lines.extend(shares)
    return Text("\n").join(lines)


class AnalyticsPanel(Widget):
    """Shows an ``AnalyticsView``; ``show`` replaces it and redraws."""

    DEFAULT_CSS = """
    AnalyticsPanel {
        width: 1fr;
        height: 1fr;
        padding: 0 1;
    }
    """

    def __init__(self, colours: ColourBook, clock: MinuteClock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.colours = colours
        self.clock = clock
        self.view = AnalyticsView.unavailable("waiting for the first figures")
        self.draws = 0

    def show(self, view: AnalyticsView) -> None:
        self.view = view
        self.draws += 1
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        return render_analytics(self.view, size.width or 78, size.height or 14, self.colours, self.clock)
