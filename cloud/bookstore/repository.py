"""Where books live: one SQLite file per backend (stdlib, run off the event loop).

SQLite calls block, so each one runs in a worker thread via ``asyncio.to_thread``; a lock
serialises them because one connection is shared by those threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cloud.bookstore.model import make_isbn13

T = TypeVar("T")
COLUMNS = ("id", "title", "author", "year", "isbn", "price", "stock", "created_at", "updated_at")


class DuplicateIsbn(Exception):
    """Another book already carries this ISBN."""


@dataclass(slots=True)
class Page:
    """One page of a listing and the total it was cut from."""

    items: list[dict[str, Any]]
    total: int


class BookRepository(Protocol):
    """The storage the bookstore API needs; SQLite and MongoDB implement it."""

    async def list(self, q: str, page: int, per_page: int) -> Page: ...
    async def get(self, book_id: str) -> dict[str, Any] | None: ...
    async def create(self, fields: dict[str, Any]) -> dict[str, Any]: ...
    async def update(self, book_id: str, fields: dict[str, Any]) -> dict[str, Any] | None: ...
    async def delete(self, book_id: str) -> bool: ...
    async def seed(self, count: int) -> None: ...
    async def close(self) -> None: ...


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def seed_books(count: int) -> list[dict[str, Any]]:
    """Deterministic sample books, so every backend seeded with N holds the same titles."""
    return [
        {
            "title": f"Sample Book {i:05d}",
            "author": f"Author {i % 97:02d}",
            "year": 1900 + i % 125,
            "isbn": make_isbn13(i),
            "price": round(5 + (i * 37 % 5000) / 100, 2),
            "stock": i % 50,
        }
        for i in range(count)
    ]


class SqliteBookRepository:
    """Books in one SQLite file (or ``:memory:``) owned by one backend."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS books (id TEXT PRIMARY KEY, title TEXT NOT NULL,"
                " author TEXT NOT NULL, year INTEGER, isbn TEXT UNIQUE, price REAL NOT NULL DEFAULT 0,"
                " stock INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
            )

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._conn)

        return await asyncio.to_thread(locked)

    async def list(self, q: str, page: int, per_page: int) -> Page:
        def query(conn: sqlite3.Connection) -> Page:
            where, params = "", []
            if q:
                pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where = " WHERE title LIKE ? ESCAPE '\\' OR author LIKE ? ESCAPE '\\'"
                params = [pattern, pattern]
            total = conn.execute(f"SELECT COUNT(*) FROM books{where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT * FROM books{where} ORDER BY title, id LIMIT ? OFFSET ?",
                [*params, per_page, (page - 1) * per_page],
            ).fetchall()
            return Page([dict(r) for r in rows], int(total))

        return await self._run(query)

    async def get(self, book_id: str) -> dict[str, Any] | None:
        def query(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT * FROM books WHERE id = ?", (book_id,)).fetchone()
            return dict(row) if row else None

        return await self._run(query)

    async def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        book = {**fields, "id": new_id(), "created_at": now, "updated_at": now}

        def insert(conn: sqlite3.Connection) -> dict[str, Any]:
            try:
                conn.execute(
                    f"INSERT INTO books ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [book.get(c) for c in COLUMNS],
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateIsbn(str(exc)) from exc
            return book

        return await self._run(insert)

    async def update(self, book_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        changes = {**fields, "updated_at": time.time()}

        def write(conn: sqlite3.Connection) -> dict[str, Any] | None:
            sets = ", ".join(f"{k} = ?" for k in changes)
            try:
                cursor = conn.execute(f"UPDATE books SET {sets} WHERE id = ?", [*changes.values(), book_id])
            except sqlite3.IntegrityError as exc:
                raise DuplicateIsbn(str(exc)) from exc
            if cursor.rowcount == 0:
                return None
            row = conn.execute("SELECT * FROM books WHERE id = ?", (book_id,)).fetchone()
            return dict(row)

        return await self._run(write)

    async def delete(self, book_id: str) -> bool:
        return await self._run(lambda conn: conn.execute("DELETE FROM books WHERE id = ?", (book_id,)).rowcount > 0)

    async def seed(self, count: int) -> None:
        now = time.time()
        rows = [[f"seed{i:06d}", *b.values(), now, now] for i, b in enumerate(seed_books(count))]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT OR IGNORE INTO books ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                rows,
            )

        await self._run(insert)

    async def close(self) -> None:
        await self._run(lambda conn: conn.close())


async def open_repository(
    *, db: str | None = None, mongodb_uri: str | None = None, mongodb_db: str = "lbtui_bookstore"
) -> BookRepository:
    """The backend's own SQLite file (default in memory), or the shared MongoDB collection."""
    if mongodb_uri:
        from cloud.bookstore.mongo import MongoBookRepository

        repo = MongoBookRepository(mongodb_uri, mongodb_db)
        await repo.connect()
        return repo
    return await asyncio.to_thread(SqliteBookRepository, db or ":memory:")
