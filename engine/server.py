"""A backend server: identity, operator state, health state machine, live load.

Operator state (ready, drain, maint) and health (up, down) are kept apart, as HAProxy
does: an operator can drain a healthy server, and a server in maintenance is still
probed so the operator sees whether it would come back.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import Enum

from engine.stats import TrafficStats

SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def server_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a server, or None when it can.

    One rule for the file and the admin API: the name travels in the sticky cookie's
    value and in URLs, so ``;``, ``,``, ``/``, spaces and control characters are out.
    """
    if SERVER_NAME.match(name):
        return None
    return f"{name[:40]!r}: use letters, digits and . _ : @ - (at most 128)"


# Bumped on every change that can alter which servers are eligible, so routers can cache
# their candidate lists and notice changes made directly on Server objects (seed API).
_generation = [0]


def state_generation() -> int:
    return _generation[0]


def bump_generation() -> None:
    _generation[0] += 1


class AdminState(str, Enum):
    """What the operator asked for."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


class Health(str, Enum):
    """What the checks concluded."""

    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class HealthMachine:
    """Rise/fall counters: a server goes down after ``fall`` consecutive failures and up
    after ``rise`` consecutive successes, so a single bad check never flaps it."""

    rise: int = 2
    fall: int = 3
    state: Health = Health.UP
    successes: int = 0
    failures: int = 0
    last_error: str = ""

    def observe(self, ok: bool, error: str = "") -> Health | None:
        """Feed one check result; returns the new state when it changed."""
        if ok:
            self.failures = 0
            if self.state is Health.DOWN:
                self.successes += 1
                if self.successes >= self.rise:
                    self.state, self.successes = Health.UP, 0
                    return Health.UP
            return None
        self.successes = 0
        self.last_error = error
        if self.state is Health.UP:
            self.failures += 1
            if self.failures >= self.fall:
                self.state, self.failures = Health.DOWN, 0
                return Health.DOWN
        return None

    def force(self, state: Health) -> bool:
        """Set the state directly (operator or seed API); True when it changed."""
        changed = state is not self.state
        self.state, self.successes, self.failures = state, 0, 0
        return changed

    def progress(self) -> str:
        """"up 2/3 fails" or "down 1/2 ok": where the machine stands, for the operator."""
        if self.state is Health.UP:
            return f"up {self.failures}/{self.fall} fails" if self.failures else "up"
        return f"down {self.successes}/{self.rise} ok" if self.successes else "down"


@dataclass(eq=False, slots=True)
class Server:
    """One backend. ``healthy`` and ``active_connections`` are the seed API's names."""

    host: str
    port: int
    weight: int = 1
    name: str = ""
    admin_state: AdminState = AdminState.READY
    health: HealthMachine = field(default_factory=HealthMachine)
    active_connections: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    consecutive_errors: int = 0
    slow_start_from: float = 0.0
    slow_start_window: float = 0.0
    stats: TrafficStats = field(default_factory=TrafficStats)
    ewma_latency: float = 0.0
    ewma_stamp: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.host}:{self.port}"
        if isinstance(self.admin_state, str):
            self.admin_state = AdminState(self.admin_state)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"Server({self.name!r}, {self.host}:{self.port}, weight={self.weight}, {self.status()})"

    @property
    def effective_weight(self) -> float:
        """The weight the policies use: ramps from 10% to full during slow start."""
        if not self.slow_start_window:
            return float(self.weight)
        elapsed = time.monotonic() - self.slow_start_from
        if elapsed >= self.slow_start_window:
            self.slow_start_window = 0.0
            return float(self.weight)
        return self.weight * max(0.1, elapsed / self.slow_start_window)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def healthy(self) -> bool:
        return self.health.state is Health.UP

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.health.force(Health.UP if value else Health.DOWN)
        _generation[0] += 1

    def is_ejected(self, now: float | None = None) -> bool:
        return self.ejected_until > (time.monotonic() if now is None else now)

    @property
    def available(self) -> bool:
        """May receive new requests: ready, up and not ejected."""
        return (
            self.admin_state is AdminState.READY
            and self.health.state is Health.UP
            and (self.ejected_until == 0.0 or not self.is_ejected())
        )

    def status(self) -> str:
        """The operator's one-word-ish summary, e.g. "up", "down 1/2 ok", "ejected 12s"."""
        if self.ejected_until and self.is_ejected():
            return f"ejected {max(0, int(self.ejected_until - time.monotonic()))}s"
        return self.health.progress()

    def to_dict(self) -> dict[str, object]:
        stats = self.stats.to_dict()
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "weight": self.weight,
            "effective_weight": round(self.effective_weight, 3),
            "state": self.health.state.value,
            "status": self.status(),
            "admin_state": self.admin_state.value,
            "ejected": self.is_ejected(),
            "active_connections": self.active_connections,
            **stats,
        }
