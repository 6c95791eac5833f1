"""Access log: one JSON line per request, written by a thread so the proxy never waits on disk.

``write`` only appends the record to a queue (no formatting, no I/O on the event loop);
a daemon thread drains the queue in batches, serialises and rotates by size, as
logrotate's ``size`` rule would: ``access.log`` -> ``access.log.1`` -> ... ``.N``.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from dataclasses import asdict, dataclass

_STOP = object()


@dataclass(slots=True)
class AccessRecord:
    """One finished request. Times in ms; ``server`` is None when none was chosen."""

    time: float  # wall clock (epoch seconds) when the request head arrived
    client: str
    method: str
    path: str
    status: int
    server: str | None
    bytes_in: int  # request body bytes received from the client
    bytes_out: int  # response body bytes sent to the client
    upstream_ms: float
    total_ms: float

    def to_json(self) -> str:
        data = asdict(self)
        data["upstream_ms"] = round(self.upstream_ms, 3)
        data["total_ms"] = round(self.total_ms, 3)
        return json.dumps(data, separators=(",", ":"))


class AccessLog:
    """Size-rotated JSON-lines access log with a background writer thread."""

    def __init__(self, path: str, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0  # records lost to write errors (disk full, permissions)
        self.last_error = ""
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - owned by the writer thread
        self._size = self._file.tell()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lbtui-accesslog", daemon=True)
        self._thread.start()

    def write(self, record: AccessRecord) -> None:
        """Queue one record; never blocks and never raises into the data plane."""
        if not self._closed:
            self._queue.put(record)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every record queued so far is on disk (for tests and shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.close, timeout)

    # -- writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            lines: list[str] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                elif isinstance(item, AccessRecord):
                    lines.append(item.to_json())
                if len(lines) >= 512:
                    self._emit(lines)
                    lines = []
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines:
                self._emit(lines)
            try:
                self._file.flush()
            except OSError as error:
                self.last_error = str(error)
            for marker in markers:
                marker.set()
            if stop:
                self._file.close()
                return

    def _emit(self, lines: list[str]) -> None:
        try:
            for line in lines:
                data = line + "\n"
                if self._size + len(data) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._file.write(data)
                self._size += len(data)
        except OSError as error:
            self.dropped += len(lines)
            self.last_error = str(error)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                source = f"{self.path}.{index}"
                if os.path.exists(source):
                    os.replace(source, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
            mode = "a"
        else:
            mode = "w"
        self._file = open(self.path, mode, encoding="utf-8")  # noqa: SIM115
        self._file.truncate(0)
        self._size = 0
