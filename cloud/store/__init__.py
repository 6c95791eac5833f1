"""Shared state: one Store interface, an embedded SQLite store and a MongoDB store."""

from __future__ import annotations

from cloud.store.base import ServerRecord, Store, StoreError, normalize_server
from cloud.store.sqlite import SqliteStore


def open_store(mongodb_uri: str | None = None, *, database: str = "lbtui", path: str = "lbtui-state.db") -> Store:
    """MongoDB when a URI is configured, else the embedded file store."""
    if mongodb_uri:
        from cloud.store.mongo import MongoStore

        return MongoStore(mongodb_uri, database)
    return SqliteStore(path)


__all__ = ["ServerRecord", "SqliteStore", "Store", "StoreError", "normalize_server", "open_store"]
