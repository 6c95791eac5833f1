"""Switch the routing policy (and the request part hashed for the key-based ones)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

HELP = {
    "round_robin": "each server in turn",
    "weighted_round_robin": "smooth weighted (nginx)",
    "least_connections": "fewest in flight",
    "least_request": "power of two choices",
    "peak_ewma": "lowest recent latency",
    "random": "uniform random",
    "consistent_hash": "ring on the hash key",
    "bounded_hash": "ring with bounded loads",
    "maglev": "Maglev lookup table",
}


@dataclass(frozen=True, slots=True)
class AlgorithmChoice:
    algorithm: str
    hash_key: str | None


class AlgorithmModal(ModalScreen[AlgorithmChoice | None]):
    """Pick with arrows/j/k and enter; the hash key field applies to key-based policies."""

    DEFAULT_CSS = """
    AlgorithmModal {
        align: center middle;
    }
    AlgorithmModal > Vertical {
        width: 52;
        height: auto;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    AlgorithmModal OptionList {
        height: auto;
        max-height: 12;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="algorithm_cancel"),
        Binding("j", "cursor_down", "Down", show=False, id="algorithm_down"),
        Binding("k", "cursor_up", "Up", show=False, id="algorithm_up"),
    ]

    def __init__(self, algorithms: list[str], current: str, hash_key: str) -> None:
        super().__init__()
        self.algorithms = algorithms
        self.current = current
        self.hash_key = hash_key

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Routing policy"
            options = [Option(f"{name:<22} {HELP.get(name, '')}", id=name) for name in self.algorithms]
            yield OptionList(*options, id="algorithms")
            yield Label("hash key (client_ip, path, header:NAME, cookie:NAME, query:NAME)")
            yield Input(self.hash_key, id="hash_key")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.algorithms:
            options.highlighted = self.algorithms.index(self.current)
        options.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        key = self.query_one("#hash_key", Input).value.strip()
        self.dismiss(AlgorithmChoice(str(event.option.id), key if key and key != self.hash_key else None))

    def action_cursor_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()

    def action_cancel(self) -> None:
        self.dismiss(None)
