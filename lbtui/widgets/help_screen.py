"""The help screen: what the screen shows (help_screen.md) and every key, from the bindings."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

HELP_TEXT = (Path(__file__).with_name("help_screen.md")).read_text(encoding="utf-8")


def keys_table(bindings: list[tuple[str, str]]) -> Text:
    text = Text()
    for keys, description in bindings:
        text.append(f"{keys:>14}  ", style="bold")
        text.append(f"{description}\n")
    return text


class HelpScreen(ModalScreen[None]):
    """Lists the app's own bindings so the help can never drift from the keys."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 90%;
        max-width: 100;
        height: 90%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen Markdown {
        margin: 0;
        padding: 0;
    }
    """

    BINDINGS = [
        Binding("escape,q,question_mark,f1", "close", "Close", id="help_close"),
        Binding("j,down", "scroll_down", "Down", show=False, id="help_down"),
        Binding("k,up", "scroll_up", "Up", show=False, id="help_up"),
    ]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Help: esc closes"
            yield Static(Text("Keys", style="bold underline"))
            yield Static(keys_table(self.bindings), id="keys")
            yield Markdown(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll_down(self) -> None:
        self.query_one(VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one(VerticalScroll).scroll_up()
