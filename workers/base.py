"""A background worker: one owned asyncio task with start, stop, status and last error.

Each worker implements ``step`` (one round of its job). The base class runs it every
``interval`` seconds, turns exceptions into ``last_error`` plus exponential backoff
(the data plane never sees them), and can be woken early with ``wake``. ``status``
is a plain dict, so the dashboard and the admin API show every worker the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

log = logging.getLogger("lbtui.workers")


class WorkerState(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class Worker(ABC):
    """Subclasses set ``name`` and implement ``step``; optionally ``setup``/``teardown``."""

    name: str = "worker"

    def __init__(self, interval: float, *, max_backoff: float = 30.0) -> None:
        if interval <= 0:
            raise ValueError(f"{self.name}: interval must be positive, not {interval!r}")
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.state = WorkerState.IDLE
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ok_at: float | None = None
        self.runs = 0
        self.failures = 0
        self.consecutive_failures = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    # -- what subclasses provide -------------------------------------------------------
    @abstractmethod
    async def step(self) -> None:
        """One round of work; raise to report an error and back off."""

    async def setup(self) -> None:
        """Runs once inside the task before the first step."""

    async def teardown(self) -> None:
        """Runs once when the worker stops (after its task is cancelled)."""

    def details(self) -> dict[str, Any]:
        """Worker-specific fields merged into ``status``."""
        return {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self.state = WorkerState.RUNNING
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"worker:{self.name}")

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the loop to finish its current step and exit; cancel only after ``grace``.

        Cancelling is the last resort: a cancellation that lands inside a driver call can
        be swallowed (pymongo's network layer, Python 3.11's timeout races), after which
        further cancels are ignored and an awaited task never ends. Every wait here is
        bounded.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self._wake.set()
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            self._stopping.clear()
        try:
            await self.teardown()
        finally:
            self.state = WorkerState.STOPPED

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Run the next step now instead of after the interval (or the backoff)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "ok": self.last_error is None or self.consecutive_failures == 0,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_ok_at": self.last_ok_at,
            "runs": self.runs,
            "failures": self.failures,
            "interval": self.interval,
            **self.details(),
        }

    def backoff_delay(self) -> float:
        return min(self.max_backoff, self.interval * 2 ** min(self.consecutive_failures - 1, 16))

    async def run_once(self) -> bool:
        """One step with error accounting; True when it succeeded. Tests call it directly."""
        self.runs += 1
        return await self._guarded(self.step)

    async def _guarded(self, action: Callable[[], Awaitable[None]]) -> bool:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a worker error is a status, never a crash
            self.failures += 1
            self.consecutive_failures += 1
            self.last_error = f"{exc.__class__.__name__}: {exc}"[:300] if str(exc) else exc.__class__.__name__
            self.last_error_at = time.time()
            log.warning("%s: %s", self.name, self.last_error)
            return False
        self.consecutive_failures = 0
        self.last_ok_at = time.time()
        return True

    async def _run(self) -> None:
        # A failing setup is a status with backoff, like a failing step, not a dead task.
        while not self._stopping.is_set() and not await self._guarded(self.setup):
            self.state = WorkerState.BACKOFF
            await self._pause(self.backoff_delay(), self._stopping)
        while not self._stopping.is_set():
            ok = await self.run_once()
            self.state = WorkerState.RUNNING if ok else WorkerState.BACKOFF
            # Backing off, only stop may cut the wait short: a wake-up must not turn into a
            # retry storm against a store that is down.
            await self._pause(self.interval if ok else self.backoff_delay(), self._wake if ok else self._stopping)
            self._wake.clear()

    @staticmethod
    async def _pause(seconds: float, event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
