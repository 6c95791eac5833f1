"""The operator's terminal: servers, ring, totals and log over one ``Control``.

The app never touches engine objects: every read and every action goes through
``lbtui.control.base.Control``, so the same screen steers an embedded balancer or a
remote one. A single refresh loop redraws at most four times a second, as a diff, and
sleeps while updates are paused or a dialog is open. The analytics view (``v``) takes the
place of the table and the ring; while it shows, only it and the totals are redrawn, it
at most once a second (the worker's minutes change slowly).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from engine.gateway import Gateway
from lbtui.control.base import (
    AnalyticsView,
    Control,
    ControlError,
    EventView,
    Link,
    LocationView,
    RingView,
    ServerView,
)
from lbtui.control.inprocess import InProcessControl
from lbtui.widgets.add_server_modal import AddServerModal, NewServer
from lbtui.widgets.algorithm_modal import AlgorithmChoice, AlgorithmModal
from lbtui.widgets.analytics_view import AnalyticsPanel
from lbtui.widgets.confirm_modal import ConfirmModal
from lbtui.widgets.help_screen import HelpScreen
from lbtui.widgets.key_finder import KeyFinder
from lbtui.widgets.log_pane import LogPane, clock_time
from lbtui.widgets.palette import ColourBook
from lbtui.widgets.ring import HashRing
from lbtui.widgets.servers_table import SORTABLE, ServersTable

REFRESH_SECONDS = 0.25  # four redraws a second is plenty for eyes
ANALYTICS_SECONDS = 1.0  # the analytics view redraws at most this often
RING_MAX_AGE = 5.0  # refetch the ring at least this often, in case an event was missed
RING_POINTS = 2048
RING_MIN_WIDTH, RING_MAX_WIDTH = 24, 48
TABLE_FULL_WIDTH = 113  # every column at a comfortable width, plus the scrollbar

# Actions on the selected server or the balancer: disabled while a dialog is open.
OPERATOR_ACTIONS = frozenset(
    {"fail", "maint", "drain", "ready", "weight_up", "weight_down", "add_server", "remove_server",
     "algorithm", "key_finder", "filter", "sort", "sort_reverse", "pause", "analytics"}
)
# Actions on the servers table: off (and out of the footer) while analytics hides it.
TABLE_ACTIONS = frozenset(
    {"fail", "maint", "drain", "ready", "weight_up", "weight_down", "remove_server", "filter", "sort",
     "sort_reverse"}
)


def ring_width(width: int) -> int:
    """The ring panel's width: small until the table has room for every column."""
    return max(RING_MIN_WIDTH, min(RING_MAX_WIDTH, width - TABLE_FULL_WIDTH))


class LbtuiApp(App[None]):
    """Run with ``await LbtuiApp(control).run_async()`` inside an existing event loop."""

    CSS_PATH = "app.tcss"
    TITLE = "lbtui"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("f", "fail", "Fail/up", id="fail", tooltip="force the selected server down, or up again"),
        Binding("m", "maint", "Maint", id="maint"),
        Binding("d", "drain", "Drain", id="drain"),
        Binding("r", "ready", "Ready", id="ready"),
        Binding("plus,equals_sign", "weight_up", "Weight+", id="weight_up", key_display="+"),
        Binding("minus", "weight_down", "Weight-", id="weight_down", key_display="-"),
        Binding("a", "add_server", "Add", id="add_server"),
        Binding("x,delete", "remove_server", "Remove", id="remove_server"),
        Binding("g", "algorithm", "Algorithm", id="algorithm"),
        Binding("e", "key_finder", "Find key", id="key_finder"),
        Binding("slash", "filter", "Filter", id="filter", key_display="/"),
        Binding("v", "analytics", "Analytics", id="analytics"),
        Binding("s", "sort", "Sort", id="sort", show=False),
        Binding("S", "sort_reverse", "Reverse sort", id="sort_reverse", show=False),
        Binding("p,space", "pause", "Pause", id="pause"),
        Binding("question_mark,f1", "help", "Help", id="help", key_display="?"),
        Binding("q,ctrl+q", "quit", "Quit", id="quit", priority=False),
        Binding("escape", "close_filter", "Close filter", id="close_filter", show=False),
    ]

    DESCRIPTIONS = {
        "fail": "Fail the selected server (force down), or bring it up again",
        "maint": "Put the selected server in maintenance",
        "drain": "Drain the selected server: no new requests, open ones finish",
        "ready": "Make the selected server ready again",
        "weight_up": "Raise the selected server's weight by one",
        "weight_down": "Lower the selected server's weight by one",
        "add_server": "Add a server (form)",
        "remove_server": "Remove the selected server (asks first)",
        "algorithm": "Switch the routing algorithm and hash key",
        "key_finder": "Key finder: where a key lands and who serves it",
        "filter": "Filter the servers table",
        "sort": "Sort by the next column",
        "sort_reverse": "Reverse the sort order",
        "analytics": "Analytics: requests per minute over the last hour, errors, p50/p99, peak, lowest, "
                     "server shares (v again: back to the servers)",
        "pause": "Pause or resume live updates",
        "help": "Show this help",
        "quit": "Quit (embedded: stops the balancer gracefully, asks first)",
    }

    def __init__(
        self,
        control: Control,
        *,
        title: str = "lbtui",
        refresh_seconds: float = REFRESH_SECONDS,
        log_clock: Callable[[float], str] = clock_time,
        on_quit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.control = control
        self.title = title
        self.sub_title = control.description
        self.refresh_seconds = refresh_seconds
        self.log_clock = log_clock
        self.on_quit = on_quit
        self.colours = ColourBook()
        self.paused = False
        self.refreshes = 0
        self.views: dict[str, ServerView] = {}
        self.link = control.link
        self._events: deque[EventView] = deque(maxlen=2000)
        self._unsubscribe: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._ring_dirty = True
        self._ring_at = 0.0
        self._ring_view = RingView()
        self._availability: dict[str, bool] = {}
        self._poller: asyncio.Task[None] | None = None
        self._analytics_at = -1e9
        self._analytics_shown = False
        self.last_key = ""

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        from lbtui.widgets.totals import TotalsBar

        yield Header(show_clock=False)
        yield TotalsBar(id="totals")
        with Horizontal(id="body"):
            with Vertical(id="servers-pane"):
                yield Input(placeholder="filter: name, address, state (esc closes)", id="filter")
                yield ServersTable(self.colours, id="servers")
            with Vertical(id="ring-pane") as ring_pane:
                ring_pane.border_title = "hash ring"
                yield HashRing(self.colours, id="ring")
        with Vertical(id="analytics-pane") as analytics_pane:
            analytics_pane.border_title = "analytics: last hour per minute (v: back)"
            yield AnalyticsPanel(self.colours, self._minute_clock, id="analytics")
        yield LogPane(clock=self.log_clock, id="log")
        yield Footer()

    @property
    def table(self) -> ServersTable:
        return self.query_one(ServersTable)

    @property
    def ring(self) -> HashRing:
        return self.query_one(HashRing)

    @property
    def log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    @property
    def analytics_panel(self) -> AnalyticsPanel:
        return self.query_one(AnalyticsPanel)

    @property
    def analytics_shown(self) -> bool:
        """True while the analytics view stands in for the table and the ring."""
        return self._analytics_shown

    def _minute_clock(self, at: float) -> str:
        """A minute's label in the log's clock (its HH:MM), so the two read alike."""
        return self.log_clock(at)[:5]

    async def on_mount(self) -> None:
        self.table.focus()
        try:
            await self.control.start()
        except ControlError as exc:
            self.log_pane.error(str(exc))
        self._unsubscribe = self.control.subscribe(self._on_event)
        self._poller = asyncio.create_task(self._poll(), name="lbtui-refresh")

    async def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.control.close()

    def on_resize(self) -> None:
        width, height = self.size
        self.query_one("#ring-pane").styles.width = ring_width(width)
        self.log_pane.styles.height = 5 if height < 30 else 7  # 80x24 keeps room for rows

    # -- refresh --------------------------------------------------------------------------
    def _on_event(self, event: EventView) -> None:
        """Called by the control for each event; cheap, because the engine may be routing."""
        self._events.append(event)
        if event.changes_ring:
            self._ring_dirty = True
            self._wake.set()

    def wake(self) -> None:
        """Refresh now rather than at the next tick (after an operator action)."""
        self._wake.set()

    def _dialog_open(self) -> bool:
        return len(self.screen_stack) > 1

    async def _poll(self) -> None:
        due = time.monotonic()
        while True:
            if not self.paused and not self._dialog_open():
                await self.refresh_now()
            # Refreshes keep a fixed cadence (a timer that fires late under load does not
            # push every later one back), never overlap, and never come in a burst to
            # catch up after a stall.
            now = time.monotonic()
            due = max(due + self.refresh_seconds, now + 0.02)
            remaining = due - now
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
                await asyncio.sleep(0.02)  # let a burst of events settle into one redraw
            except TimeoutError:
                pass

    async def refresh_now(self) -> None:
        """One refresh: fetch, then apply everything inside a single batch update."""
        ring: RingView | None = None
        analytics: AnalyticsView | None = None
        shown = self.analytics_shown
        try:
            servers, totals = await self.control.snapshot()
            now = time.monotonic()
            if shown and now - self._analytics_at >= ANALYTICS_SECONDS:
                self._analytics_at = now
                analytics = await self._fetch_analytics()
            if not shown and (self._ring_dirty or now - self._ring_at > RING_MAX_AGE):
                self._ring_dirty = False
                ring = await self.control.ring(RING_POINTS)
                self._ring_at = now
        except ControlError:
            self.link = self.control.link
            self.query_one("#totals").show(link=self.link.value, paused=self.paused)  # type: ignore[attr-defined]
            self._flush_events()
            return
        self.link = self.control.link
        self.views = {s.name: s for s in servers}
        availability = {s.name: s.available for s in servers}
        with self.batch_update():
            self.query_one("#totals").show(totals, link=self.link.value, paused=self.paused)  # type: ignore[attr-defined]
            if analytics is not None:
                self.analytics_panel.show(analytics)
            if not shown:
                self.table.show(servers)
            if not shown and (ring is not None or availability != self._availability):
                self._ring_view = ring or self._ring_view
                self._availability = availability
                self.ring.show(self._ring_view, availability)
            self._flush_events()
        self.refreshes += 1

    async def _fetch_analytics(self) -> AnalyticsView:
        try:
            return await self.control.analytics()
        except ControlError as exc:
            return AnalyticsView.unavailable(str(exc))

    def _flush_events(self) -> None:
        log = self.log_pane
        while self._events:
            log.add_event(self._events.popleft())
        sample = self.control.sampled_request()
        if sample is not None:
            log.request(sample)

    # -- operator actions -----------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in OPERATOR_ACTIONS and self._dialog_open():
            return False
        # The table's keys are off (and out of the footer) while analytics hides it.
        return not (action in TABLE_ACTIONS and self.analytics_shown)

    def _selected(self) -> ServerView | None:
        name = self.table.selected
        view = self.views.get(name) if name else None
        if view is None:
            self.notify("No server selected", severity="warning", timeout=2)
        return view

    def _act(self, text: str, call: Callable[[], Awaitable[None]]) -> None:
        """Log the action as typed, run it off the key handler, then refresh."""
        self.log_pane.action(text)
        self.run_worker(self._run(text, call), group="actions", exit_on_error=False)

    async def _run(self, text: str, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except ControlError as exc:
            self.log_pane.error(f"{text}: {exc}")
            self.notify(str(exc), title=text, severity="error", timeout=4)
        self._ring_dirty = True
        self.wake()

    def action_fail(self) -> None:
        server = self._selected()
        if server is not None:
            up = server.state != "up"
            self._act(f"{'recover' if up else 'fail'} {server.name}", partial(self.control.set_health, server.name, up))

    def action_maint(self) -> None:
        if server := self._selected():
            self._act(f"maint {server.name}", partial(self.control.maint, server.name))

    def action_drain(self) -> None:
        if server := self._selected():
            self._act(f"drain {server.name}", partial(self.control.drain, server.name))

    def action_ready(self) -> None:
        if server := self._selected():
            self._act(f"ready {server.name}", partial(self.control.ready, server.name))

    def _change_weight(self, delta: int) -> None:
        if server := self._selected():
            weight = max(0, min(1000, server.weight + delta))
            server.weight = weight  # so a quick second press builds on the first
            self._act(f"weight {server.name} → {weight}", partial(self.control.set_weight, server.name, weight))

    def action_weight_up(self) -> None:
        self._change_weight(+1)

    def action_weight_down(self) -> None:
        self._change_weight(-1)

    def action_add_server(self) -> None:
        async def submit(form: NewServer) -> None:
            await self.control.add_server(form.name, form.host, form.port, form.weight)

        def added(form: NewServer | None) -> None:
            if form is not None:
                self.log_pane.action(f"add {form.name} {form.host}:{form.port} weight {form.weight}")
                self._ring_dirty = True
                self.wake()

        self.push_screen(AddServerModal(submit), added)

    def action_remove_server(self) -> None:
        server = self._selected()
        if server is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(f"remove {server.name}", partial(self.control.remove_server, server.name))

        self.push_screen(ConfirmModal(f"Remove {server.name} ({server.address}) from the pool?", "Remove"), confirmed)

    async def action_algorithm(self) -> None:
        try:
            algorithms = await self.control.algorithms()
        except ControlError as exc:
            self.log_pane.error(str(exc))
            return
        totals = self.query_one("#totals").totals  # type: ignore[attr-defined]

        def chosen(choice: AlgorithmChoice | None) -> None:
            if choice is not None:
                text = f"algorithm {choice.algorithm}" + (f" on {choice.hash_key}" if choice.hash_key else "")
                self._act(text, partial(self.control.set_algorithm, choice.algorithm, choice.hash_key))

        self.push_screen(AlgorithmModal(algorithms, totals.algorithm, totals.hash_key), chosen)

    def action_key_finder(self) -> None:
        def located(location: LocationView | None) -> None:
            self.ring.marker = location.position if location is not None else None
            if location is not None:
                self.last_key = location.key

        def closed(_: None) -> None:
            if self.last_key:
                self.log_pane.action(f"find key {self.last_key!r}")

        self.push_screen(KeyFinder(self.control.locate, self.colours, located, self.last_key), closed)

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("visible")
        field.focus()

    def action_close_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if field.has_focus or field.has_class("visible"):
            if not field.value:
                field.remove_class("visible")
            self.table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.action_close_filter()

    def action_sort(self) -> None:
        table = self.table
        column = SORTABLE[(SORTABLE.index(table.sort_column) + 1) % len(SORTABLE)]
        table.set_sort(column)
        self.log_pane.action(f"sort by {column}{' (reversed)' if table.sort_reverse else ''}")

    def action_sort_reverse(self) -> None:
        table = self.table
        table.set_sort(table.sort_column, not table.sort_reverse)
        self.log_pane.action(f"sort by {table.sort_column}{' (reversed)' if table.sort_reverse else ''}")

    def action_analytics(self) -> None:
        """Swap the servers table and ring for the analytics view, or back.

        Not logged: like opening the help, it changes what is seen, not the balancer.
        """
        show = self._analytics_shown = not self._analytics_shown
        self.query_one("#body").display = not show
        self.query_one("#analytics-pane").display = show
        if show:
            self._analytics_at = -1e9  # draw at once, then at most once a second
        else:
            self._ring_dirty = True  # the ring was not kept current while hidden
            self.table.focus()
        self.refresh_bindings()
        self.wake()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.log_pane.action("pause updates" if self.paused else "resume updates")
        self.query_one("#totals").show(paused=self.paused)  # type: ignore[attr-defined]
        self.wake()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, str]]:
        """Every key with its description, straight from the bindings."""
        rows = [("↑ ↓ / j k", "Move the cursor"), ("ctrl+p", "Command palette: every action by name")]
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action == "close_filter":
                continue
            keys = " ".join(self.get_key_display(Binding(k, binding.action)) for k in binding.key.split(","))
            rows.append((keys, self.DESCRIPTIONS.get(binding.action, binding.description)))
        return rows

    async def action_quit(self) -> None:
        if not self.control.embedded:
            self.exit()
            return

        async def stop(yes: bool | None) -> None:
            if not yes:
                return
            self.log_pane.action("quit: stopping the balancer")
            try:
                await self.control.shutdown()
                if self.on_quit is not None:
                    await self.on_quit()
            finally:
                self.exit()

        self.push_screen(ConfirmModal("Stop the load balancer and quit?", "Stop and quit"), stop)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if self._dialog_open() and screen is not self.screen_stack[0]:
            return
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action in self.DESCRIPTIONS and binding.action != "quit" and self.check_action(
                binding.action, ()
            ):
                yield SystemCommand(
                    f"{binding.description} ({self.get_key_display(Binding(binding.key.split(',')[0], ''))})",
                    self.DESCRIPTIONS[binding.action],
                    partial(self.run_action, binding.action),
                )


async def run_app(control: Control, *, title: str = "lbtui", on_quit: Callable[[], Awaitable[None]] | None = None) -> None:
    """Open the terminal app in the running event loop; returns when the operator quits."""
    await LbtuiApp(control, title=title, on_quit=on_quit).run_async()


async def run_embedded(gateway: Gateway, *, title: str = "lbtui", headless: bool = False) -> None:
    """The dashboard over a running Gateway in this event loop; quitting stops it gracefully.

    The operator's quit is confirmed in the app; the gateway is stopped after the screen
    closed, so the terminal is back before in-flight requests finish. A stop asked for
    elsewhere (SIGTERM, the admin API) closes the screen the same way.
    """
    app = LbtuiApp(InProcessControl.for_gateway(gateway), title=title)

    async def close_when_stopping() -> None:
        await gateway.wait_stop_requested()
        app.exit()

    watcher = asyncio.create_task(close_when_stopping(), name="lbtui-ui-stop-watch")
    try:
        await app.run_async(headless=headless)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        # Shielded: if our caller gives up waiting, the graceful stop still completes.
        await asyncio.shield(gateway.stop())


__all__ = ["LbtuiApp", "Link", "run_app", "run_embedded"]
