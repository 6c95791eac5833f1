"""Books in one MongoDB collection shared by every backend (PyMongo's asyncio API).

With a shared collection a book written through one backend is readable through all,
so only the carts (kept per backend) still depend on stickiness.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from cloud.bookstore.repository import DuplicateIsbn, Page, new_id, seed_books

TIMEOUT_MS = 5000


class MongoBookRepository:
    """The ``BookRepository`` contract over a ``books`` collection (``_id`` is the book id)."""

    def __init__(self, uri: str, database: str = "lbtui_bookstore") -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=TIMEOUT_MS, connectTimeoutMS=TIMEOUT_MS, socketTimeoutMS=TIMEOUT_MS
        )
        self._books = self._client[database]["books"]

    async def connect(self) -> None:
        try:
            await self._client.admin.command("ping")
            await self._books.create_index("isbn", unique=True, sparse=True)
        except PyMongoError as exc:
            await self._client.close()
            raise OSError(f"MongoDB unreachable: {exc.__class__.__name__}") from None

    @staticmethod
    def _out(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        doc = dict(doc)
        doc["id"] = doc.pop("_id")
        return doc

    async def list(self, q: str, page: int, per_page: int) -> Page:
        query: dict[str, Any] = {}
        if q:
            pattern = {"$regex": re.escape(q), "$options": "i"}
            query = {"$or": [{"title": pattern}, {"author": pattern}]}
        total = await self._books.count_documents(query)
        cursor = self._books.find(query).sort([("title", 1), ("_id", 1)]).skip((page - 1) * per_page).limit(per_page)
        return Page([self._out(d) async for d in cursor], total)  # type: ignore[misc]

    async def get(self, book_id: str) -> dict[str, Any] | None:
        return self._out(await self._books.find_one({"_id": book_id}))

    async def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        doc = {**self._clean_isbn(fields), "_id": new_id(), "created_at": now, "updated_at": now}
        try:
            await self._books.insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateIsbn(str(exc)) from exc
        return self._out(doc)  # type: ignore[return-value]

    async def update(self, book_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        sets = {**fields, "updated_at": time.time()}
        unset = {k: "" for k, v in sets.items() if k == "isbn" and v is None}
        for key in unset:
            sets.pop(key)
        change: dict[str, Any] = {"$set": sets}
        if unset:
            change["$unset"] = unset
        try:
            doc = await self._books.find_one_and_update({"_id": book_id}, change, return_document=True)
        except DuplicateKeyError as exc:
            raise DuplicateIsbn(str(exc)) from exc
        return self._out(doc)

    async def delete(self, book_id: str) -> bool:
        return (await self._books.delete_one({"_id": book_id})).deleted_count > 0

    async def seed(self, count: int) -> None:
        now = time.time()
        for i, book in enumerate(seed_books(count)):
            await self._books.update_one(
                {"_id": f"seed{i:06d}"},
                {"$setOnInsert": {**book, "created_at": now, "updated_at": now}},
                upsert=True,
            )

    async def close(self) -> None:
        await self._client.close()

    @staticmethod
    def _clean_isbn(fields: dict[str, Any]) -> dict[str, Any]:
        # A sparse unique index ignores missing fields, not nulls: drop a null ISBN.
        return {k: v for k, v in fields.items() if not (k == "isbn" and v is None)}
