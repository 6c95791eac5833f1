"""Access log: one JSON line per request, written by a thread so the proxy never waits on disk.

``write`` only appends the record's values to a list. Every ``BATCH_SIZE`` records the
loop formats the list into one bytes object (``format_batch``: C loops, and the fields
that repeat from record to record formatted once per distinct combination), so each
pause stays short; every ``BATCH_SECONDS`` a timer hands everything formatted to a
daemon thread that only writes it (the GIL is released during the write syscall) and
rotates by size, as logrotate's ``size`` rule would: ``access.log`` -> ``access.log.1``
-> ... ``.N``.

Two other designs were measured under wrk and lost. Formatting in the thread: the
thread and the loop then fight for the GIL, and each hand-over is a futex round trip.
A writer process fed ``marshal``-ed records through a pipe: the loop's share shrank in
isolation, but under load the proxy's own CPU per request did not drop (the writer
evicted its caches on the shared cores) and the total rose by the packing.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from dataclasses import dataclass
from itertools import chain

_STOP = object()
BATCH_SECONDS = 0.1
HANDOFF_BYTES = 1 << 20  # formatted bytes held before the writer gets them anyway
BATCH_SIZE = 256
"""Records formatted at once: the loop pauses about 0.3 ms for it. Batches of 8192 (one
per ``BATCH_SECONDS`` at 40,000 requests/s) paused it 5-7 ms and set the proxy's p99."""
_quote = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (C)


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

    def entry(self) -> LogEntry:
        """The record as the log batches it (see ``LogEntry``)."""
        return (
            self.time,
            (self.client, self.method, self.path, self.status, self.server, self.bytes_in, self.bytes_out),
            self.upstream_ms,
            self.total_ms,
        )

    def to_json(self) -> str:
        """One JSON object with the fields of ``asdict(self)``, 3x faster than ``json.dumps``.

        Times are written with fixed decimals (``time`` to the millisecond, as HAProxy
        logs it; the two durations in ms to the microsecond), and the strings that repeat
        (client, method, server) are quoted once and remembered.
        """
        return _line(
            self.time,
            self.client,
            self.method,
            self.path,
            self.status,
            self.server,
            self.bytes_in,
            self.bytes_out,
            self.upstream_ms,
            self.total_ms,
        )

# An access record as the proxy hands it over when nobody needs the record object itself
# (no observers): time, then the fields from client to bytes_out (the ones that repeat
# from request to request, formatted once per distinct combination), then upstream_ms
# and total_ms. Method and path may be the bytes received (latin-1), decoded once.
RecordKey = tuple[str, "str | bytes", "str | bytes", int, "str | None", int, int]
LogEntry = tuple[float, RecordKey, float, float]


def _line(
    time: float,
    client: str,
    method: str,
    path: str,
    status: int,
    server: str | None,
    bytes_in: int,
    bytes_out: int,
    upstream_ms: float,
    total_ms: float,
) -> str:
    return _LINE % (
        time,
        _quoted(client),
        _quoted(_text(method)),
        _quote(_text(path)),
        status,
        "null" if server is None else _quoted(server),
        bytes_in,
        bytes_out,
        upstream_ms,
        total_ms,
    )


_LINE = (
    '{"time":%.3f,"client":%s,"method":%s,"path":%s,"status":%d,"server":%s,'
    '"bytes_in":%d,"bytes_out":%d,"upstream_ms":%.3f,"total_ms":%.3f}'
)
_MEMO_LIMIT = 4096


class _Quoted(dict[str | None, str]):
    """JSON literals of the values that repeat from record to record (client, method,
    server): a lookup that is a C dict hit in the usual case, ``None`` -> ``null``."""

    def __missing__(self, text: str | None) -> str:
        quoted = self[text] = "null" if text is None else _quote(text)
        return quoted


_QUOTED = _Quoted()


def _quoted(text: str) -> str:
    """JSON string literal of a value that repeats from record to record, memoised."""
    if len(_QUOTED) > _MEMO_LIMIT:  # many distinct clients: keep the memo bounded
        _QUOTED.clear()
    return _QUOTED[text]


def _text(value: str | bytes) -> str:
    """A method or path as text: the proxy hands them over as the bytes it received."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Middles(dict[RecordKey, bytes]):
    """The JSON of a record's fields from client to bytes_out, by those fields' values.

    Traffic repeats itself: the same client asks for the same path from the same server
    and gets the same status and size, record after record. Only the three times differ,
    so the rest of the line is formatted once and found again by a C dict lookup.
    """

    def __missing__(self, key: RecordKey) -> bytes:
        client, method, path, status, server, bytes_in, bytes_out = key
        middle = _MIDDLE % (
            _quote(client).encode("ascii"),
            _quote(_text(method)).encode("ascii"),
            _quote(_text(path)).encode("ascii"),
            status,
            b"null" if server is None else _quote(server).encode("ascii"),
            bytes_in,
            bytes_out,
        )
        self[key] = middle
        return middle


_MIDDLE = b'"client":%s,"method":%s,"path":%s,"status":%d,"server":%s,"bytes_in":%d,"bytes_out":%d'
_MIDDLES = _Middles()
_BATCH_LINE = b'{"time":%.3f,%s,"upstream_ms":%.3f,"total_ms":%.3f}\n'


def format_batch(batch: list[LogEntry]) -> bytes:
    """JSON lines of many records at once: every per-record step is a C loop.

    The entries are flattened, each one's key replaced by its JSON from ``_MIDDLES``
    (formatted once per distinct key), and one bytes ``%`` over the line repeated per
    record makes the text. A record that does not format (a bug upstream) is written
    through ``json.dumps`` instead of losing the batch.
    """
    count = len(batch)
    if not count:
        return b""
    if len(_MIDDLES) > _MEMO_LIMIT:  # many distinct clients or paths: keep the memo bounded
        _MIDDLES.clear()
    flat: list[object] = list(chain.from_iterable(batch))
    if len(flat) == 4 * count:
        try:
            flat[1::4] = map(_MIDDLES.__getitem__, flat[1::4])  # type: ignore[arg-type]
            return (_BATCH_LINE * count) % tuple(flat)
        except (TypeError, ValueError, AttributeError):
            pass
    return "".join(map(_safe_line, batch)).encode("ascii")


def _safe_line(entry: object) -> str:
    """One entry's line on its own; one that does not format is written as what it holds."""
    values: tuple[object, ...]
    try:
        time, key, upstream_ms, total_ms = entry  # type: ignore[misc]
        values = (time, *key, upstream_ms, total_ms)  # type: ignore[has-type]
    except (TypeError, ValueError):
        values = ()
    if len(values) == len(_NAMES):
        try:
            return _line(*values) + "\n"  # type: ignore[arg-type]
        except (TypeError, ValueError, AttributeError):
            pass
        fields: dict[str, object] = dict(zip(_NAMES, (_text(v) if isinstance(v, bytes) else v for v in values)))
    else:
        fields = {"malformed": entry}
    return json.dumps(fields, default=str) + "\n"


_NAMES = ("time", "client", "method", "path", "status", "server", "bytes_in", "bytes_out", "upstream_ms", "total_ms")


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
        self._fd = self._open(truncate=False)  # owned by the writer thread from here on
        self._size = os.fstat(self._fd).st_size
        self._closed = False
        self._batch: list[LogEntry] = []
        self._formatted: list[bytes] = []  # formatted batches not yet with the writer
        self._formatted_bytes = self._formatted_records = 0
        self._armed = False  # a hand-off of the batch is scheduled on the event loop
        # (Not ``_thread``: mypyc names a C struct field after the attribute, and
        # ``__thread`` is a C keyword.)
        self._writer = threading.Thread(target=self._run, name="lbtui-accesslog", daemon=True)
        self._writer.start()

    def _open(self, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.path, flags | (os.O_TRUNC if truncate else 0), 0o644)

    def write(self, record: AccessRecord) -> None:
        """Queue one record; never blocks and never raises into the data plane."""
        self.write_entry(record.entry())

    def write_entry(self, entry: LogEntry) -> None:
        """``write`` for a record given as a ``LogEntry``: no object built on the loop."""
        if self._closed:
            return
        batch = self._batch
        batch.append(entry)
        if len(batch) >= BATCH_SIZE:
            self._format()
            if self._formatted_bytes >= HANDOFF_BYTES:
                self._handoff()
        elif not self._armed:
            self._arm()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a thread): hand it over now
            self._handoff()
            return
        self._armed = True
        loop.call_later(BATCH_SECONDS, self._timer)

    def _timer(self) -> None:
        self._armed = False
        self._handoff()

    def _format(self) -> None:
        """Format the batch (on the caller's thread: the loop's) and keep the bytes."""
        batch = self._batch
        if batch:
            self._batch = []
            try:
                data = format_batch(batch)
            except Exception as error:  # noqa: BLE001 - never raise into the data plane
                self.dropped += len(batch)
                self.last_error = f"format: {error}"
                return
            self._formatted.append(data)
            self._formatted_bytes += len(data)
            self._formatted_records += len(batch)

    def _handoff(self) -> None:
        """Format what is left and give everything formatted to the writer thread at once.

        Formatted batches are handed over together (every ``BATCH_SECONDS`` or
        ``HANDOFF_BYTES``), so the thread wakes about ten times a second instead of once
        per ``BATCH_SIZE`` records: each wake-up costs a futex call and two GIL switches.
        """
        self._format()
        if self._formatted:
            data = b"".join(self._formatted)
            records = self._formatted_records
            self._formatted = []
            self._formatted_bytes = self._formatted_records = 0
            self._queue.put((data, records))

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every record written so far is on disk (for tests and shutdown)."""
        self._handoff()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._handoff()
        self._queue.put(_STOP)
        self._writer.join(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        self._handoff()  # on the loop's thread, where ``write`` appends
        await asyncio.to_thread(self.close, timeout)

    # -- writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if type(item) is tuple:
                self._emit(*item)
            elif isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                return

    def _emit(self, data: bytes, records: int) -> None:
        """Write one formatted batch, rotating between lines when a file would pass
        ``max_bytes`` (a single line longer than that gets a file of its own)."""
        view = memoryview(data)
        start, end = 0, len(data)
        try:
            while start < end:
                room = self.max_bytes - self._size
                if end - start <= room:
                    self._write(view[start:])
                    return
                cut = data.rfind(b"\n", start, start + max(room, 0)) + 1
                if cut <= start:  # the next line does not fit
                    if self._size > 0:
                        self._rotate()
                        continue
                    cut = data.find(b"\n", start) + 1 or end
                self._write(view[start:cut])
                start = cut
        except OSError as error:
            self.dropped += data.count(b"\n", start) if start < end else records
            self.last_error = str(error)

    def _write(self, chunk: memoryview) -> None:
        while chunk:
            written = os.write(self._fd, chunk)
            self._size += written
            chunk = chunk[written:]

    def _rotate(self) -> None:
        os.close(self._fd)
        try:
            if self.backups > 0:
                for index in range(self.backups - 1, 0, -1):
                    source = f"{self.path}.{index}"
                    if os.path.exists(source):
                        os.replace(source, f"{self.path}.{index + 1}")
                os.replace(self.path, f"{self.path}.1")
        finally:  # a failed rename still leaves an open file to write to
            self._fd = self._open(truncate=True)
            self._size = 0
