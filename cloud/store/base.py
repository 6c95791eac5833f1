"""The store interface shared by the embedded (SQLite) and MongoDB implementations.

Records are plain dicts so ``cloud`` needs nothing from the engine; the workers
translate between records and engine objects. Every write is idempotent and server
records obey last-writer-wins by ``updated_at`` (ties broken by ``updated_by``): a write older than what the store
holds is ignored, so replaying a queue after an outage can never undo a newer change.
Deleting a server leaves a tombstone (``deleted: True``) so pollers learn of removals.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any

ServerRecord = dict[str, Any]
SERVER_FIELDS = ("name", "host", "port", "weight", "admin_state", "health", "instance_id",
                 "updated_at", "updated_by", "deleted")


class StoreError(Exception):
    """The store could not be reached or refused a write; the message carries no secrets."""


def now() -> float:
    return time.time()


def normalize_server(record: Mapping[str, Any]) -> ServerRecord:
    """A server record with exactly the known fields and sane defaults."""
    if not record.get("name"):
        raise ValueError("a server record needs a name")
    out: ServerRecord = {
        "name": str(record["name"]),
        "host": str(record.get("host", "")),
        "port": int(record.get("port", 0)),
        "weight": int(record.get("weight", 1)),
        "admin_state": str(record.get("admin_state", "ready")),
        "health": str(record.get("health", "up")),
        "instance_id": record.get("instance_id") or None,
        "updated_at": float(record.get("updated_at") or now()),
        "updated_by": str(record.get("updated_by", "")),
        "deleted": bool(record.get("deleted", False)),
    }
    return out


def version_of(doc: Mapping[str, Any]) -> tuple[float, str]:
    """The total order of writes: ``updated_at``, ties broken by ``updated_by``.

    Without the tie-break two nodes stamping the same instant could each keep their own
    value forever; with it every node and the store agree on one winner.
    """
    return float(doc.get("updated_at") or 0.0), str(doc.get("updated_by") or "")


def merge_rollup(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A rollup document keyed by its integer minute (replaced whole on re-put)."""
    if "minute" not in doc:
        raise ValueError("a rollup needs an integer 'minute'")
    out = dict(doc)
    out["minute"] = int(doc["minute"])
    out.pop("_id", None)
    return out


class Store(ABC):
    """Async persistence for shared lbtui state."""

    #: "sqlite" or "mongo", for status lines.
    kind: str = "store"

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and create tables/indexes; raises StoreError when unreachable."""

    @abstractmethod
    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the store lives, with any password redacted."""
        return self.kind

    # -- servers ------------------------------------------------------------------------
    @abstractmethod
    async def list_servers(self) -> list[ServerRecord]:
        """Live (not deleted) server records."""

    @abstractmethod
    async def upsert_server(self, record: Mapping[str, Any]) -> bool:
        """Write a record unless the store holds a newer one; True when it was written."""

    async def delete_server(self, name: str, *, updated_at: float | None = None, updated_by: str = "") -> bool:
        """Tombstone a server (last writer wins like any other write)."""
        return await self.upsert_server({
            "name": name, "deleted": True, "updated_at": updated_at or now(), "updated_by": updated_by,
        })

    @abstractmethod
    async def changes(self, since: float) -> list[ServerRecord]:
        """Every server record (tombstones included) with ``updated_at`` after ``since``."""

    # -- settings -----------------------------------------------------------------------
    @abstractmethod
    async def get_settings(self) -> dict[str, Any]: ...

    @abstractmethod
    async def put_settings(self, settings: Mapping[str, Any]) -> bool:
        """Replace the settings unless newer ones are stored (by ``updated_at``)."""

    # -- sticky sessions ----------------------------------------------------------------
    @abstractmethod
    async def put_session(self, client: str, server: str, expires: float) -> None: ...

    @abstractmethod
    async def list_sessions(self) -> list[dict[str, Any]]:
        """Unexpired sessions: {client, server, expires}."""

    # -- events and analytics -------------------------------------------------------------
    @abstractmethod
    async def append_event(self, event: Mapping[str, Any]) -> None: ...

    @abstractmethod
    async def list_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest events, oldest first."""

    @abstractmethod
    async def put_rollup(self, doc: Mapping[str, Any]) -> None:
        """Store one minute's rollup, replacing any earlier one for that minute."""

    @abstractmethod
    async def list_rollups(self, since: int = 0) -> list[dict[str, Any]]:
        """Rollups with ``minute >= since``, in minute order."""

    @abstractmethod
    async def prune_rollups(self, before: int) -> int:
        """Delete rollups older than ``before`` (epoch minute); returns how many."""

    # -- change notification ----------------------------------------------------------------
    async def supports_watch(self) -> bool:
        """Whether ``watch`` can push change notices; otherwise callers poll ``changes``."""
        return False

    def watch(self) -> AsyncIterator[bool]:
        """Yields True per remote change notice, False when idle (a chance to stop).
        Only valid when ``supports_watch``."""
        raise NotImplementedError
