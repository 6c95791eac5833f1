"""The MongoDB store, through PyMongo's asyncio API (``AsyncMongoClient``; motor is end-of-life).

Collections: ``servers`` (unique name, indexed updated_at), ``settings`` (one document),
``sessions`` (TTL index on ``expires``), ``events`` (capped where the server supports it,
trimmed otherwise) and ``analytics`` (unique minute). Indexes are created on connect and
every write is idempotent: server and settings writes carry ``updated_at`` and only
replace older documents (last writer wins), rollups replace by minute.

Change notification: ``supports_watch`` is true on replica sets and sharded clusters
(where MongoDB has change streams); standalone servers, and nx-27017 which the tests
use, are polled. The sync worker treats a change notice only as a wake-up and always
reads through ``changes(since)``, so correctness never depends on change streams and
the polling path is the one the tests exercise.

The URI's password never leaves this module: ``describe`` and every error message are
redacted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure, PyMongoError

from cloud.store.base import ServerRecord, Store, StoreError, merge_rollup, normalize_server, now, version_of

_NO_ID = {"_id": 0}


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ``***`` (usernames are kept: they help)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "mongodb://***"
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _password_of(uri: str) -> str | None:
    """The URI's password, to scrub it from driver messages; None for a malformed URI."""
    try:
        return urlsplit(uri).password if "@" in uri else None
    except ValueError:
        return None


def _older_than(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A filter matching documents that ``doc`` supersedes (see ``version_of``)."""
    at, by = version_of(doc)
    return {"$or": [{"updated_at": {"$lt": at}}, {"updated_at": at, "updated_by": {"$lt": by}}]}


class MongoStore(Store):
    kind = "mongo"

    def __init__(
        self,
        uri: str,
        database: str = "lbtui",
        *,
        timeout: float = 2.0,
        max_events: int = 10_000,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._uri = uri
        self.database = database
        self.timeout = timeout
        self.max_events = max_events
        self._options = dict(client_options or {})
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._events_since_trim = 0
        self._password = _password_of(uri)

    def describe(self) -> str:
        return f"{redact_uri(self._uri)} db={self.database}"

    def _error(self, action: str, exc: BaseException) -> StoreError:
        message = f"mongodb {action}: {exc.__class__.__name__}: {exc}"
        if self._password:
            message = message.replace(self._password, "***")
        return StoreError(message[:300])

    @property
    def _db(self) -> Any:
        if self._client is None:
            raise StoreError("mongodb store is not connected")
        return self._client[self.database]

    async def connect(self) -> None:
        if self._client is None:
            ms = int(self.timeout * 1000)
            try:
                self._client = AsyncMongoClient(
                    self._uri,
                    serverSelectionTimeoutMS=ms,
                    connectTimeoutMS=ms,
                    socketTimeoutMS=ms * 2,
                    appname="lbtui",
                    tz_aware=True,
                    **self._options,
                )
            except (PyMongoError, ValueError, TypeError) as exc:
                # A malformed URI (InvalidURI, ConfigurationError) is the caller's StoreError
                # like any other; it must not escape as a driver traceback.
                raise self._error("connect", exc) from None
        try:
            await self._client.admin.command("ping")
            db = self._db
            await db.servers.create_index("name", unique=True)
            await db.servers.create_index([("updated_at", ASCENDING)])
            await db.sessions.create_index("client", unique=True)
            await db.sessions.create_index("expires", expireAfterSeconds=0)
            await db.analytics.create_index("minute", unique=True)
            if "events" not in await db.list_collection_names():
                try:
                    await db.create_collection("events", capped=True, size=16 * 1024 * 1024, max=self.max_events)
                except (CollectionInvalid, OperationFailure):
                    pass  # exists already, or capped unsupported: append_event trims instead
            await db.events.create_index([("at", DESCENDING)])
        except PyMongoError as exc:
            raise self._error("connect", exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- servers ------------------------------------------------------------------------
    async def list_servers(self) -> list[ServerRecord]:
        try:
            cursor = self._db.servers.find({"deleted": {"$ne": True}}, _NO_ID).sort("name", ASCENDING)
            return [doc async for doc in cursor]
        except PyMongoError as exc:
            raise self._error("list servers", exc) from exc

    async def upsert_server(self, record: Mapping[str, Any]) -> bool:
        doc = normalize_server(record)
        try:
            # Matches only an older document (or none, then inserts); a newer one makes the
            # upsert collide with the unique name index: that is "stale write, ignored".
            await self._db.servers.update_one({"name": doc["name"], **_older_than(doc)}, {"$set": doc}, upsert=True)
            return True
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise self._error("write server", exc) from exc

    async def changes(self, since: float) -> list[ServerRecord]:
        try:
            cursor = self._db.servers.find({"updated_at": {"$gt": since}}, _NO_ID).sort("updated_at", ASCENDING)
            return [doc async for doc in cursor]
        except PyMongoError as exc:
            raise self._error("read changes", exc) from exc

    # -- settings -----------------------------------------------------------------------
    async def get_settings(self) -> dict[str, Any]:
        try:
            doc = await self._db.settings.find_one({"_id": "settings"})
        except PyMongoError as exc:
            raise self._error("read settings", exc) from exc
        if not doc:
            return {}
        doc.pop("_id", None)
        return dict(doc)

    async def put_settings(self, settings: Mapping[str, Any]) -> bool:
        doc = {k: v for k, v in settings.items() if k != "_id"}
        doc.setdefault("updated_at", now())
        try:
            await self._db.settings.update_one({"_id": "settings", **_older_than(doc)}, {"$set": doc}, upsert=True)
            return True
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise self._error("write settings", exc) from exc

    # -- sessions -----------------------------------------------------------------------
    async def put_session(self, client: str, server: str, expires: float) -> None:
        expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)  # a BSON date, for the TTL index
        try:
            await self._db.sessions.update_one(
                {"client": client},
                {"$set": {"client": client, "server": server, "expires": expires_at, "expires_ts": float(expires)}},
                upsert=True)
        except PyMongoError as exc:
            raise self._error("write session", exc) from exc

    async def list_sessions(self) -> list[dict[str, Any]]:
        # The TTL monitor runs about once a minute, so expired sessions may linger: filter.
        cutoff = now()
        try:
            cursor = self._db.sessions.find({"expires_ts": {"$gt": cutoff}}, _NO_ID)
            return [
                {"client": d["client"], "server": d["server"], "expires": float(d["expires_ts"])}
                async for d in cursor
            ]
        except PyMongoError as exc:
            raise self._error("read sessions", exc) from exc

    # -- events -------------------------------------------------------------------------
    async def append_event(self, event: Mapping[str, Any]) -> None:
        doc = {k: v for k, v in event.items() if k != "_id"}
        doc.setdefault("at", now())
        try:
            await self._db.events.insert_one(doc)
            self._events_since_trim += 1
            if self._events_since_trim >= max(1, self.max_events // 10):
                self._events_since_trim = 0
                await self._trim_events()
        except PyMongoError as exc:
            raise self._error("append event", exc) from exc

    async def _trim_events(self) -> None:
        cursor = self._db.events.find({}, {"at": 1}).sort("at", DESCENDING).skip(self.max_events).limit(1)
        oldest_kept = [doc async for doc in cursor]
        if oldest_kept:
            await self._db.events.delete_many({"at": {"$lte": oldest_kept[0]["at"]}})

    async def list_events(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            cursor = self._db.events.find({}, _NO_ID).sort("at", DESCENDING).limit(limit)
            docs = [doc async for doc in cursor]
        except PyMongoError as exc:
            raise self._error("read events", exc) from exc
        return list(reversed(docs))

    # -- analytics ----------------------------------------------------------------------
    async def put_rollup(self, doc: Mapping[str, Any]) -> None:
        rollup = merge_rollup(doc)
        try:
            await self._db.analytics.replace_one({"minute": rollup["minute"]}, rollup, upsert=True)
        except PyMongoError as exc:
            raise self._error("write rollup", exc) from exc

    async def list_rollups(self, since: int = 0) -> list[dict[str, Any]]:
        try:
            cursor = self._db.analytics.find({"minute": {"$gte": int(since)}}, _NO_ID).sort("minute", ASCENDING)
            return [doc async for doc in cursor]
        except PyMongoError as exc:
            raise self._error("read rollups", exc) from exc

    async def prune_rollups(self, before: int) -> int:
        try:
            result = await self._db.analytics.delete_many({"minute": {"$lt": int(before)}})
        except PyMongoError as exc:
            raise self._error("prune rollups", exc) from exc
        return result.deleted_count

    # -- change streams -------------------------------------------------------------------
    async def supports_watch(self) -> bool:
        """True on a replica set or sharded cluster, where MongoDB offers change streams.

        A standalone server (and nx-27017, which reports itself as one) is polled. nx-27017
        0.8 does answer ``watch``, but cancelling its pending getMore proved unreliable in
        our tests, so it is not trusted to push notices.
        """
        try:
            hello = await self._client.admin.command("hello") if self._client else {}
        except PyMongoError:
            return False
        return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"

    async def watch(self) -> AsyncIterator[bool]:  # type: ignore[override]
        """Yields True per change on ``servers`` and False on each idle half second, so the
        consumer can stop between reads: cancelling a pending getMore can leave the
        cursor's cleanup waiting on the server. Raises StoreError when the stream breaks."""
        try:
            async with await self._db.servers.watch(max_await_time_ms=500) as stream:
                while stream.alive:
                    change = await stream.try_next()
                    yield change is not None
        except PyMongoError as exc:
            raise self._error("change stream", exc) from exc
