"""The key finder: type a key, see where it lands and who serves it if its owner fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from lbtui.control.base import ControlError, LocationView
from lbtui.widgets.palette import ColourBook


def describe(location: LocationView, colours: ColourBook) -> Text:
    """The answer as the operator reads it."""

    def server(name: str | None) -> Text:
        if not name:
            return Text("none", style="bold reverse")
        return Text(name, style=f"bold {colours.colour(name)}")

    text = Text()
    hash_text = f"{location.hash:#018x}" if isinstance(location.hash, int) else str(location.hash)
    rows: list[tuple[str, Text]] = [
        ("hash", Text(hash_text)),
        ("position", Text(f"{location.position:.6f} ({location.position * 360:.1f}° clockwise)")),
        ("owner", server(location.owner)),
        ("serving", server(location.serving) if location.serving or location.owner else server(None)),
        ("fallbacks", Text(" → ").join([server(n) for n in location.fallbacks]) or Text("none")),
        ("if owner fails", server(location.if_owner_fails)),
    ]
    for label, value in rows:
        text.append(f"{label:>14}  ", style="dim")
        text.append_text(value)
        text.append("\n")
    policy = location.algorithm
    if policy and location.serving is None and location.owner:
        text.append(f"\n{policy} does not route by key: the ring owner is shown for reference.", style="italic")
    elif location.serving and location.owner and location.serving != location.owner:
        text.append("\nThe owner cannot take it now; the next server on the ring serves it.", style="italic")
    text.rstrip()
    return text


class KeyFinder(ModalScreen[None]):
    """Looks keys up as they are typed; reports each answer through ``on_location``."""

    DEFAULT_CSS = """
    KeyFinder {
        align: left middle;
        background: $background 40%;
    }
    KeyFinder > Vertical {
        width: 56;
        max-width: 100%;
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    KeyFinder #key-row {
        height: 1;
        margin-bottom: 1;
    }
    KeyFinder #key-label {
        width: auto;
        color: $text-muted;
    }
    KeyFinder #key {
        width: 1fr;
        background: $boost;
    }
    KeyFinder #answer {
        height: auto;
        min-height: 6;
    }
    """

    BINDINGS = [Binding("escape", "close", "Close", id="key_finder_close")]

    def __init__(
        self,
        locate: Callable[[str], Awaitable[LocationView]],
        colours: ColourBook,
        on_location: Callable[[LocationView | None], None] = lambda _: None,
        key: str = "",
    ) -> None:
        super().__init__()
        self.locate = locate
        self.colours = colours
        self.on_location = on_location
        self.initial_key = key
        self.location: LocationView | None = None

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Key finder"
            box.border_subtitle = "esc closes"
            with Horizontal(id="key-row"):
                yield Label("key ", id="key-label")
                # compact: one line, no border, so the field always sits inside the frame
                yield Input(self.initial_key, placeholder="a path, client IP, user id...", id="key", compact=True)
            yield Static("", id="answer")

    def on_mount(self) -> None:
        self.query_one("#key", Input).focus()
        if self.initial_key:
            self.lookup(self.initial_key)

    @on(Input.Changed, "#key")
    def changed(self, event: Input.Changed) -> None:
        self.lookup(event.value)

    @work(exclusive=True, group="locate")
    async def lookup(self, key: str) -> None:
        answer = self.query_one("#answer", Static)
        if not key:
            self.location = None
            answer.update("")
            self.on_location(None)
            return
        try:
            location = await self.locate(key)
        except ControlError as exc:
            answer.update(Text(str(exc), style="bold"))
            return
        self.location = location
        answer.update(describe(location, self.colours))
        self.on_location(location)

    def action_close(self) -> None:
        self.dismiss(None)
