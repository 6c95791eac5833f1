"""The add-server form: validated fields, and the balancer's own refusal shown in place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Function, Integer, Validator
from textual.widgets import Button, Input, Label

from engine.config import host_problem
from engine.server import server_name_problem
from lbtui.control.base import ControlError



@dataclass(frozen=True, slots=True)
class NewServer:
    """What the form collected."""

    name: str
    host: str
    port: int
    weight: int


FIELDS: dict[str, tuple[str, str, list[Validator]]] = {
    "name": ("name", "e.g. web-4 (empty: host:port)", [
        Function(lambda v: not v or server_name_problem(v) is None, "letters, digits, . _ : @ - only")]),
    "host": ("host", "e.g. 127.0.0.1", [Function(lambda v: bool(v) and host_problem(v) is None, "a host name or IP address")]),
    "port": ("port", "1-65535", [Integer(1, 65535, failure_description="port must be 1 to 65535")]),
    "weight": ("weight", "0-1000", [Integer(0, 1000, failure_description="weight must be 0 to 1000")]),
}


class AddServerModal(ModalScreen[NewServer | None]):
    """Calls ``submit`` with the form; stays open showing the error if it is refused."""

    DEFAULT_CSS = """
    AddServerModal {
        align: center middle;
    }
    AddServerModal > Vertical {
        width: 56;
        height: auto;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    AddServerModal Horizontal.field {
        height: 3;
    }
    AddServerModal Horizontal.field Label {
        width: 8;
        padding: 1 0 0 0;
    }
    AddServerModal Input {
        width: 1fr;
    }
    AddServerModal #error {
        color: $error;
        height: auto;
    }
    AddServerModal #buttons {
        height: 3;
        align-horizontal: right;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="add_cancel")]

    def __init__(self, submit: Callable[[NewServer], Awaitable[None]]) -> None:
        super().__init__()
        self.submit = submit

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Add a server"
            for key, (label, placeholder, validators) in FIELDS.items():
                with Horizontal(classes="field"):
                    yield Label(label)
                    value = "1" if key == "weight" else ("127.0.0.1" if key == "host" else "")
                    yield Input(value, placeholder=placeholder, validators=validators, id=f"field-{key}")
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Add (enter)", variant="primary", id="add")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#field-name", Input).focus()

    def collect(self) -> NewServer | str:
        """The form's values, or the first problem with them."""
        values: dict[str, str] = {}
        for key in FIELDS:
            field = self.query_one(f"#field-{key}", Input)
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                return f"{key}: {'; '.join(result.failure_descriptions)}"
            values[key] = field.value.strip()
        port, weight = int(values["port"]), int(values["weight"])
        return NewServer(values["name"] or f"{values['host']}:{port}", values["host"], port, weight)

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    async def add(self) -> None:
        form = self.collect()
        error = self.query_one("#error", Label)
        if isinstance(form, str):
            error.update(form)
            return
        try:
            await self.submit(form)
        except ControlError as exc:
            error.update(str(exc))
            return
        self.dismiss(form)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
