"""Consistent hashing ring: balanced default mode and a libketama-compatible mode.

The ring is one sorted ``uint64`` numpy array. Each entry packs a point's position in
its high 48 bits and its owner's slot (0..65535) in the low 16 bits, so a lookup is a
single search that yields the owner too, and adding a node is one merge of its sorted
points instead of a re-sort. Keys compare on the high 48 bits only (their low 16 bits
are masked), so the slot number never influences which point a key lands on.

Determinism: points come from XXH3 of the node name (never Python's ``hash()``), and
two points of different nodes on the same 48-bit position are ordered by node name (a
full rebuild numbers slots in name order; an incremental add that would create such a
tie falls back to a rebuild). The mapping is therefore a function of the membership
alone, whatever order nodes were added in, on any machine.

Lookups go through a bucket index over the top bits of the hash (about 3 points per
bucket, int32 starts): a key's bucket gives the index of the first point at or after the
bucket start, and the key scans on from there (about 1.5 steps). The ring array carries
one extra entry past its end, a sentinel above every key that holds the owner of point
0, so scans need no bounds check and the wrap costs nothing. The index is built with the
ring, and add, remove and weight changes patch it in place (a step-function shift of the
starts), so neither a build nor a change leaves work for the first lookup.
"""

from __future__ import annotations

import math
import operator
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import numpy.typing as npt

from engine.hashing import (
    PointStream,
    hash64_many,
    ketama_hash,
    ketama_hash_many,
    ketama_points,
)
from engine.hashing import _xxh3 as _xxh3_bytes

__all__ = ["DEFAULT_VIRTUAL_NODES", "KETAMA_POINTS", "ConsistentHash", "KeyLocation", "RingSnapshot"]

DEFAULT_VIRTUAL_NODES = 4096
"""Points per weight unit in the default mode.

A node's share of the hash space is a sum of V exponential gaps, so its relative spread
is about 1/sqrt(V). Over 100 servers the largest share sits about 2.5-3 sigma above
the mean, so peak-to-mean <= 1.05 for almost any set of names needs V in the
thousands. Measured over 200 random 100-server name sets (bench --vsweep): V=2048
meets 1.05 in 28% of them, 3072 in 73%, 3584 in 84%, 4096 in 96% (median 1.039),
5120 in 99%. 4096 is the knee: 5120 buys 3 points of coverage for 25% more memory and merge time.
Movement stays optimal (only keys of the changed node move; one add moves 1/(N+1)
within about +-1.6%). Cost: 8 bytes per point (3.3 MB at 100 servers) and O(points)
array merges, 0.8-1.2 ms per add or remove on a shared 2-vCPU VM (index patch included;
tests/bench/RESULTS_hashring.md, round 4); fewer points would be cheaper, but 3072
already misses 1.05 on the bench's own 100 names.
"""

KETAMA_POINTS = 160
"""libketama's points per server at average weight: 40 MD5 digests x 4 points."""

_IDX_BITS = 16
_IDX_MASK = (1 << _IDX_BITS) - 1
_MAX_NODES = 1 << _IDX_BITS
_POS_MASK = ((1 << 64) - 1) ^ _IDX_MASK
_POS_MASK_U = np.uint64(_POS_MASK)
_MAX_POINTS = 1 << 25  # 256 MB of ring: past this the weights or virtual_nodes are a mistake
_CHUNK = 1 << 15  # entries per chunk of index counting: 256 KB, cache-sized
_IDX_MASK_U = np.uint64(_IDX_MASK)
_ONE = np.uint64(1)
_LOW16 = 0 if sys.byteorder == "little" else 3  # offset of the low 16 bits in a uint64

U64 = npt.NDArray[np.uint64]


_RANKS: npt.NDArray[np.int32] = np.arange(0, dtype=np.int32)


def _ranks(n: int) -> npt.NDArray[np.int32]:
    """0..n-1 as int32, read-only, from a shared cache: every add and remove needs it."""
    global _RANKS
    if _RANKS.size < n:
        _RANKS = np.arange(max(n, 2 * _RANKS.size, 1 << 13), dtype=np.int32)
        _RANKS.flags.writeable = False
    return _RANKS[:n]


def _index_bits(size: int) -> int:
    """Bucket bits of the lookup index for a ring of this many points (2-4, ~3 points each).

    Every add or remove shifts the starts of all buckets after its points, so fewer
    buckets make changes cheaper: ~3 points per bucket instead of ~1.5 halves the index
    (0.5 MB at 100 servers) and its build, and takes ~50 us off each change, for ~0.75
    more scan steps per lookup (single lookups ~10% slower, batched 0-7%; measured in
    tests/bench/RESULTS_hashring.md, round 4). Halving them once more (~6 points each)
    cost 21% of single and 30% of batched lookups against ~1.5 points per bucket.
    """
    return max(8, min(21, size.bit_length() - 2))


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where a key lands: its hash, ring position (0..1), owner and the next distinct nodes."""

    key: str
    hash: int
    position: float
    owner: str | None
    fallbacks: list[str]


@dataclass(frozen=True, slots=True)
class RingSnapshot:
    """Ring points (position 0..1, owner), sorted and maybe downsampled, plus exact shares."""

    points: list[tuple[float, str]]
    shares: dict[str, float]


def _low16(ring: U64) -> npt.NDArray[np.uint16]:
    """The owner slots of packed ring entries, as a strided view (no copy, no masking)."""
    return ring.view(np.uint16)[_LOW16::4]


def _check_weight(weight: int) -> int:
    w = operator.index(weight)
    if w < 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    return w


def _parse_nodes(nodes: Iterable[str] | Mapping[str, int] | None) -> dict[str, int]:
    if nodes is None:
        return {}
    if isinstance(nodes, str):
        nodes = [nodes]
    items: Iterable[tuple[str, int]]
    items = nodes.items() if isinstance(nodes, Mapping) else ((n, 1) for n in nodes)
    out: dict[str, int] = {}
    for name, weight in items:
        if not isinstance(name, str):
            raise TypeError(f"node names must be str, got {name!r}")
        out[name] = _check_weight(weight)
    return out


def _ketama_hashes(weight: int, total: int, servers: int, per_server: int) -> int:
    """MD5 digests for one server, with libketama's float arithmetic reproduced.

    libketama computes ``floorf((float)w / (float)total * 40.0 * (float)n)``: a float32
    ratio, double products, then a float32 argument to floorf. Doing it all in double
    gives 39 instead of 40 for e.g. 7 equal servers, so the float32 steps matter.
    """
    if total == 0 or weight == 0:
        return 0
    pct = np.float32(weight) / np.float32(total)
    product = float(pct) * float(per_server) * float(np.float32(servers))
    return math.floor(float(np.float32(product)))


class ConsistentHash:
    """Consistent hashing with virtual nodes; see the module docstring for the layout.

    ``compat=None`` (default): 64-bit XXH3 keys, ``virtual_nodes`` (default
    ``DEFAULT_VIRTUAL_NODES``) points per weight unit, balanced to about 1.04x at 100
    servers with minimal movement. ``compat="ketama"``: maps keys exactly as libketama
    (and uhashring's ketama mode) do; ``virtual_nodes`` is then points per server at
    average weight (default 160, a multiple of 4) and any change rebuilds the ring,
    because libketama's point counts depend on the whole server list.
    """

    __slots__ = (
        "_bshift",
        "_buf",
        "_free",
        "_kcache",
        "_ketama",
        "_names",
        "_names_arr",
        "_owning",
        "_ring",
        "_ring_mv",
        "_size",
        "_slot",
        "_start",
        "_start_mv",
        "_stream",
        "_vnodes",
        "_weights",
    )

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, int] | None = None,
        virtual_nodes: int | None = None,
        *,
        compat: str | None = None,
    ) -> None:
        if compat not in (None, "ketama"):
            raise ValueError(f"unknown compat mode {compat!r}: use None or 'ketama'")
        self._ketama = compat == "ketama"
        if virtual_nodes is None:
            virtual_nodes = KETAMA_POINTS if self._ketama else DEFAULT_VIRTUAL_NODES
        vn = operator.index(virtual_nodes)
        if vn < 1 or (self._ketama and vn % 4):
            raise ValueError(
                f"virtual_nodes must be >= 1{' and a multiple of 4 in ketama mode' if self._ketama else ''}, got {vn}"
            )
        self._vnodes = vn
        self._weights: dict[str, int] = _parse_nodes(nodes)
        self._slot: dict[str, int] = {}
        self._names: list[str | None] = []
        self._free: list[int] = []
        self._buf: U64 = np.full(1, _POS_MASK, dtype=np.uint64)
        self._ring: U64 = self._buf[:0]
        self._owning = 0
        self._stream = PointStream()
        self._kcache: dict[str, npt.NDArray[np.uint32]] = {}
        self._size = 0
        self._start: npt.NDArray[np.int32] = np.zeros(2, dtype=np.int32)
        self._start_mv = memoryview(self._start)
        self._ring_mv = memoryview(self._buf)
        self._bshift = 63
        self._names_arr: npt.NDArray[np.object_] = np.empty(0, dtype=object)
        self._rebuild()

    # ------------------------------------------------------------------ membership

    @property
    def nodes(self) -> dict[str, int]:
        """Known nodes and their weights (a copy), in insertion order."""
        return dict(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, node: object) -> bool:
        return node in self._weights

    def add_node(self, node: str, weight: int = 1) -> None:
        """Add a node, or update its weight if it is already known."""
        if not isinstance(node, str):
            raise TypeError(f"node names must be str, got {node!r}")
        w = _check_weight(weight)
        if node in self._weights:
            self.set_weight(node, w)
            return
        self._weights[node] = w
        if self._ketama:
            self._rebuild()
            return
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._names)
            if slot >= _MAX_NODES:
                del self._weights[node]
                raise ValueError(f"at most {_MAX_NODES} nodes per ring")
            self._names.append(None)
        self._names[slot] = node
        self._slot[node] = slot
        if w:
            self._owning += 1
            self._insert(node, 0, w * self._vnodes)
        self._sync_names(slot)  # after a fallback rebuild this only rewrites a synced entry

    def remove_node(self, node: str) -> None:
        """Remove a node; only the keys it owned move. Unknown node: KeyError."""
        if node not in self._weights:
            raise KeyError(f"node {node!r} is not on the ring")
        w = self._weights.pop(node)
        if self._ketama:
            self._rebuild()
            return
        if w:
            self._owning -= 1
            self._delete(node, 0, w * self._vnodes)  # its points, found through the index
        slot = self._slot.pop(node, None)
        if slot is None:  # _delete fell back to a rebuild, which already renumbered slots
            return
        self._names[slot] = None
        self._free.append(slot)
        self._sync_names(slot)

    def set_weight(self, node: str, weight: int) -> None:
        """Change a node's weight; 0 keeps it known but owning nothing. Unknown: KeyError."""
        if node not in self._weights:
            raise KeyError(f"node {node!r} is not on the ring")
        w = _check_weight(weight)
        old = self._weights[node]
        if w == old:
            return
        self._weights[node] = w
        if self._ketama:
            self._rebuild()
            return
        self._owning += (w > 0) - (old > 0)
        vn = self._vnodes
        if w > old:  # the point stream is prefix-stable: grow or shrink its tail only
            self._insert(node, old * vn, w * vn)
        else:
            self._delete(node, w * vn, old * vn)

    # ------------------------------------------------------------------ ring building

    def _set_ring(self, buf: U64, size: int) -> None:
        """Adopt ``buf[:size]`` as the ring; ``buf[size]`` becomes the sentinel.

        The sentinel sits past every key (all 48 position bits set) and carries the owner
        of point 0, so a scan stops there without a bounds check and reads the wrapped
        owner directly.
        """
        if size > _MAX_POINTS:
            raise ValueError(f"{size} ring points exceed {_MAX_POINTS}: lower the weights or virtual_nodes")
        buf[size] = _POS_MASK | (int(buf[0]) & _IDX_MASK) if size else _POS_MASK
        self._buf = buf
        self._ring = buf[:size]
        self._ring_mv = memoryview(buf)
        self._size = size

    def _node_points(self, node: str, start: int, stop: int) -> U64:
        """Sorted packed points [start, stop) of a node's stream."""
        pts = self._stream.points(_xxh3_bytes(node.encode()), start, stop)
        pts &= _POS_MASK_U
        pts |= np.uint64(self._slot[node])
        pts.sort()
        return pts

    def _rebuild(self) -> None:
        """Regenerate every point; slots are renumbered (name order, or list order for ketama)."""
        names = list(self._weights) if self._ketama else sorted(self._weights)
        if len(names) > _MAX_NODES:
            raise ValueError(f"at most {_MAX_NODES} nodes per ring")
        self._names = list(names)
        self._slot = {n: i for i, n in enumerate(names)}
        self._free = []
        weights = [self._weights[n] for n in names]
        if self._ketama:
            total, per = sum(weights), self._vnodes // 4
            hashes = [_ketama_hashes(w, total, len(names), per) for w in weights]
            counts = [4 * h for h in hashes]
            parts = [self._ketama_cached(n, h) for n, h in zip(names, hashes)]
            size = sum(counts)
            buf = np.empty(size + 1, dtype=np.uint64)
            pts = buf[:size]
            if parts:
                np.concatenate(parts, out=pts, casting="unsafe")
            pts <<= np.uint64(32)
            pts |= np.repeat(np.arange(len(names), dtype=np.uint64), counts)
        else:
            counts = [w * self._vnodes for w in weights]
            size = sum(counts)
            if size > _MAX_POINTS:
                raise ValueError(f"{size} ring points exceed {_MAX_POINTS}: lower the weights")
            seeds = [_xxh3_bytes(n.encode()) for n in names]
            buf = np.empty(size + 1, dtype=np.uint64)
            pts = self._stream.points_many(seeds, counts, out=buf, keep=_POS_MASK, tags=range(len(names)))
        pts.sort()  # in place, in buf: no copy
        self._owning = sum(1 for c in counts if c)
        self._set_ring(buf, size)
        self._reindex()
        self._sync_names()

    def _ketama_cached(self, name: str, hashes: int) -> npt.NDArray[np.uint32]:
        """libketama points are a prefix-stable stream too: cache the longest one computed."""
        have = self._kcache.get(name)
        if have is None or have.size < 4 * hashes:
            have = ketama_points(name, hashes)
            self._kcache[name] = have
        return have[: 4 * hashes]

    def _insert(self, node: str, start: int, stop: int) -> None:
        """Merge points [start, stop) of a node into the ring (one pass, no re-sort)."""
        pts = self._node_points(node, start, stop)
        size = self._size
        if size == 0:
            buf = np.empty(pts.size + 1, dtype=np.uint64)
            buf[:-1] = pts
            self._set_ring(buf, pts.size)
            self._reindex()
            return
        if size + pts.size > _MAX_POINTS:
            raise ValueError(f"ring points would exceed {_MAX_POINTS}: lower the weights")
        ins = self._find_many(pts)
        # A new point on the same 48-bit position as another node's point would be
        # ordered by slot, which depends on history: rebuild to order it by name instead.
        # Only the entry at ins can tie: the one before lies at a lower position. Past the
        # last point that entry is the sentinel, whose position no point below 2^48 - 1
        # shares. Ties are xor values 1..0xFFFF (0 is the node's own point, repeated).
        nb = self._buf.take(ins)
        nb ^= pts
        nb -= _ONE
        if (nb < _IDX_MASK_U).any():
            self._rebuild()
            return
        n = size + pts.size
        patched = self._patch_index(pts, +1)  # first, while the index is still in cache
        ins += _ranks(pts.size)  # where the new points land: np.insert, minus its generality
        out = np.empty(n + 1, dtype=np.uint64)
        keep = np.ones(n + 1, dtype=bool)
        keep[ins] = False
        out[keep] = self._buf  # the old sentinel lands on out[n], rewritten by _set_ring
        out[ins] = pts
        self._set_ring(out, n)
        if not patched:
            self._reindex()

    def _delete(self, node: str, start: int, stop: int) -> None:
        """Drop points [start, stop) of a node from the ring."""
        pts = self._node_points(node, start, stop)
        ins = self._find_many(pts)
        # Every point found, each at its own index (a point repeated within the node, an
        # astronomically rare event, finds one index twice): else rebuild.
        if not np.array_equal(self._buf.take(ins), pts) or (pts[1:] == pts[:-1]).any():
            self._rebuild()
            return
        patched = self._patch_index(pts, -1)
        keep = np.ones(self._size + 1, dtype=bool)
        keep[ins] = False
        new = self._buf[keep]  # the sentinel is kept, at the new end
        self._set_ring(new, new.size - 1)
        if not patched:
            self._reindex()

    # ------------------------------------------------------------------ lookup index

    def _reindex(self) -> None:
        """Bucket index over the top k bits, about 3 points per bucket (int32 starts).

        Fewer buckets than points keep the build to chunked bincounts and one cumsum over a
        ~0.5 MB array, and the patch of every add or remove small; a lookup then scans
        about 1.5 entries. start[b] is the
        first point at or after bucket b's lower edge, so the scan needs no end bound:
        the next bucket's points, or the sentinel, stop it.
        """
        k = _index_bits(self._size)
        shift = 64 - k
        ring, sh = self._ring, np.uint64(shift)
        start = np.zeros((1 << k) + 1, dtype=np.int32)
        # Count per bucket chunk by chunk: the ring is sorted, so a chunk spans a narrow
        # bucket range and its bincount is small. Whole-array temporaries (6 MB of fresh
        # pages per build) cost more in page faults than the counting itself.
        tmp = np.empty(min(ring.size, _CHUNK), dtype=np.uint64)
        ids = tmp.view(np.intp)  # bucket numbers < 2^22: the view is exact
        for lo in range(0, ring.size, _CHUNK):
            part = ids[: min(_CHUNK, ring.size - lo)]
            np.right_shift(ring[lo : lo + part.size], sh, out=tmp[: part.size])
            first = int(part[0])
            part -= first
            counts = np.bincount(part)
            start[first + 1 : first + 1 + counts.size] += counts
        np.cumsum(start, out=start)
        self._start = start
        self._start_mv = memoryview(start)
        self._bshift = shift

    def _sync_names(self, slot: int | None = None) -> None:
        """The slot -> name table of batched lookups (an object array, for ``take``).

        An add or remove changes one slot: it is patched in place when the table already
        has it (``get_nodes_many`` copies out of it, so nobody sees it change).
        """
        names = self._names
        if slot is not None and slot < self._names_arr.size:
            self._names_arr[slot] = names[slot]
        else:
            self._names_arr = np.array(names, dtype=object) if names else np.empty(0, dtype=object)

    def _patch_index(self, changed: U64, sign: int) -> bool:
        """Shift bucket starts for sorted ``changed`` points about to be inserted (+1) or removed (-1).

        O(buckets) in numpy instead of a bincount and cumsum over the whole ring, so an add
        or remove leaves the next lookup nothing to do. It reads only the index and the
        changed points, so it runs before the merge, while the index is still in cache.
        Call only while the index matches the old ring. Returns False, changing nothing,
        when the new size wants a different bucket count: the caller then reindexes the
        new ring.
        """
        if abs(_index_bits(self._size + sign * changed.size) - (64 - self._bshift)) > 1:
            return False
        # delta[j] = changed points in buckets < j: a step function, built as runs by
        # np.repeat (a cumsum over every bucket costs more than the whole merge). Its cost
        # is per run (~15 ns), so it barely depends on the bucket count.
        nb = self._start.size - 1
        b = (changed >> np.uint64(self._bshift)).view(np.intp)  # sorted, as changed is
        runs = np.empty(b.size + 1, dtype=np.intp)
        runs[0] = b[0] + 1
        np.subtract(b[1:], b[:-1], out=runs[1:-1])
        runs[-1] = nb - b[-1]
        delta = np.repeat(_ranks(b.size + 1), runs)
        if sign > 0:
            self._start += delta
        else:
            self._start -= delta
        return True

    def _ring_hash(self, key: str) -> int:
        """The key's 64-bit ring coordinate (ketama's 32-bit hash sits in the high half)."""
        if self._ketama:
            return ketama_hash(key) << 32
        return _xxh3_bytes(key.encode())

    def _find(self, rh: int) -> int:
        """Index of the first point at or after ring coordinate rh (wrapping); ring non-empty."""
        i = self._start_mv[rh >> self._bshift]
        q = rh & _POS_MASK
        ring = self._ring_mv
        while ring[i] < q:  # the sentinel ends every scan
            i += 1
        return i if i < self._size else 0

    def _find_many(self, rh: U64) -> npt.NDArray[np.intp]:
        """Vectorized ``_find`` without the wrap (index == size means the sentinel)."""
        b = (rh >> np.uint64(self._bshift)).view(np.intp)
        i = self._start.take(b).astype(np.intp)
        q = rh & _POS_MASK_U
        buf = self._buf
        for _ in range(4):  # dense steps settle 88% of keys; then only those still moving
            more = buf.take(i) < q
            i += more
        act = np.flatnonzero(more)
        ii, qq = i.take(act), q.take(act)
        while act.size:
            more = buf.take(ii) < qq
            act, ii, qq = act[more], ii[more], qq[more]
            ii += 1
            i[act] = ii
        return i

    # ------------------------------------------------------------------ lookups

    def hash_key(self, key: str) -> int:
        """The key's hash: XXH3-64 (default mode) or libketama's 32-bit MD5 hash."""
        return ketama_hash(key) if self._ketama else _xxh3_bytes(key.encode())

    def get_node(self, key: str) -> str | None:
        """The owner of key: the first point clockwise from its hash. None when empty."""
        if not self._size:
            return None
        rh = ketama_hash(key) << 32 if self._ketama else _xxh3_bytes(key.encode())
        i = self._start_mv[rh >> self._bshift]  # _find, inlined: this is the per-request path
        q = rh & _POS_MASK
        ring = self._ring_mv
        p = ring[i]
        while p < q:  # about 1.5 steps; the sentinel (owner of point 0) ends the last bucket
            i += 1
            p = ring[i]
        return self._names[p & _IDX_MASK]

    def iter_nodes(self, key: str) -> Iterator[str]:
        """The preference list, lazily: distinct nodes met walking clockwise from key."""
        if not self._size:
            return iter(())
        return self._walk(self._find(self._ring_hash(key)))

    def _walk(self, i: int) -> Iterator[str]:
        ring, mv, names, size, want = self._ring, self._ring_mv, self._names, self._size, self._owning
        seen: set[int] = set()
        j = i
        steps = min(size, 64)
        for _ in range(steps):  # almost every walk ends here: N nodes need ~N ln N points
            s = mv[j] & _IDX_MASK
            if s not in seen:
                seen.add(s)
                yield names[s]  # type: ignore[misc]
                if len(seen) >= want:
                    return
            j = j + 1 if j + 1 < size else 0
        scanned, chunk, slots = steps, 1024, _low16(ring)
        while scanned < size:  # rare long tail (tiny weights): scan chunks in numpy
            take = min(chunk, size - scanned)
            owners = slots.take(np.arange(j, j + take), mode="wrap")
            uniq, first = np.unique(owners, return_index=True)
            for s in uniq[np.argsort(first)].tolist():
                if s not in seen:
                    seen.add(s)
                    yield names[s]  # type: ignore[misc]
                    if len(seen) >= want:
                        return
            j, scanned, chunk = (j + take) % size, scanned + take, chunk * 4

    def get_nodes(self, key: str, n: int) -> list[str]:
        """The first n distinct nodes clockwise from key (fewer if the ring has fewer)."""
        if n <= 0:
            return []
        return list(islice(self.iter_nodes(key), n))

    def get_nodes_many(self, keys: Sequence[str]) -> list[str | None]:
        """``get_node`` for many keys at once: hashing and search vectorized."""
        if not self._size:
            return [None] * len(keys)
        if self._ketama:
            rh = ketama_hash_many(keys).astype(np.uint64)
            rh <<= np.uint64(32)
        else:
            rh = hash64_many(keys)
        slots = _low16(self._buf).take(self._find_many(rh))  # the sentinel holds the wrap
        return self._names_arr.take(slots).tolist()  # type: ignore[no-any-return]

    def get_distribution(self, keys: Iterable[str] | None = None) -> dict[str, int]:
        """How many of the keys (default ``key:0``..``key:9999``) each node owns, zeros included."""
        if keys is None:
            keys = [f"key:{i}" for i in range(10000)]
        elif not isinstance(keys, Sequence):
            keys = list(keys)
        dist = dict.fromkeys(self._weights, 0)
        for name, count in Counter(self.get_nodes_many(keys)).items():
            if name is not None:
                dist[name] = count
        return dist

    def shares(self) -> dict[str, float]:
        """Each node's exact fraction of the hash space (sums to 1 unless the ring is empty).

        Arcs are integers below 2^48, so float64 sums of them are exact.
        """
        out = dict.fromkeys(self._weights, 0.0)
        ring = self._ring
        if not ring.size:
            return out
        bits = 32 if self._ketama else 64 - _IDX_BITS
        pos = ring >> np.uint64(64 - bits)
        arcs = pos - np.roll(pos, 1)
        arcs &= np.uint64((1 << bits) - 1)
        slots = _low16(ring).astype(np.intp)
        if not arcs.any():  # a single position: its first point owns the whole circle
            out[self._names[int(slots[0])]] = 1.0  # type: ignore[index]
            return out
        sums = np.bincount(slots, weights=arcs.astype(np.float64), minlength=len(self._names))
        space = float(1 << bits)
        for slot, name in enumerate(self._names):
            if name is not None:
                out[name] = float(sums[slot]) / space
        return out

    def locate(self, key: str, fallbacks: int = 3) -> KeyLocation:
        """Everything about one key: hash, position, owner and the next ``fallbacks`` nodes."""
        h = self.hash_key(key)
        nodes = self.get_nodes(key, 1 + max(0, fallbacks))
        position = h / float(1 << (32 if self._ketama else 64))
        return KeyLocation(key, h, position, nodes[0] if nodes else None, nodes[1:])

    def snapshot(self, max_points: int | None = 2048) -> RingSnapshot:
        """Ring points for drawing (evenly strided when over max_points) and exact shares."""
        ring = self._ring
        if max_points is not None and ring.size > max_points:
            sel = np.linspace(0, ring.size - 1, max(0, max_points)).round().astype(np.intp)
            ring = ring.take(sel)
        shift = 32 if self._ketama else _IDX_BITS
        pos = (ring >> np.uint64(shift)).astype(np.float64) / float(1 << (64 - shift))
        names = self._names
        points = [(p, names[s]) for p, s in zip(pos.tolist(), _low16(ring).tolist())]
        return RingSnapshot(points, self.shares())  # type: ignore[arg-type]

    def __repr__(self) -> str:
        mode = "ketama" if self._ketama else "default"
        return f"ConsistentHash({len(self._weights)} nodes, {self._size} points, {mode})"
