"""Store sync: keep the engine and the shared store in step, in both directions.

- At start (first successful connect) the store is loaded: its servers, settings and
  sticky sessions are applied to the engine; local servers the store does not know
  (e.g. from the config file) are pushed to it. The store is authoritative.
- Local changes (engine events whose source is not ``"store"``: operator, admin,
  health, outlier, strategist, discovery...) are queued and pushed at once. The queue
  keeps the newest record per server, so while the store is down nothing is lost and
  the replay after reconnecting is short and idempotent.
- Remote changes (another lbtui, or a person editing MongoDB) are read with
  ``changes(since)`` every ``interval`` (1 s by default, so within the 2 s promise).
  Where the store supports change streams a notice wakes the loop at once; the read
  path stays the same, so polling is the one correctness path (nx-27017, used by the
  tests, is exercised with polling forced as well as with its change streams).
- Remote changes are applied with ``source="store"`` so they are not echoed back, and
  only when something really differs (the engine's setters are no-ops otherwise), so
  the ring is rebuilt only on real membership, weight or health changes.
- Conflicts: last writer wins by ``updated_at``, in the store and here; each conflict
  is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cloud.store import Store, StoreError
from cloud.store.base import version_of
from engine import events as ev
from engine.balancer import LoadBalancer
from engine.config import host_problem, server_name_problem
from engine.events import Event
from engine.server import AdminState, Health, Server
from workers.base import Worker

log = logging.getLogger("lbtui.store")

SERVER_KINDS = frozenset({ev.SERVER_ADDED, ev.WEIGHT_CHANGED, ev.ADMIN_STATE_CHANGED, ev.HEALTH_CHANGED})
MAX_PENDING_SESSIONS = 10_000
MAX_PENDING_EVENTS = 1_000


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def server_record(server: Server, updated_at: float, updated_by: str) -> dict[str, Any]:
    """The store's view of one engine server."""
    return {
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "weight": server.weight,
        "admin_state": server.admin_state.value,
        "health": server.health.state.value,
        "instance_id": server.meta.get("instance_id") or None,
        "updated_at": updated_at,
        "updated_by": updated_by,
        "deleted": False,
    }


class StoreSync(Worker):
    name = "store-sync"

    def __init__(
        self,
        lb: LoadBalancer,
        store: Store,
        *,
        interval: float = 1.0,
        node_id: str | None = None,
        use_watch: bool | None = None,
        apply_remote_health: bool = True,
        overlap: float = 5.0,
        reconcile_every: float = 10.0,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval, max_backoff=max_backoff)
        self.lb = lb
        self.store = store
        self.node_id = node_id or default_node_id()
        self.use_watch = use_watch  # None: detect; False: always poll
        self.apply_remote_health = apply_remote_health
        self.overlap = overlap
        self.reconcile_every = reconcile_every
        self.clock = clock
        self.connected = False
        self.loaded = False
        self.mode = "polling"
        self.pushed = 0
        self.applied = 0
        self.conflicts = 0
        self._since = 0.0
        self._last_reconcile = 0.0
        self._versions: dict[str, tuple[float, str]] = {}
        self._settings_version: tuple[float, str] = (0.0, "")
        self._resync = False
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_settings: dict[str, Any] | None = None
        self._pending_sessions: dict[str, tuple[str, float]] = {}
        self._pending_events: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING_EVENTS)
        self._unsubscribe: Callable[[], None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_stop = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        # Subscribe before the first connect: actions taken while the store is still
        # unreachable are queued, not lost.
        if self._unsubscribe is None:
            self._unsubscribe = self.lb.events.subscribe(self._on_event)
            if self.lb.affinity is not None and self.lb.affinity.on_pin is None:
                self.lb.affinity.on_pin = self._on_pin
        super().start()

    async def teardown(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.lb.affinity is not None and self.lb.affinity.on_pin == self._on_pin:
            self.lb.affinity.on_pin = None
        await self._stop_watch()
        if self.connected and self.pending:
            with contextlib.suppress(Exception):  # best effort: the queue is lost only on exit
                async with asyncio.timeout(2.0):
                    await self._flush()

    @property
    def pending(self) -> int:
        return (len(self._pending) + len(self._pending_sessions) + len(self._pending_events)
                + (self._pending_settings is not None))

    def details(self) -> dict[str, Any]:
        return {
            "store": self.store.describe(),
            "connected": self.connected,
            "loaded": self.loaded,
            "mode": self.mode,
            "pending": self.pending,
            "pushed": self.pushed,
            "applied": self.applied,
            "conflicts": self.conflicts,
        }

    # -- local changes -> queue ---------------------------------------------------------
    def _stamp(self, name: str) -> float:
        """Now, but strictly after any version seen for ``name`` (clocks may disagree)."""
        stamp = max(self.clock(), self._versions.get(name, (0.0, ""))[0] + 1e-6)
        self._versions[name] = (stamp, self.node_id)
        return stamp

    def _queue_server(self, server: Server) -> None:
        self._pending[server.name] = server_record(server, self._stamp(server.name), self.node_id)

    def _queue_settings(self) -> None:
        stamp = max(self.clock(), self._settings_version[0] + 1e-6)
        self._settings_version = (stamp, self.node_id)
        self._pending_settings = {
            "algorithm": self.lb.algorithm,
            "hash_key": str(self.lb.hash_key),
            "balance_factor": self.lb.balance_factor,
            "updated_at": stamp,
            "updated_by": self.node_id,
        }

    def _on_event(self, event: Event) -> None:
        if event.source == "store":
            return  # applied from the store: pushing it back would echo
        self._pending_events.append({**event.to_dict(), "node": self.node_id})
        if event.kind == ev.SERVER_REMOVED and event.server:
            stamp = self._stamp(event.server)
            self._pending[event.server] = {
                "name": event.server, "deleted": True, "updated_at": stamp, "updated_by": self.node_id,
            }
        elif event.kind in SERVER_KINDS and event.server:
            server = self.lb.get_server(event.server)
            if server is not None:
                self._queue_server(server)
        elif event.kind == ev.ALGORITHM_CHANGED:
            self._queue_settings()
        self.wake()

    def _on_pin(self, client: str, server: Server, expires: float) -> None:
        pending = self._pending_sessions
        pending.pop(client, None)
        pending[client] = (server.name, expires)
        while len(pending) > MAX_PENDING_SESSIONS:
            pending.pop(next(iter(pending)))

    # -- the loop -------------------------------------------------------------------------
    async def step(self) -> None:
        try:
            if not self.connected:
                await self._connect()
            await self._flush()
            await self._pull()
        except StoreError:
            if self.connected:
                log.warning("store %s unreachable; routing on last known state, queueing changes",
                            self.store.describe())
            self.connected = False
            await self._stop_watch()
            raise

    async def _connect(self) -> None:
        await self.store.connect()
        self.connected = True
        log.info("store %s connected", self.store.describe())
        if not self.loaded:
            await self._initial_load()
        if self.use_watch is not False and await self.store.supports_watch():
            self.mode = "change-stream"
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="store-sync:watch")
        else:
            self.mode = "polling"

    async def _initial_load(self) -> None:
        records = await self.store.changes(0.0)  # tombstones included
        settings = await self.store.get_settings()
        sessions = await self.store.list_sessions()
        in_store = {r["name"] for r in records}
        for record in records:
            self._apply_remote(record)
        for server in list(self.lb.servers):
            if server.name not in in_store and server.name not in self._pending:
                self._queue_server(server)
        if settings:
            self._apply_settings(settings)
        elif self._pending_settings is None:
            self._queue_settings()
        affinity = self.lb.affinity
        if affinity is not None:
            for session in sessions:
                server = self.lb.get_server(session["server"])
                if server is not None:
                    affinity.restore(session["client"], server, float(session["expires"]))
        self.loaded = True
        log.info("store loaded: %d servers, %d sessions", len(self.lb.servers), len(sessions))

    async def _flush(self) -> None:
        for name, record in list(self._pending.items()):
            written = await self.store.upsert_server(record)
            if self._pending.get(name) is record:
                del self._pending[name]
            if written:
                self.pushed += 1
            else:
                self.conflicts += 1
                self._resync = True  # read the winner even if its clock lags ours
                log.warning("conflict on %s: the store holds a newer change; local change superseded", name)
        if self._pending_settings is not None:
            settings = self._pending_settings
            if not await self.store.put_settings(settings):
                self.conflicts += 1
                self._settings_version = (0.0, "")  # let the stored winner apply on the next read
                log.warning("conflict on settings: the store holds newer ones")
            if self._pending_settings is settings:
                self._pending_settings = None
        for client, (server, expires) in list(self._pending_sessions.items()):
            await self.store.put_session(client, server, expires)
            if self._pending_sessions.get(client) == (server, expires):
                del self._pending_sessions[client]
        while self._pending_events:
            await self.store.append_event(self._pending_events[0])
            self._pending_events.popleft()

    async def _pull(self) -> None:
        since = 0.0 if self._resync else self._since - self.overlap
        self._resync = False
        for record in await self.store.changes(since):
            self._apply_remote(record)
        settings = await self.store.get_settings()
        if settings:
            self._apply_settings(settings)
        now = time.monotonic()
        if now - self._last_reconcile >= self.reconcile_every:
            self._last_reconcile = now
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Catch deletions made behind lbtui's back (a person removing a document)."""
        present = {r["name"] for r in await self.store.list_servers()}
        for server in list(self.lb.servers):
            name = server.name
            if name not in present and name in self._versions and name not in self._pending:
                log.info("%s: gone from the store; removing", name)
                self.lb.remove_server(name, source="store")
                self.applied += 1

    # -- applying remote state ------------------------------------------------------------
    def _apply_remote(self, record: dict[str, Any]) -> None:
        try:
            name = str(record["name"])
            version = version_of(record)
        except (KeyError, TypeError, ValueError) as exc:
            # A document edited by hand (no name, updated_at as a string) must not stop
            # every later record, the settings and the reconcile from being read.
            log.warning("skipping a malformed store record %r: %s", record.get("name"), exc)
            return
        self._since = max(self._since, version[0])
        if version <= self._versions.get(name, (0.0, "")):
            return  # our own write coming back, or something already applied
        if name in self._pending:
            self.conflicts += 1
            log.warning("conflict on %s: remote change by %s is newer; it wins over the queued local one",
                        name, record.get("updated_by") or "?")
            del self._pending[name]
        self._versions[name] = version
        try:
            if self._apply_to_engine(record):
                self.applied += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: cannot apply store record: %s", name, exc)

    def _apply_to_engine(self, record: dict[str, Any]) -> bool:
        """Make the engine match ``record``; True when anything changed."""
        lb, name = self.lb, record["name"]
        server = lb.get_server(name)
        if record.get("deleted"):
            if server is None:
                return False
            lb.remove_server(name, source="store")
            return True
        host, port = str(record["host"]), int(record["port"])
        # The same rules as the config file and the admin API: the name rides in the
        # sticky cookie, the host goes to the resolver.
        problem = server_name_problem(name) or host_problem(host)
        if problem is None and not 1 <= port <= 65535:
            problem = f"port must be from 1 to 65535, not {port}"
        if problem is not None:
            raise ValueError(problem)
        changed = False
        if server is not None and (server.host, server.port) != (host, port):
            lb.remove_server(name, source="store")
            server, changed = None, True
        if server is None:
            new = Server(host, port, weight=int(record.get("weight", 1)), name=name,
                         admin_state=AdminState(record.get("admin_state", "ready")))
            if record.get("instance_id"):
                new.meta["instance_id"] = str(record["instance_id"])
            if self.apply_remote_health and record.get("health") == Health.DOWN.value:
                new.health.force(Health.DOWN)
            lb.add_server(new, source="store")
            return True
        if record.get("instance_id") and server.meta.get("instance_id") != record["instance_id"]:
            server.meta["instance_id"] = str(record["instance_id"])
        weight = int(record.get("weight", server.weight))
        if weight != server.weight:
            lb.set_weight(name, weight, source="store")
            changed = True
        state = AdminState(record.get("admin_state", server.admin_state.value))
        if state is not server.admin_state:
            lb.set_admin_state(name, state, source="store")
            changed = True
        health = record.get("health")
        if self.apply_remote_health and health in ("up", "down") and health != server.health.state.value:
            lb.set_health(name, health == "up", source="store")
            changed = True
        return changed

    def _apply_settings(self, settings: dict[str, Any]) -> None:
        version = version_of(settings)
        if version <= self._settings_version:
            return
        if self._pending_settings is not None:
            self.conflicts += 1
            log.warning("conflict on settings: remote change is newer; it wins over the queued local one")
            self._pending_settings = None
        self._settings_version = version
        algorithm = settings.get("algorithm")
        if not algorithm:
            return
        hash_key = settings.get("hash_key") or str(self.lb.hash_key)
        factor = settings.get("balance_factor")
        if (algorithm, hash_key, factor) == (self.lb.algorithm, str(self.lb.hash_key), self.lb.balance_factor):
            return
        try:
            self.lb.set_algorithm(algorithm, source="store", hash_key=hash_key, balance_factor=factor)
            self.applied += 1
        except ValueError as exc:
            log.warning("cannot apply store settings: %s", exc)

    # -- change streams ------------------------------------------------------------------
    async def _watch(self) -> None:
        try:
            async for changed in self.store.watch():
                if self._watch_stop:
                    break
                if changed:
                    self.wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the poll loop still runs; just note it
            log.info("change stream ended (%s); polling", exc)
        self.mode = "polling"

    async def _stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is None:
            return
        # Ask the stream to end between reads (it yields at least every half second);
        # cancel only if it does not, and never wait on it unboundedly.
        self._watch_stop = True
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        self._watch_stop = False
