"""The proxy benchmark's verdict arithmetic (tests/bench/bench_proxy.py), on given samples.

The benchmark itself needs wrk, HAProxy and nginx and minutes of a quiet machine, so it
is not run here; what it concludes from its rounds is checked instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import bench_proxy as bench  # noqa: E402


def _row(name: str, rounds: list[tuple[float, float, float]]) -> bench.Row:
    row = bench.Row(bench.Path_(name, name, 0, None, "http"))  # type: ignore[arg-type]  # no process
    row.samples = [bench.Sample(rps, p50, p99, 0, 20.0) for rps, p50, p99 in rounds]
    return row


def test_a_round_whose_p99_leaves_its_own_p50_far_behind_is_counted_as_stalled() -> None:
    row = _row("lbtui", [(40_000, 1.0, 2.5), (40_000, 1.0, 35.6), (40_000, 1.1, 8.7), (40_000, 1.2, 10.6)])
    assert bench.stalled(row) == 2  # 35.6 and 10.6 ms; 8.7 ms is under 8x its 1.1 ms p50
    assert bench.table([row], row)[1][7] == "2/4"


def test_the_bar_is_judged_on_medians_and_the_paired_ratios_are_shown_beside_it() -> None:
    haproxy = _row("haproxy", [(50_000, 0.9, 2.0), (50_000, 0.9, 30.0), (50_000, 0.9, 2.2)])
    lbtui = _row("lbtui", [(40_000, 1.0, 2.6), (45_000, 1.0, 2.4), (42_000, 1.0, 40.0)])
    bar, goal, rps, p99 = bench.verdict(lbtui, haproxy)
    assert (round(rps, 2), round(p99, 2)) == (0.84, 1.18)  # 42,000 / 50,000 and 2.6 / 2.2
    assert (bar, goal) == ("met", "NOT met")
    lines = bench.verdict_lines("HTTP", lbtui, haproxy)
    assert "per-round ratios 0.84x, p99 1.30x" in lines[2]  # median of 2.6/2.0, 2.4/30, 40/2.2
    assert "stalled rounds (p99 > 8x p50) lbtui 1, HAProxy 1 of 3" in lines[2]
    slower = _row("lbtui", [(30_000, 1.0, 3.5), (30_000, 1.0, 3.4), (30_000, 1.0, 3.6)])
    assert bench.verdict(slower, haproxy)[0] == "NOT met"  # p99 3.5 / 2.2 > 1.5x
