"""The latency histogram and the sliding rate window."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.stats import LatencyHistogram, RateWindow


@given(st.lists(st.floats(min_value=0.00001, max_value=30.0), min_size=1, max_size=400), st.sampled_from([50, 90, 99]))
def test_percentiles_within_four_percent(values, p):
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    ordered = sorted(values)
    rank = max(1, -(-len(values) * p // 100))
    truth = ordered[int(rank) - 1]
    assert abs(hist.percentile(p) - truth) <= 0.04 * truth + 2e-6


def test_merge_equals_recording_everything_in_one():
    rng = random.Random(5)
    values = [rng.expovariate(100) for _ in range(5000)]
    whole, a, b = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, v in enumerate(values):
        whole.record(v)
        (a if i % 2 else b).record(v)
    a.merge(b)
    assert a.counts == whole.counts and a.total == whole.total
    assert a.percentile(99) == whole.percentile(99)


def test_memory_is_bounded():
    hist = LatencyHistogram()
    for i in range(1, 200_000):
        hist.record(i / 10_000)
    assert len(hist.counts) <= 32 * 18  # 32 buckets per power of two, 100 us to 20 s


def test_rate_window_slides():
    window = RateWindow(window=10)
    for second in range(100, 110):
        window.add(5, now=second + 0.5)
    assert window.rate(now=110.2) == 5.0  # nine complete seconds of 5
    assert window.rate(now=125) == 0.0
    assert window.count_last(1, now=125) == 0


def test_prometheus_buckets_are_cumulative():
    hist = LatencyHistogram()
    for v in (0.001, 0.002, 0.05, 0.5):
        hist.record(v)
    buckets = dict(hist.buckets([0.005, 0.1, 1.0]))
    assert buckets == {0.005: 2, 0.1: 3, 1.0: 4}


@given(st.lists(st.floats(min_value=0.00001, max_value=30.0), min_size=0, max_size=200))
def test_percentiles_in_one_pass_equal_one_at_a_time(values):
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    assert hist.percentiles((50, 90, 99, 100)) == [hist.percentile(p) for p in (50, 90, 99, 100)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-0.01, max_value=100.0, allow_nan=False),
            st.floats(min_value=0.0, max_value=0.0001, allow_nan=False),
        ),
        min_size=0,
        max_size=400,
    )
)
def test_record_many_builds_the_same_histogram_as_record(values: list[float]) -> None:
    """The numpy fold must bucket exactly as the per-value path, edges and negatives included."""
    one_by_one, at_once = LatencyHistogram(), LatencyHistogram()
    for value in values:
        one_by_one.record(value)
    at_once.record_many(values)
    assert at_once.counts == one_by_one.counts
    assert (at_once.total, at_once.sum_micros, at_once.max_micros) == (
        one_by_one.total,
        one_by_one.sum_micros,
        one_by_one.max_micros,
    )


def test_pending_latencies_are_folded_before_they_pile_up() -> None:
    """A busy second must not leave one long fold for the tick (a long loop pause)."""
    from engine.balancer import LoadBalancer
    from engine.server import Server
    from engine.stats import FOLD_AT

    lb = LoadBalancer([Server("127.0.0.1", 9, name="a")], "round_robin")
    server = lb.servers[0]
    for _ in range(FOLD_AT * 2 + 10):
        lb.begin(server)
        lb.finish(server, 200, 0.002)
        assert len(server.stats.pending) < FOLD_AT
        assert len(lb.totals.pending) < FOLD_AT
    assert server.stats.latency.total == FOLD_AT * 2 + 10
    assert lb.totals.latency.total == FOLD_AT * 2 + 10
    assert 0.0019 < lb.totals.latency.percentile(50) < 0.0021
