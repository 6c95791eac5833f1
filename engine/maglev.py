"""Maglev hashing (Eisenbud et al., NSDI'16): a lookup table instead of a ring.

Each node walks its own permutation of the M table slots (``offset + j*skip mod M``,
from two independent hashes of its name; M prime so every skip is coprime to M) and
the nodes take turns claiming their next free slot until the table is full. Turns are
handed out by weight, so a node's share of the table is w/W to within one slot per
node: balance is ~1.00x where a ring needs thousands of points per node. The price is
movement: a change moves the changed node's slots plus a few percent of others
(measured in tests/bench/RESULTS_hashring.md). Lookups are one hash and one index.

Turn order is by node name, so the table depends on the membership only, never on the
order of insertion. The table is built lazily, on the first lookup after a change.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice

import numpy as np
import numpy.typing as npt

from engine.hashing import hash64, hash64_many
from engine.hashring import KeyLocation, RingSnapshot

__all__ = ["Maglev"]

_OFFSET_SEED = 0x6F6666736574  # "offset": two seeds give two independent hashes
_SKIP_SEED = 0x736B6970  # "skip"


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _check_weight(weight: int) -> int:
    w = operator.index(weight)
    if w < 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    return w


class Maglev:
    """Maglev lookup table over weighted nodes; same lookup API as ``ConsistentHash``.

    ``get_nodes``/``iter_nodes`` (the fallback order) walk the table forward from the
    key's slot collecting distinct owners: the table interleaves nodes pseudo-randomly,
    so this is a consistent per-key order, as a ring's clockwise walk is.
    """

    __slots__ = ("_dirty", "_m", "_names", "_slot_names", "_slots", "_weights")

    def __init__(
        self, nodes: Iterable[str] | Mapping[str, int] | None = None, table_size: int = 65537
    ) -> None:
        m = operator.index(table_size)
        if not _is_prime(m):
            raise ValueError(f"table_size must be prime (every skip must be coprime to it), got {m}")
        self._m = m
        if nodes is None:
            nodes = {}
        elif isinstance(nodes, str):
            nodes = [nodes]
        items = nodes.items() if isinstance(nodes, Mapping) else ((n, 1) for n in nodes)
        self._weights: dict[str, int] = {}
        for name, weight in items:
            if not isinstance(name, str):
                raise TypeError(f"node names must be str, got {name!r}")
            self._weights[name] = _check_weight(weight)
        self._dirty = True
        self._slots: npt.NDArray[np.int32] = np.empty(0, dtype=np.int32)  # table: slot -> node index
        self._slot_names: list[str] = []  # the table as names, for single lookups
        self._names: list[str] = []

    # ------------------------------------------------------------------ membership

    @property
    def table_size(self) -> int:
        return self._m

    @property
    def nodes(self) -> dict[str, int]:
        """Known nodes and their weights (a copy)."""
        return dict(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, node: object) -> bool:
        return node in self._weights

    def add_node(self, node: str, weight: int = 1) -> None:
        """Add a node or update its weight."""
        if not isinstance(node, str):
            raise TypeError(f"node names must be str, got {node!r}")
        w = _check_weight(weight)
        if self._weights.get(node) != w:
            self._weights[node] = w
            self._dirty = True

    def remove_node(self, node: str) -> None:
        """Remove a node. Unknown node: KeyError."""
        if node not in self._weights:
            raise KeyError(f"node {node!r} is not in the Maglev table")
        del self._weights[node]
        self._dirty = True

    def set_weight(self, node: str, weight: int) -> None:
        """Change a node's weight; 0 keeps it known but owning no slot. Unknown: KeyError."""
        if node not in self._weights:
            raise KeyError(f"node {node!r} is not in the Maglev table")
        w = _check_weight(weight)
        if self._weights[node] != w:
            self._weights[node] = w
            self._dirty = True

    # ------------------------------------------------------------------ population

    def _build(self) -> None:
        """The paper's population loop, with turns handed out by weight (credit scheme)."""
        m = self._m
        names = sorted(n for n, w in self._weights.items() if w > 0)
        self._names = names
        self._dirty = False
        if not names:
            self._slots = np.empty(0, dtype=np.int32)
            self._slot_names = []
            return
        weights = [self._weights[n] for n in names]
        top = max(weights)
        skips = [hash64(n, _SKIP_SEED) % (m - 1) + 1 for n in names]
        nxt = [hash64(n, _OFFSET_SEED) % m for n in names]  # each node's next candidate slot
        credit = [0] * len(names)
        table = [-1] * m
        left = m
        order = range(len(names))
        while left:
            for i in order:
                credit[i] += weights[i]
                if credit[i] < top:  # a node of weight w takes w turns per `top` rounds
                    continue
                credit[i] -= top
                c, skip = nxt[i], skips[i]
                while table[c] >= 0:
                    c += skip
                    if c >= m:
                        c -= m
                table[c] = i
                c += skip
                nxt[i] = c - m if c >= m else c
                left -= 1
                if not left:
                    break
        self._slots = np.array(table, dtype=np.int32)
        self._slot_names = [names[i] for i in table]

    def _ensure(self) -> None:
        if self._dirty:
            self._build()

    # ------------------------------------------------------------------ lookups

    def hash_key(self, key: str) -> int:
        """XXH3-64 of the key; its slot is hash mod table_size."""
        return hash64(key)

    def get_node(self, key: str) -> str | None:
        """The node in the key's table slot; None when no node has weight."""
        if self._dirty:
            self._build()
        table = self._slot_names
        return table[hash64(key) % self._m] if table else None

    def get_nodes_many(self, keys: Sequence[str]) -> list[str | None]:
        """``get_node`` for many keys, vectorized."""
        self._ensure()
        if not self._slot_names:
            return [None] * len(keys)
        slots = (hash64_many(keys) % np.uint64(self._m)).astype(np.intp)
        names = np.array(self._names, dtype=object)
        return names.take(self._slots.take(slots)).tolist()  # type: ignore[no-any-return]

    def iter_nodes(self, key: str) -> Iterator[str]:
        """Distinct owners walking the table forward from the key's slot, lazily."""
        self._ensure()
        if not self._slot_names:
            return iter(())
        return self._walk(hash64(key) % self._m)

    def _walk(self, start: int) -> Iterator[str]:
        table, m, want = self._slot_names, self._m, len(self._names)
        seen: set[str] = set()
        j = start
        for _ in range(m):
            name = table[j]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) >= want:
                    return
            j = j + 1 if j + 1 < m else 0

    def get_nodes(self, key: str, n: int) -> list[str]:
        """The first n distinct nodes of the key's fallback order."""
        if n <= 0:
            return []
        return list(islice(self.iter_nodes(key), n))

    def get_distribution(self, keys: Iterable[str] | None = None) -> dict[str, int]:
        """How many of the keys (default ``key:0``..``key:9999``) each node gets, zeros included."""
        if keys is None:
            keys = [f"key:{i}" for i in range(10000)]
        elif not isinstance(keys, Sequence):
            keys = list(keys)
        dist = dict.fromkeys(self._weights, 0)
        for name in self.get_nodes_many(keys):
            if name is not None:
                dist[name] += 1
        return dist

    def shares(self) -> dict[str, float]:
        """Each node's share of the table (exact: slots owned / table_size)."""
        self._ensure()
        out = dict.fromkeys(self._weights, 0.0)
        if self._slot_names:
            counts = np.bincount(self._slots, minlength=len(self._names))
            for name, c in zip(self._names, counts.tolist()):
                out[name] = c / self._m
        return out

    def locate(self, key: str, fallbacks: int = 3) -> KeyLocation:
        """Hash, slot position (slot / table_size), owner and the next ``fallbacks`` nodes."""
        h = hash64(key)
        nodes = self.get_nodes(key, 1 + max(0, fallbacks))
        return KeyLocation(key, h, (h % self._m) / self._m, nodes[0] if nodes else None, nodes[1:])

    def snapshot(self, max_points: int | None = 2048) -> RingSnapshot:
        """Runs of the table as (slot / table_size, owner) at each run start, plus shares."""
        self._ensure()
        if not self._slot_names:
            return RingSnapshot([], self.shares())
        slots = self._slots
        starts = np.flatnonzero(np.concatenate(([True], slots[1:] != slots[:-1])))
        if max_points is not None and starts.size > max_points:
            sel = np.linspace(0, starts.size - 1, max(0, max_points)).round().astype(np.intp)
            starts = starts.take(sel)
        names = self._names
        points = [(s / self._m, names[o]) for s, o in zip(starts.tolist(), slots.take(starts).tolist())]
        return RingSnapshot(points, self.shares())

    def __repr__(self) -> str:
        return f"Maglev({len(self._weights)} nodes, M={self._m})"
