"""Engine events: the one way the UI, the store and the admin stream learn what changed.

The engine never imports its subscribers; it publishes small frozen values and each
subscriber decides what to do with them. Publishing is synchronous and cheap: a
subscriber that needs I/O queues the event and does the work on its own task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Subscriber = Callable[["Event"], None]


@dataclass(frozen=True, slots=True)
class Event:
    """Something an operator would want to see in the log pane."""

    kind: str
    server: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    source: str = "engine"
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One human line, as the log pane and the access log show it."""
        who = f"{self.server}: " if self.server else ""
        parts = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{who}{self.kind}" + (f" ({parts})" if parts else "")


# Event kinds, as constants so subscribers can match on them without typos.
SERVER_ADDED = "server_added"
SERVER_REMOVED = "server_removed"
HEALTH_CHANGED = "health_changed"
ADMIN_STATE_CHANGED = "admin_state_changed"
WEIGHT_CHANGED = "weight_changed"
EJECTED = "ejected"
UNEJECTED = "unejected"
DRAINED = "drained"
ALGORITHM_CHANGED = "algorithm_changed"
PANIC_CHANGED = "panic_changed"
CONFIG_RELOADED = "config_reloaded"


class EventBus:
    """Fan-out of engine events to subscribers; a failing subscriber never breaks routing."""

    __slots__ = ("_subscribers", "errors")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.errors = 0

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken subscriber must not stop the data plane
                self.errors += 1
