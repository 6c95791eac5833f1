"""Prometheus exposition: parsed back with the reference parser, figures match the engine."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.balancer import LoadBalancer
from engine.metrics import LATENCY_BOUNDS, escape_label, render
from engine.server import Server

ODD_NAME = 'we"ird\\name\nnext'


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def lb() -> LoadBalancer:
    servers = [Server("127.0.0.1", 9001, 2, "a"), Server("127.0.0.1", 9002, 1, "odd")]
    balancer = LoadBalancer(servers, "round_robin")
    # The balancer refuses such names; label escaping is defence in depth, so the test
    # plants one past that check to prove the exposition still round-trips.
    servers[1].name = ODD_NAME
    balancer._by_name[ODD_NAME] = balancer._by_name.pop("odd")
    latencies = {"a": [0.0008, 0.003, 0.003, 0.2], ODD_NAME: [0.04, 7.0]}
    for name, values in latencies.items():
        server = balancer.get_server(name)
        assert server is not None
        for index, seconds in enumerate(values):
            server.stats.start()
            balancer.totals.start()
            balancer.begin(server)
            balancer.finish(server, 500 if index == 0 and name == "a" else 200, seconds)
    balancer.begin(balancer.servers[1])  # one request still in flight
    balancer.drain(ODD_NAME)
    balancer.set_health("a", False)
    return balancer


def test_every_line_is_help_type_or_a_well_formed_sample(lb: LoadBalancer) -> None:
    text = render(
        lb, started_at=1700000000.0, listeners=[{"name": "web", "active_requests": 3, "connections": 5}]
    )
    assert text.endswith("\n")
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? \S+$')
    declared: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.append(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[2] == declared[-1], "TYPE follows its HELP"
            assert line.split()[3] in ("counter", "gauge", "histogram")
        else:
            assert sample.match(line), line
    assert len(declared) == len(set(declared)), "each family declared once"


def test_counters_and_gauges_match_the_engine(lb: LoadBalancer) -> None:
    text = render(lb)
    parsed = families(text)
    assert parsed["lbtui_server_requests"].type == "counter"
    requests = samples(text, "lbtui_server_requests_total")
    assert requests[(("server", "a"),)] == 4
    assert requests[(("server", ODD_NAME),)] == 2, "label escaping round-trips through the parser"
    assert samples(text, "lbtui_server_errors_total")[(("server", "a"),)] == 1
    assert samples(text, "lbtui_server_active_connections")[(("server", ODD_NAME),)] == 1
    assert samples(text, "lbtui_server_up")[(("server", "a"),)] == 0
    assert samples(text, "lbtui_server_weight")[(("server", "a"),)] == 2
    states = samples(text, "lbtui_server_admin_state")
    assert states[(("server", ODD_NAME), ("state", "drain"))] == 1
    assert states[(("server", ODD_NAME), ("state", "ready"))] == 0
    assert samples(text, "lbtui_requests_total")[()] == 6
    assert samples(text, "lbtui_servers_available")[()] == 0
    assert samples(text, "lbtui_info")[(("algorithm", "round_robin"), ("hash_key", "client_ip"))] == 1


def test_latency_histograms_are_cumulative_and_consistent(lb: LoadBalancer) -> None:
    text = render(lb)
    assert families(text)["lbtui_server_request_duration_seconds"].type == "histogram"
    buckets = samples(text, "lbtui_server_request_duration_seconds_bucket")
    a = sorted((float(dict(k)["le"]), v) for k, v in buckets.items() if dict(k)["server"] == "a")
    assert [le for le, _ in a] == sorted([*LATENCY_BOUNDS, float("inf")])
    counts = [v for _, v in a]
    assert counts == sorted(counts), "cumulative"
    by_le = dict(a)
    assert by_le[0.001] == 1  # 0.8 ms
    assert by_le[0.005] == 3  # plus two of 3 ms
    assert by_le[0.25] == 4 and by_le[float("inf")] == 4
    count = samples(text, "lbtui_server_request_duration_seconds_count")[(("server", "a"),)]
    total = samples(text, "lbtui_server_request_duration_seconds_sum")[(("server", "a"),)]
    assert count == 4
    assert total == pytest.approx(0.0008 + 0.003 + 0.003 + 0.2, rel=1e-3)
    odd = {float(dict(k)["le"]): v for k, v in buckets.items() if dict(k)["server"] == ODD_NAME}
    assert odd[5.0] == 1 and odd[10.0] == 2, "a 7 s request lands between 5 and 10"
    overall = samples(text, "lbtui_request_duration_seconds_count")[()]
    assert overall == 6


def test_listener_and_start_time_gauges(lb: LoadBalancer) -> None:
    text = render(
        lb, started_at=1700000000.5, listeners=[{"name": "web", "active_requests": 3, "connections": 5}]
    )
    assert samples(text, "lbtui_listener_connections")[(("listener", "web"),)] == 5
    assert samples(text, "lbtui_start_time_seconds")[()] == 1700000000.5


def test_empty_balancer_renders() -> None:
    text = render(LoadBalancer([], "round_robin"))
    assert samples(text, "lbtui_servers")[()] == 0
    assert samples(text, "lbtui_request_duration_seconds_count")[()] == 0


def test_escape_label() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
