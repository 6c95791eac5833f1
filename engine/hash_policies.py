"""Key-based policies: consistent hashing (optionally with bounded loads) and Maglev.

The ring keeps every configured server, whatever its health: a key whose owner is down
walks clockwise to the next acceptable server and comes home when the owner recovers,
so health changes move only the keys of the server that changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from engine.hashring import ConsistentHash
from engine.maglev import Maglev
from engine.policies import Policy, RoundRobin
from engine.server import Server


class ConsistentHashPolicy(Policy):
    """Consistent hashing on a request key, with optional bounded loads.

    ``balance_factor`` (HAProxy's ``hash-balance-factor`` as a ratio, e.g. 1.25) caps any
    server at ceil(c x average in-flight), the Mirrokni-Thorup-Zadimoghaddam scheme: a
    hot key spills to the next server on the ring instead of overloading its owner.
    """

    name = "consistent_hash"
    uses_key = True

    def __init__(
        self,
        servers: Iterable[Server] = (),
        *,
        virtual_nodes: int | None = None,
        balance_factor: float | None = None,
        compat: str | None = None,
        ring: ConsistentHash | None = None,
    ) -> None:
        super().__init__(servers)
        self.balance_factor = balance_factor
        # The balancer's running in-flight total, so the cap costs O(1) instead of O(n).
        self.in_flight: Callable[[], int] | None = None
        self._virtual_nodes = virtual_nodes
        self._compat = compat
        self._fallback = RoundRobin()
        self._for: Sequence[Server] | None = None
        self._by_name: dict[str, Server] = {}
        # A ring may be shared with the balancer's own (the one the dashboard draws), so a
        # membership change rebuilds it once; the second update finds nothing to do.
        self.ring = ring if ring is not None else self._build(self.servers)

    def _build(self, servers: Sequence[Server]) -> ConsistentHash:
        nodes = {s.name: s.weight for s in servers}
        if self._virtual_nodes is None:
            return ConsistentHash(nodes, compat=self._compat)
        return ConsistentHash(nodes, self._virtual_nodes, compat=self._compat)

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._for = None
        wanted = {s.name: s.weight for s in servers}
        current = self.ring.nodes
        if self._compat:  # ketama's point counts depend on the whole list: rebuild
            if wanted != current:
                self.ring = self._build(servers)
            return
        for name in [n for n in current if n not in wanted]:
            self.ring.remove_node(name)
        for name, weight in wanted.items():
            if current.get(name) != weight:
                self.ring.add_node(name, weight)

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if not candidates:
            return None
        if key is None:
            return self._fallback.pick(candidates)
        if candidates is not self._for:
            self._for, self._by_name = candidates, {s.name: s for s in candidates}
        by_name = self._by_name
        if not self.balance_factor:
            # The owner usually can serve: one lookup, no generator.
            server = by_name.get(self.ring.get_node(key))  # type: ignore[arg-type]
            if server is not None:
                return server
        cap = math.inf
        if self.balance_factor:
            in_flight = self.in_flight() if self.in_flight else sum(s.active_connections for s in candidates)
            cap = float(math.ceil(self.balance_factor * (in_flight + 1) / len(candidates)))
        first_fit: Server | None = None
        for name in self.ring.iter_nodes(key):
            server = by_name.get(name)
            if server is None:
                continue
            if server.active_connections < cap:
                return server
            if first_fit is None:
                first_fit = server
        # Candidates not on the ring (weight 0) or all at the cap: keep serving.
        return first_fit or self._fallback.pick(candidates)


class MaglevPolicy(Policy):
    """Maglev hashing over every configured server.

    The table is built from membership and weights only, so it changes when an operator
    adds, removes or re-weights a server, never on a health flap (a build costs tens of
    milliseconds of the event loop at 100 servers). A key whose slot owner cannot take
    traffic walks the table forward to the next acceptable owner: only that server's
    keys move, and they spread over the rest in the table's random order.
    """

    name = "maglev"
    uses_key = True

    def __init__(self, servers: Iterable[Server] = (), table_size: int = 65537) -> None:
        super().__init__(servers)
        self.table_size = table_size
        self.table = Maglev({s.name: s.weight for s in self.servers}, table_size)
        self._fallback = RoundRobin()
        self._for: Sequence[Server] | None = None
        self._by_name: dict[str, Server] = {}

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._for = None
        wanted = {s.name: s.weight for s in servers}
        if wanted != self.table.nodes:
            self.table = Maglev(wanted, self.table_size)

    def pick(self, candidates: Sequence[Server], key: str | None = None) -> Server | None:
        if not candidates:
            return None
        if key is None:
            return self._fallback.pick(candidates)
        if candidates is not self._for:
            self._for, self._by_name = candidates, {s.name: s for s in candidates}
        by_name = self._by_name
        server = by_name.get(self.table.get_node(key))  # type: ignore[arg-type]
        if server is not None:
            return server
        for name in self.table.iter_nodes(key):
            server = by_name.get(name)
            if server is not None:
                return server
        return self._fallback.pick(candidates)
