"""The embedded store: one SQLite file from the standard library, used when no MongoDB is set.

sqlite3 is blocking, so every call runs in a worker thread (``asyncio.to_thread``)
behind one lock: the event loop never waits on disk. The same semantics as the MongoDB
store (last writer wins, tombstones, rollups keyed by minute) so the sync worker cannot
tell them apart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cloud.store.base import ServerRecord, Store, StoreError, merge_rollup, normalize_server, now, version_of

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL, updated_by TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS servers_updated_at ON servers(updated_at);
CREATE TABLE IF NOT EXISTS settings (id INTEGER PRIMARY KEY CHECK (id = 1), doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (client TEXT PRIMARY KEY, server TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS analytics (minute INTEGER PRIMARY KEY, doc TEXT NOT NULL);
"""


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: str | Path = "lbtui-state.db", *, max_events: int = 10_000) -> None:
        self.path = str(path)
        self.max_events = max_events
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._events_since_trim = 0

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._db is None:
                    raise StoreError("store is closed")
                try:
                    with self._db:  # one transaction per call
                        return fn(self._db)
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite {self.path}: {exc}") from exc

        return await asyncio.to_thread(call)

    async def connect(self) -> None:
        def open_db() -> sqlite3.Connection:
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                return db
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc

        if self._db is None:
            self._db = await asyncio.to_thread(open_db)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(db.close)

    # -- servers ------------------------------------------------------------------------
    async def list_servers(self) -> list[ServerRecord]:
        rows = await self._run(lambda db: db.execute("SELECT doc FROM servers ORDER BY name").fetchall())
        docs = [json.loads(row[0]) for row in rows]
        return [d for d in docs if not d.get("deleted")]

    async def upsert_server(self, record: Mapping[str, Any]) -> bool:
        doc = normalize_server(record)

        def write(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO servers(name, doc, updated_at, updated_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at, "
                "updated_by = excluded.updated_by "
                "WHERE excluded.updated_at > servers.updated_at OR "
                "(excluded.updated_at = servers.updated_at AND excluded.updated_by > servers.updated_by)",
                (doc["name"], json.dumps(doc), doc["updated_at"], doc["updated_by"]),
            )
            return cur.rowcount > 0

        return await self._run(write)

    async def changes(self, since: float) -> list[ServerRecord]:
        rows = await self._run(lambda db: db.execute(
            "SELECT doc FROM servers WHERE updated_at > ? ORDER BY updated_at", (since,)).fetchall())
        return [json.loads(row[0]) for row in rows]

    # -- settings -----------------------------------------------------------------------
    async def get_settings(self) -> dict[str, Any]:
        row = await self._run(lambda db: db.execute("SELECT doc FROM settings WHERE id = 1").fetchone())
        return json.loads(row[0]) if row else {}

    async def put_settings(self, settings: Mapping[str, Any]) -> bool:
        doc = dict(settings)
        doc.setdefault("updated_at", now())

        def write(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT doc FROM settings WHERE id = 1").fetchone()
            if row and version_of(json.loads(row[0])) >= version_of(doc):
                return False
            db.execute("INSERT OR REPLACE INTO settings(id, doc) VALUES (1, ?)", (json.dumps(doc),))
            return True

        return await self._run(write)

    # -- sessions -----------------------------------------------------------------------
    async def put_session(self, client: str, server: str, expires: float) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO sessions(client, server, expires) VALUES (?, ?, ?)",
            (client, server, float(expires))))

    async def list_sessions(self) -> list[dict[str, Any]]:
        def read(db: sqlite3.Connection) -> list[tuple[str, str, float]]:
            cutoff = time.time()
            db.execute("DELETE FROM sessions WHERE expires <= ?", (cutoff,))  # what Mongo's TTL index does
            return db.execute("SELECT client, server, expires FROM sessions").fetchall()

        return [{"client": c, "server": s, "expires": e} for c, s, e in await self._run(read)]

    # -- events -------------------------------------------------------------------------
    async def append_event(self, event: Mapping[str, Any]) -> None:
        doc = json.dumps(dict(event), default=str)
        self._events_since_trim += 1
        trim = self._events_since_trim >= max(1, self.max_events // 10)
        if trim:
            self._events_since_trim = 0

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO events(at, doc) VALUES (?, ?)", (float(event.get("at") or now()), doc))
            if trim:  # retention: keep only the newest max_events rows
                db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (self.max_events,))

        await self._run(write)

    async def list_events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT doc FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall())
        return [json.loads(row[0]) for row in reversed(rows)]

    # -- analytics ----------------------------------------------------------------------
    async def put_rollup(self, doc: Mapping[str, Any]) -> None:
        rollup = merge_rollup(doc)
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO analytics(minute, doc) VALUES (?, ?)",
            (rollup["minute"], json.dumps(rollup))))

    async def list_rollups(self, since: int = 0) -> list[dict[str, Any]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT doc FROM analytics WHERE minute >= ? ORDER BY minute", (int(since),)).fetchall())
        return [json.loads(row[0]) for row in rows]

    async def prune_rollups(self, before: int) -> int:
        return await self._run(lambda db: db.execute(
            "DELETE FROM analytics WHERE minute < ?", (int(before),)).rowcount)
