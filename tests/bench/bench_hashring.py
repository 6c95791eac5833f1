"""Benchmark of key -> server mappings at 100 servers: balance, movement and speed.

    python tests/bench/bench_hashring.py [--quick] [--vsweep]

Rows: our default ring, our ketama mode, Maglev (M=65537), a textbook ring (150 MD5
points per node + bisect, below) and uhashring (its default ring). Balance is given on
exact hash-space shares and on the sampled keys; movement is the fraction of sampled
keys that change server on one add / one remove, as a multiple of the ideal 1/(N+1)
and 1/N. Times are medians of several time.perf_counter() runs. Not a test: timings
are never asserted (tests/test_hashring.py asserts the deterministic balance figures).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from uhashring import HashRing

from engine.hashring import DEFAULT_VIRTUAL_NODES, ConsistentHash
from engine.maglev import Maglev

N = 100
SERVERS = [f"10.0.{i // 256}.{i % 256}:8080" for i in range(N)]
NEW = "10.1.0.1:8080"
ADD_REMOVE_CYCLES = 31


class TextbookRing:
    """The classic ring: 150 MD5 points per node (32-bit), sorted list, bisect."""

    def __init__(self, nodes: Sequence[str], vnodes: int = 150) -> None:
        self.vnodes = vnodes
        self.points: list[int] = []
        self.owners: list[str] = []
        self._pairs: list[tuple[int, str]] = []
        for n in nodes:
            self.add_node(n)

    @staticmethod
    def _h(s: str) -> int:
        return int.from_bytes(hashlib.md5(s.encode()).digest()[:4], "big")

    def add_node(self, node: str) -> None:
        self._pairs += [(self._h(f"{node}#{i}"), node) for i in range(self.vnodes)]
        self._pairs.sort()
        self.points = [p for p, _ in self._pairs]
        self.owners = [n for _, n in self._pairs]

    def remove_node(self, node: str) -> None:
        self._pairs = [pn for pn in self._pairs if pn[1] != node]
        self.points = [p for p, _ in self._pairs]
        self.owners = [n for _, n in self._pairs]

    def get_node(self, key: str) -> str:
        i = bisect.bisect_left(self.points, self._h(key))
        return self.owners[i if i < len(self.points) else 0]

    def shares(self) -> dict[str, float]:
        return _arc_shares(self.points, self.owners, 2**32)


def _arc_shares(points: list[int], owners: list[str], space: int) -> dict[str, float]:
    out: Counter[str] = Counter()
    prev = points[-1] - space
    for p, o in zip(points, owners):
        out[o] += p - prev
        prev = p
    return {o: v / space for o, v in out.items()}


def _uh_shares(ring: HashRing) -> dict[str, float]:
    keys = ring.runtime._keys
    return _arc_shares(keys, [ring.runtime._ring[k] for k in keys], 2**128)


def median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


class Impl:
    """Adapter: build / single / batch / add / remove / shares for one implementation."""

    def __init__(
        self,
        name: str,
        build: Callable[[list[str]], Any],
        shares: Callable[[Any], dict[str, float]],
        batch: bool,
        single: Callable[[Any], Callable[[str], Any]] = lambda r: r.get_node,
    ) -> None:
        self.name, self.build, self.shares, self.batch, self.single = name, build, shares, batch, single


IMPLS = [
    Impl("lbtui default", lambda s: ConsistentHash(s), lambda r: r.shares(), True),
    Impl("lbtui ketama", lambda s: ConsistentHash(s, compat="ketama"), lambda r: r.shares(), True),
    Impl("lbtui Maglev", lambda s: Maglev(s, 65537), lambda r: r.shares(), True),
    Impl("textbook 150 md5", lambda s: TextbookRing(s), lambda r: r.shares(), False),
    Impl("uhashring", lambda s: HashRing(list(s)), _uh_shares, False, lambda r: r.get_node),
]


def lookup_all(impl: Impl, ring: Any, keys: list[str]) -> list[Any]:
    if impl.batch:
        return ring.get_nodes_many(keys)  # type: ignore[no-any-return]
    get = impl.single(ring)
    return [get(k) for k in keys]


def bench(impl: Impl, keys: list[str], single_keys: list[str], reps: int) -> dict[str, Any]:
    r: dict[str, Any] = {"name": impl.name}
    r["build_ms"] = median_time(lambda: _touch(impl.build(SERVERS)), reps) * 1e3
    ring = impl.build(SERVERS)
    shares = impl.shares(ring)
    r["ptm_share"] = max(shares.values()) * N
    base = lookup_all(impl, ring, keys)
    counts = Counter(base)
    r["ptm_keys"] = max(counts.values()) * N / len(keys)
    get = impl.single(ring)
    r["single"] = len(single_keys) / median_time(lambda: [get(k) for k in single_keys], reps)
    r["batch"] = len(keys) / median_time(lambda: ring.get_nodes_many(keys), reps) if impl.batch else None
    # movement, on the sampled keys
    ring.add_node(NEW)
    added = lookup_all(impl, ring, keys)
    r["move_add"] = sum(a != b for a, b in zip(base, added)) / len(keys) * (N + 1)
    ring.remove_node(NEW)
    ring.remove_node(SERVERS[0])
    removed = lookup_all(impl, ring, keys)
    r["move_remove"] = sum(a != b for a, b in zip(base, removed)) / len(keys) * N
    ring.add_node(SERVERS[0])
    # one add / one remove; Maglev rebuilds lazily, so the next lookup is timed apart.
    # 31 cycles, not 11: with fewer, a burst of load on a shared VM moves the median.
    adds, rems, firsts = [], [], []
    for _ in range(max(reps, ADD_REMOVE_CYCLES)):
        t0 = time.perf_counter()
        ring.add_node(NEW)
        t1 = time.perf_counter()
        get("warm")
        t2 = time.perf_counter()
        ring.remove_node(NEW)
        t3 = time.perf_counter()
        get("warm")
        t4 = time.perf_counter()
        adds.append(t1 - t0)
        rems.append(t3 - t2)
        firsts += [t2 - t1, t4 - t3]
    r["add_ms"] = statistics.median(adds) * 1e3
    r["remove_ms"] = statistics.median(rems) * 1e3
    r["first_lookup_ms"] = statistics.median(firsts) * 1e3
    return r


def _touch(ring: Any) -> None:
    """Force lazy structures (our lookup index, Maglev's table) to be built."""
    ring.get_node("warm")


def vsweep(trials: int) -> None:
    print(f"\nPeak-to-mean of exact shares over {trials} random 100-server name sets")
    print("| virtual_nodes | median | p90 | max | share of sets <= 1.05 |")
    print("|---:|---:|---:|---:|---:|")
    for vn in (1024, 2048, 3072, 3584, 4096, 5120):
        ptms = []
        for t in range(trials):
            rnd = random.Random(t)
            names = [f"srv-{rnd.getrandbits(48):012x}" for _ in range(N)]
            ptms.append(max(ConsistentHash(names, vn).shares().values()) * N)
        ptms.sort()
        ok = sum(p <= 1.05 for p in ptms) / trials
        print(
            f"| {vn} | {statistics.median(ptms):.4f} | {ptms[int(0.9 * trials)]:.4f} "
            f"| {ptms[-1]:.4f} | {ok:.0%} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k keys, fewer repetitions")
    ap.add_argument("--vsweep", action="store_true", help="also sweep virtual_nodes over random name sets")
    args = ap.parse_args()
    nkeys = 100_000 if args.quick else 1_000_000
    reps = 3 if args.quick else 5
    keys = [f"key:{i}" for i in range(nkeys)]
    single_keys = keys[: nkeys // 5]
    print(
        f"{N} servers, {nkeys:,} keys, default virtual_nodes={DEFAULT_VIRTUAL_NODES}, "
        f"Python {sys.version.split()[0]}, medians of {reps}+ runs ({ADD_REMOVE_CYCLES} add/remove cycles)"
    )
    rows = [bench(impl, keys, single_keys, reps) for impl in IMPLS]
    uh = rows[-1]
    print(
        "\n| implementation | peak/mean (share) | peak/mean (keys) | moved on add (x ideal) "
        "| moved on remove (x ideal) | single lookups/s | batched lookups/s | build 100 (ms) "
        "| add 1 (ms) | remove 1 (ms) | 1st lookup after change (ms) | single vs uhashring "
        "| batched vs uhashring | build vs uhashring |"
    )
    print("|---|" + "---:|" * 13)
    for r in rows:
        best = r["batch"] or r["single"]
        print(
            f"| {r['name']} | {r['ptm_share']:.4f} | {r['ptm_keys']:.4f} | {r['move_add']:.3f} "
            f"| {r['move_remove']:.3f} | {r['single'] / 1e6:.2f} M | {_fmt(r['batch'] and r['batch'] / 1e6, '.2f')}"
            f"{'' if r['batch'] is None else ' M'} | {r['build_ms']:.1f} | {r['add_ms']:.3f} "
            f"| {r['remove_ms']:.3f} | {r['first_lookup_ms']:.3f} | {r['single'] / uh['single']:.1f}x "
            f"| {best / uh['single']:.1f}x | {uh['build_ms'] / r['build_ms']:.1f}x faster |"
        )
    if args.vsweep:
        vsweep(40 if args.quick else 200)


if __name__ == "__main__":
    main()
