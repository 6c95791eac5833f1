"""Short versions of every scenario, asserting the claims each one makes."""

from __future__ import annotations

import pytest

from lbtui.cli import main
from lbtui.traffic.scenarios import failover, hotspot, remap, stress


async def test_remap_moves_about_one_nth_and_brings_every_key_back() -> None:
    report = await remap(keys=1500, servers=4)
    figures = report.figures
    assert 1 / 1.5 <= figures["moved_share"] / (1 / 5) <= 1.5
    assert figures["moved_to_new"] == figures["moved"] > 0
    assert figures["returned"] == 1500 and figures["failed"] == 0
    assert report.passed, "\n".join(report.lines)


async def test_failover_hides_a_dead_backend_from_clients() -> None:
    report = await failover(servers=3, rps=200, duration=2.5)
    assert report.figures["client_errors"] == 0
    assert report.figures["detect_ms"] is not None and report.figures["detect_ms"] < 2000
    survivors = {k: v for k, v in report.figures["servers"].items() if k != report.figures["victim"]}
    assert len(survivors) == 2 and all(v > 0 for v in survivors.values())
    assert report.passed, "\n".join(report.lines)


async def test_bounded_loads_keep_the_peak_under_the_cap() -> None:
    report = await hotspot(servers=4, keys=500, rps=300, duration=1.5)
    bounded, unbounded = report.figures["bounded"], report.figures["unbounded"]
    assert bounded["picks_over_cap"] == 0
    assert unbounded["picks_over_cap"] > 0  # the hot key's owner does overload without the bound
    assert bounded["requests_peak_to_mean"] < unbounded["requests_peak_to_mean"]
    assert bounded["failed"] == unbounded["failed"] == 0


async def test_stress_keeps_sessions_consistent_over_tls_with_limits() -> None:
    report = await stress(backends=3, clients=20, rps=200, duration=2.0)
    figures = report.figures
    assert figures["failed"] == 0 and figures["check_failures"] == {}, "\n".join(report.lines)
    assert figures["clients_changed_server"] == 0
    assert figures["rate_limited"] > 0 and len(figures["servers"]) == 3
    assert {"200", "201", "422"} <= set(figures["statuses"])
    assert report.passed, "\n".join(report.lines)


def test_cli_rejects_an_unknown_scenario(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["scenario", "nope"])
    assert "invalid choice" in capsys.readouterr().err
