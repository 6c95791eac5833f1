"""Policy invariants, checked over many generated server sets (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import AdminState, LeastConnections, LeastRequest, LoadBalancer, PeakEwma, RandomPick, RoundRobin, Server
from engine.balancer import ALGORITHMS
from engine.policies import WeightedRoundRobin

weights = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8)


def make(ws: list[int]) -> list[Server]:
    return [Server("127.0.0.1", 8000 + i, weight=w, name=f"s{i}") for i, w in enumerate(ws)]


def test_smooth_wrr_matches_nginx_sequence():
    servers = [Server("a", 1, weight=5), Server("b", 2, weight=1), Server("c", 3, weight=1)]
    wrr = WeightedRoundRobin(servers)
    assert [wrr.next().host for _ in range(7)] == list("aabacaa")


@given(weights)
def test_wrr_exact_proportions_each_cycle(ws):
    servers = make(ws)
    wrr = WeightedRoundRobin(servers)
    total = sum(ws)
    for _ in range(2):  # two full cycles: exact counts in each
        picks = [wrr.next().name for _ in range(total)]
        for server in servers:
            assert picks.count(server.name) == server.weight


@given(weights)
def test_wrr_is_smooth(ws):
    """Within any prefix, no server runs ahead of its share by more than one pick."""
    servers = make(ws)
    wrr = WeightedRoundRobin(servers)
    total = sum(ws)
    counts = dict.fromkeys((s.name for s in servers), 0)
    for step in range(1, total + 1):
        counts[wrr.next().name] += 1
        for server in servers:
            assert counts[server.name] <= math.ceil(step * server.weight / total) + 1


@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=10))
def test_least_connections_picks_a_minimum(conns):
    servers = make([1] * len(conns))
    for server, c in zip(servers, conns):
        server.active_connections = c
    lc = LeastConnections(servers)
    for _ in range(len(servers)):
        assert lc.next().active_connections == min(conns)


def test_least_connections_breaks_ties_round_robin():
    servers = make([1, 1, 1])
    lc = LeastConnections(servers)
    assert {lc.next().name for _ in range(3)} == {"s0", "s1", "s2"}


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(list(AdminState))), min_size=1, max_size=8),
    st.sampled_from(sorted(ALGORITHMS)),
)
@settings(max_examples=60, deadline=None)
def test_no_policy_picks_an_unavailable_server(states, algorithm):
    servers = make([1] * len(states))
    for server, (up, admin) in zip(servers, states):
        server.healthy = up
        server.admin_state = admin
    lb = LoadBalancer(servers, algorithm=algorithm, hash_key="header:x-key")
    usable = {s.name for s in servers if s.available}
    for i in range(30):
        chosen = lb.route({"client_ip": f"10.0.0.{i}", "headers": {"x-key": f"k{i}"}, "path": "/"})
        if not usable:
            assert chosen is None
        else:
            assert chosen is not None and chosen.name in usable


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=8))
def test_least_request_never_picks_the_busiest_of_two(conns):
    servers = make([1] * len(conns))
    for server, c in zip(servers, conns):
        server.active_connections = c
    policy = LeastRequest(servers, seed=1)
    busiest = max(conns)
    if conns.count(busiest) == 1:
        for _ in range(50):
            assert policy.next().active_connections != busiest or len(conns) == 1


def test_peak_ewma_avoids_a_slow_server():
    fast, slow = Server("fast", 1), Server("slow", 2)
    PeakEwma.observe(fast, 0.001, 0.0)
    PeakEwma.observe(slow, 0.500, 0.0)
    policy = PeakEwma([fast, slow], seed=3)
    assert all(policy.next() is fast for _ in range(20))


def test_peak_ewma_decays_after_a_spike():
    server = Server("s", 1)
    PeakEwma.observe(server, 1.0, 0.0)
    assert server.ewma_latency == 1.0
    PeakEwma.observe(server, 0.01, 30.0)  # three decay constants later
    assert server.ewma_latency < 0.1


def test_random_respects_weights():
    servers = [Server("a", 1, weight=9), Server("b", 2, weight=1)]
    policy = RandomPick(servers, seed=7)
    picks = [policy.next().host for _ in range(5000)]
    assert 0.85 < picks.count("a") / 5000 < 0.95


def test_empty_choice_is_none():
    for cls in (RoundRobin, WeightedRoundRobin, LeastConnections, LeastRequest, PeakEwma, RandomPick):
        assert cls([]).next() is None
        lonely = Server("x", 1)
        lonely.healthy = False
        assert cls([lonely]).next() is None
