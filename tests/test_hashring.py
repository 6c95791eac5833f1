"""Tests for engine.hashring: the seed contract, balance/movement targets, ketama parity."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.hashring import DEFAULT_VIRTUAL_NODES, ConsistentHash, KeyLocation, RingSnapshot, _ketama_hashes

KEYS = [f"key:{i}" for i in range(20000)]
SERVERS_100 = [f"10.0.{i // 256}.{i % 256}:8080" for i in range(100)]
ROOT = Path(__file__).resolve().parents[1]


def test_seed_contract() -> None:
    ch = ConsistentHash(["server1", "server2", "server3"])
    assert ch.get_node("user:123") == ch.get_node("user:123")
    dist = {}
    for i in range(10000):
        node = ch.get_node(f"key:{i}")
        dist[node] = dist.get(node, 0) + 1
    for count in dist.values():
        assert 2500 < count < 4500
    before = {f"key:{i}": ch.get_node(f"key:{i}") for i in range(1000)}
    ch.add_node("server4")
    after = {f"key:{i}": ch.get_node(f"key:{i}") for i in range(1000)}
    moved = sum(1 for k in before if before[k] != after[k])
    assert moved < 350
    ch.remove_node("server2")
    assert ch.get_node("user:123") is not None


# ---------------------------------------------------------------- balance and movement


@pytest.fixture(scope="module")
def ring100() -> ConsistentHash:
    return ConsistentHash(SERVERS_100)


@pytest.mark.parametrize("names", [SERVERS_100, [f"server{i}" for i in range(1, 101)]])
def test_peak_to_mean_at_100_servers(names: list[str]) -> None:
    shares = ConsistentHash(names).shares()
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert max(shares.values()) * len(names) <= 1.05
    # Removing a node moves exactly its share: the worst removal is the peak share.
    assert max(shares.values()) <= 1.10 / len(names)


def test_add_moves_at_most_1_10_of_ideal(ring100: ConsistentHash) -> None:
    for i in range(10):
        ring = ConsistentHash(SERVERS_100)
        ring.add_node(f"10.1.0.{i}:8080")
        new_share = ring.shares()[f"10.1.0.{i}:8080"]
        assert new_share <= 1.10 / 101  # the keys that move on add are exactly the new share


def test_moves_measured_on_keys_match_shares(ring100: ConsistentHash) -> None:
    ring = ConsistentHash(SERVERS_100)
    before = ring.get_nodes_many(KEYS)
    ring.add_node("fresh:1")
    after = ring.get_nodes_many(KEYS)
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert all(b == "fresh:1" for _, b in moved)
    assert len(moved) / len(KEYS) <= 1.10 / 101 * 1.25  # sampling noise on 20k keys
    ring.remove_node(SERVERS_100[7])
    again = ring.get_nodes_many(KEYS)
    assert all(a == SERVERS_100[7] for a, b in zip(after, again) if a != b)


def test_default_virtual_nodes_is_documented() -> None:
    assert DEFAULT_VIRTUAL_NODES >= 2048
    ring = ConsistentHash(["a", "b"])
    assert len(ring._ring) == 2 * DEFAULT_VIRTUAL_NODES


# ---------------------------------------------------------------- API behaviour


def test_empty_ring() -> None:
    ring = ConsistentHash()
    assert ring.get_node("x") is None
    assert ring.get_nodes("x", 3) == []
    assert list(ring.iter_nodes("x")) == []
    assert ring.get_nodes_many(["a", "b"]) == [None, None]
    assert ring.shares() == {}
    assert ring.locate("x").owner is None
    assert len(ring) == 0 and "x" not in ring


def test_remove_unknown_raises() -> None:
    ring = ConsistentHash(["a"])
    with pytest.raises(KeyError, match="'b'"):
        ring.remove_node("b")
    with pytest.raises(KeyError):
        ring.set_weight("b", 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ConsistentHash(compat="jump")
    with pytest.raises(ValueError):
        ConsistentHash(["a"], 0)
    with pytest.raises(ValueError):
        ConsistentHash({"a": -1})
    with pytest.raises(TypeError):
        ConsistentHash({"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        ConsistentHash(["a"], 10, compat="ketama")  # not a multiple of 4


def test_weight_zero_keeps_node_known() -> None:
    ring = ConsistentHash({"a": 1, "b": 0, "c": 1}, 256)
    assert "b" in ring and ring.nodes == {"a": 1, "b": 0, "c": 1}
    assert ring.shares()["b"] == 0.0
    assert "b" not in set(ring.get_nodes_many(KEYS[:2000]))
    assert sorted(ring.get_nodes("k", 5)) == ["a", "c"]
    ring.set_weight("a", 0)
    ring.set_weight("c", 0)
    assert ring.get_node("k") is None and len(ring) == 3
    assert ring.get_distribution(["x"]) == {"a": 0, "b": 0, "c": 0}


def test_add_existing_updates_weight() -> None:
    ring = ConsistentHash(["a", "b"], 256)
    ring.add_node("a", 3)
    assert ring.nodes == {"a": 3, "b": 1}
    assert ring.shares()["a"] == pytest.approx(0.75, abs=0.05)


def test_set_weight_round_trip_restores_mapping() -> None:
    ring = ConsistentHash(["a", "b", "c", "d"], 512)
    before = ring.get_nodes_many(KEYS[:5000])
    ring.set_weight("b", 3)
    mid = ring.get_nodes_many(KEYS[:5000])
    assert all(m == "b" for x, m in zip(before, mid) if x != m)  # only gains for b
    ring.set_weight("b", 1)
    assert ring.get_nodes_many(KEYS[:5000]) == before  # prefix-stable point stream


def test_batch_matches_single_and_distribution(ring100: ConsistentHash) -> None:
    keys = KEYS[:5000] + ["", "ünïcode", "x" * 300]
    assert ring100.get_nodes_many(keys) == [ring100.get_node(k) for k in keys]
    dist = ring100.get_distribution()
    assert sum(dist.values()) == 10000 and set(dist) == set(SERVERS_100)
    assert ring100.get_distribution(iter(["a", "b"])) == ring100.get_distribution(["a", "b"])


def test_locate_and_snapshot(ring100: ConsistentHash) -> None:
    loc = ring100.locate("user:42", fallbacks=4)
    assert isinstance(loc, KeyLocation)
    assert loc.hash == ring100.hash_key("user:42") and 0 <= loc.position < 1
    assert loc.position == loc.hash / 2**64
    assert [loc.owner, *loc.fallbacks] == ring100.get_nodes("user:42", 5)
    snap = ring100.snapshot(512)
    assert isinstance(snap, RingSnapshot) and len(snap.points) == 512
    positions = [p for p, _ in snap.points]
    assert positions == sorted(positions) and all(0 <= p < 1 for p in positions)
    assert sum(snap.shares.values()) == pytest.approx(1.0)
    assert len(ConsistentHash(["a"], 10).snapshot(None).points) == 10


def test_iter_nodes_is_lazy_and_complete() -> None:
    # "tiny" has a single point among 40k: the walk must reach it (chunked tail scan).
    ring = ConsistentHash({**{f"n{i}": 10000 for i in range(4)}, "tiny": 1}, 1)
    assert ring.shares()["tiny"] < 0.001
    for key in ("a", "b", "c"):
        it = ring.iter_nodes(key)
        assert next(it) == ring.get_node(key)
        full = ring.get_nodes(key, 99)
        assert sorted(full) == ["n0", "n1", "n2", "n3", "tiny"]
    assert ring.get_nodes("a", 0) == []


def test_hashes_are_pinned_across_processes() -> None:
    """Every instance must route alike: pin values and check a differently-seeded process."""
    ring = ConsistentHash(["server1", "server2", "server3"])
    assert ring.hash_key("user:123") == int.from_bytes(
        bytes.fromhex(
            subprocess.run(
                [sys.executable, "-c", "import xxhash;print(xxhash.xxh3_64_hexdigest(b'user:123'))"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        ),
        "big",
    )
    code = (
        "from engine.hashring import ConsistentHash\n"
        "r = ConsistentHash(['server1', 'server2', 'server3'])\n"
        "print(','.join(r.get_nodes_many([f'k{i}' for i in range(200)])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().split(",") == ring.get_nodes_many([f"k{i}" for i in range(200)])


# ---------------------------------------------------------------- property tests

NAMES = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8, unique=True)
PROBE = [f"p{i}" for i in range(400)]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(NAMES, st.text(min_size=1, max_size=8))
def test_add_moves_only_to_new_node(names: list[str], new: str) -> None:
    if new in names:
        return
    ring = ConsistentHash(names, 64)
    before = ring.get_nodes_many(PROBE)
    ring.add_node(new)
    after = ring.get_nodes_many(PROBE)
    assert all(b == new for a, b in zip(before, after) if a != b)
    ring.remove_node(new)
    assert ring.get_nodes_many(PROBE) == before


@FAST
@given(NAMES, st.data())
def test_remove_moves_only_from_removed_node(names: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(names))
    ring = ConsistentHash(names, 64)
    before = ring.get_nodes_many(PROBE)
    ring.remove_node(gone)
    after = ring.get_nodes_many(PROBE)
    assert all(a == gone for a, b in zip(before, after) if a != b)
    assert gone not in after


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 4), min_size=1, max_size=8), st.data())
def test_insertion_order_does_not_matter(weights: dict[str, int], data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(weights)))
    a = ConsistentHash(weights, 32)
    b = ConsistentHash(None, 32)
    for name in order:
        b.add_node(name, weights[name] + 1)  # via a detour through other weights...
    for name in reversed(order):
        b.set_weight(name, weights[name])
    b.add_node("\x00transient")
    b.remove_node("\x00transient")
    assert b.get_nodes_many(PROBE) == a.get_nodes_many(PROBE)
    assert b.shares() == a.shares()
    assert [b.get_nodes(k, 3) for k in PROBE[:20]] == [a.get_nodes(k, 3) for k in PROBE[:20]]


@FAST
@given(NAMES, st.text(max_size=10), st.integers(1, 10))
def test_preference_list(names: list[str], key: str, n: int) -> None:
    ring = ConsistentHash(names, 16)
    nodes = ring.get_nodes(key, n)
    assert nodes[0] == ring.get_node(key)
    assert len(nodes) == len(set(nodes)) == min(n, len(names))
    assert list(ring.iter_nodes(key))[:n] == nodes


@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 5), min_size=1, max_size=6))
def test_shares_sum_to_one(weights: dict[str, int]) -> None:
    shares = ConsistentHash(weights, 8).shares()
    assert set(shares) == set(weights)
    if any(weights.values()):
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(shares[n] == 0.0 for n, w in weights.items() if w == 0)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5))
def test_weight_proportionality(ws: list[int]) -> None:
    weights = {f"node-{i}": w for i, w in enumerate(ws)}
    shares = ConsistentHash(weights).shares()
    total = sum(ws)
    for name, w in weights.items():
        assert shares[name] == pytest.approx(w / total, rel=0.08)


# ---------------------------------------------------------------- ketama compatibility


def _uhashring(conf: dict[str, int]):  # type: ignore[no-untyped-def]
    from uhashring import HashRing

    return HashRing({k: {"weight": w} for k, w in conf.items()}, hash_fn="ketama")


@pytest.mark.parametrize("trial", range(12))
def test_ketama_matches_uhashring(trial: int) -> None:
    rnd = random.Random(trial)
    n = rnd.choice([1, 2, 3, 5, 7, 10, 25, 40])
    names = [f"10.0.0.{i}:11211" for i in rnd.sample(range(250), n)]
    conf = {name: (rnd.randint(1, 9) if trial % 2 else 1) for name in names}
    ours = ConsistentHash(conf, compat="ketama")
    theirs = _uhashring(conf)
    keys = [f"user:{trial}:{i}" for i in range(3000)]
    assert ours.get_nodes_many(keys) == [theirs.get_node(k) for k in keys]
    assert [ours.get_node(k) for k in keys[:300]] == [theirs.get_node(k) for k in keys[:300]]
    assert ours.hash_key("foo") == theirs.get_key("foo")


def test_ketama_continuum_matches_uhashring_points() -> None:
    conf = {"cache-a:11211": 1, "cache-b:11211": 2, "cache-c:11211": 1}
    ours = ConsistentHash(conf, compat="ketama")
    theirs = _uhashring(conf)
    snap = ours.snapshot(None)
    assert [(round(p * 2**32), n) for p, n in snap.points] == [tuple(x) for x in theirs.get_points()]


def test_ketama_hand_checked_points() -> None:
    ring = ConsistentHash(["server1"], compat="ketama")
    points = {round(p * 2**32) for p, _ in ring.snapshot(None).points}
    assert len(points) == 160
    for k in (0, 1, 39):
        digest = hashlib.md5(f"server1-{k}".encode()).digest()
        for h in range(4):
            assert int.from_bytes(digest[4 * h : 4 * h + 4], "little") in points
    d = hashlib.md5(b"user:123").digest()
    assert ring.hash_key("user:123") == d[3] << 24 | d[2] << 16 | d[1] << 8 | d[0]
    # First point >= hash, wrapping to the first point past the largest.
    two = ConsistentHash(["a:1", "b:1"], compat="ketama")
    pts = sorted(two.snapshot(None).points)
    for key in KEYS[:300]:
        pos = two.hash_key(key) / 2**32
        owner = next((n for p, n in pts if p >= pos), pts[0][1])
        assert two.get_node(key) == owner


def test_ketama_float32_point_counts() -> None:
    # libketama's floorf(float pct * 40.0 * n): 7 equal servers keep 40 hashes each
    # (all-double arithmetic would give 39), while 61 give 39 (uhashring's integer
    # formula says 40: a real divergence, where we follow libketama).
    assert _ketama_hashes(1, 7, 7, 40) == 40
    assert _ketama_hashes(1, 61, 61, 40) == 39
    ring = ConsistentHash([f"s{i}" for i in range(61)], compat="ketama")
    assert len(ring.snapshot(None).points) == 61 * 156
    assert _ketama_hashes(0, 5, 3, 40) == 0 and _ketama_hashes(3, 5, 3, 40) == 72


def test_ketama_rebuilds_on_change() -> None:
    conf = {"a:1": 1, "b:1": 1, "c:1": 2}
    ring = ConsistentHash({"a:1": 1, "b:1": 1}, compat="ketama")
    ring.add_node("c:1", 2)
    theirs = _uhashring(conf)
    assert ring.get_nodes_many(KEYS[:2000]) == [theirs.get_node(k) for k in KEYS[:2000]]
    ring.remove_node("a:1")
    del conf["a:1"]
    theirs = _uhashring(conf)
    assert ring.get_nodes_many(KEYS[:2000]) == [theirs.get_node(k) for k in KEYS[:2000]]
    assert ring.locate("k").position == ring.hash_key("k") / 2**32


def test_ties_are_ordered_by_name_whatever_the_insertion_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes on identical positions: the smaller name must own them, add order aside."""
    from engine import hashing

    real = hashing.PointStream.points
    real_many = hashing.PointStream.points_many
    monkeypatch.setattr(hashing.PointStream, "points", lambda self, seed, a, b: real(self, 7, a, b))
    monkeypatch.setattr(
        hashing.PointStream,
        "points_many",
        lambda self, seeds, c, **kw: real_many(self, [7] * len(seeds), c, **kw),
    )
    for order in (["b", "a"], ["a", "b"]):
        ring = ConsistentHash(None, 8)
        for name in order:
            ring.add_node(name)
        assert {ring.get_node(k) for k in KEYS[:500]} == {"a"}
        assert ring.shares() == {"a": 1.0, "b": 0.0}
        assert ring.get_nodes("k", 2) == ["a", "b"]


def test_patched_index_matches_a_fresh_one() -> None:
    """add/remove/set_weight patch the lookup index in place: it must equal a rebuilt one."""
    import numpy as np

    names = [f"10.0.0.{i}:80" for i in range(40)]
    ring = ConsistentHash(names, 512)
    steps = [
        ("add", "10.9.9.9:80", 2),
        ("remove", names[3], 0),
        ("weight", names[5], 3),
        ("weight", names[6], 0),
    ]
    for op, name, w in steps:
        if op == "add":
            ring.add_node(name, w)
        elif op == "remove":
            ring.remove_node(name)
        else:
            ring.set_weight(name, w)
        patched = ring._start.copy()
        ring._reindex()
        assert np.array_equal(patched, ring._start)
        fresh = ConsistentHash(ring.nodes, 512)
        assert [ring.get_node(k) for k in KEYS[:500]] == fresh.get_nodes_many(KEYS[:500])


def test_sentinel_carries_the_wrap_owner_through_changes() -> None:
    """Past the last point, keys wrap to point 0's owner, read from the sentinel entry."""
    ring = ConsistentHash([f"n{i}" for i in range(12)], 64)
    for _ in range(3):
        size = len(ring._ring)
        first_owner = ring._names[int(ring._ring[0]) & 0xFFFF]
        assert ring._buf.size == size + 1 and ring._ring_mv[size] & 0xFFFF == int(ring._ring[0]) & 0xFFFF
        assert ring._find_many(ring._ring[:1] | (2**64 - 1))[0] == size  # the sentinel's index
        assert ring._find(2**64 - 1) == 0 and ring._find_many(ring._ring[-1:] | 0xFFFF)[0] == size - 1
        assert ring.get_nodes_many(KEYS[:300]) == [ring.get_node(k) for k in KEYS[:300]]
        ring.remove_node(first_owner)  # point 0 changes owner: the sentinel must follow
    ring.add_node("n0")
    assert ring.get_nodes_many(KEYS[:300]) == ConsistentHash(ring.nodes, 64).get_nodes_many(KEYS[:300])


RING_OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "weight"]), st.integers(0, 5), st.integers(0, 3)),
    max_size=14,
)


@FAST
@given(
    st.lists(st.text(min_size=1, max_size=6), min_size=6, max_size=6, unique=True),
    st.sampled_from([16, 128, 512]),
    st.dictionaries(st.integers(0, 5), st.integers(0, 3), max_size=6),
    RING_OPS,
)
def test_incremental_ring_equals_a_fresh_build(
    names: list[str], vn: int, initial: dict[int, int], ops: list[tuple[str, int, int]]
) -> None:
    """Adds, removes and weight changes in any order leave exactly the ring a build makes.

    Points (position and owner name, in order), the sentinel's wrap owner, the patched
    index (each bucket start equal to the count of points below the bucket's edge) and
    lookups must all equal those of a ring built fresh from the final membership. Sizes
    reach ~9k points, so the index also changes its bucket count on the way.
    """
    import numpy as np

    ring = ConsistentHash({names[i]: w for i, w in initial.items()}, vn)
    for op, i, w in ops:
        name = names[i]
        if op == "add":
            ring.add_node(name, w)  # an existing name: a weight change through add_node
        elif name not in ring:
            continue
        elif op == "remove":
            ring.remove_node(name)
        else:
            ring.set_weight(name, w)
    fresh = ConsistentHash(ring.nodes, vn)

    def points(r: ConsistentHash) -> list[tuple[int, str | None]]:
        if not len(r._ring):
            return []
        return [(int(x) >> 16, r._names[int(x) & 0xFFFF]) for x in r._buf]  # sentinel included

    assert points(ring) == points(fresh)
    edges = np.arange(ring._start.size - 1, dtype=np.uint64) << np.uint64(ring._bshift)
    expected = np.append(np.searchsorted(ring._ring, edges, side="left"), len(ring._ring))
    assert np.array_equal(ring._start, expected)
    assert [ring.get_node(k) for k in PROBE] == fresh.get_nodes_many(PROBE) == ring.get_nodes_many(PROBE)
    assert [ring.get_nodes(k, 3) for k in PROBE[:25]] == [fresh.get_nodes(k, 3) for k in PROBE[:25]]
    assert ring.shares() == fresh.shares()
