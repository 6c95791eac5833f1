"""InProcessControl: the engine seen through the app's interface."""

from __future__ import annotations

import pytest

from engine import LoadBalancer, Server
from lbtui.control.base import ControlError, EventView, normalize_points, parse_status
from lbtui.control.inprocess import InProcessControl


def make() -> tuple[LoadBalancer, InProcessControl]:
    lb = LoadBalancer([Server("127.0.0.1", 9001 + i, i + 1, name=f"web-{i + 1}") for i in range(3)],
                      algorithm="consistent_hash")
    return lb, InProcessControl(lb, status=lambda: {"listeners": [{"url": "http://127.0.0.1:8080"}],
                                                    "components": {"store": {"state": "sqlite"}}})


async def test_views_and_ring_shares() -> None:
    lb, control = make()
    servers = await control.servers()
    assert [(s.name, s.weight, s.status) for s in servers] == [("web-1", 1, "up"), ("web-2", 2, "up"),
                                                               ("web-3", 3, "up")]
    totals = await control.totals()
    assert totals.listeners == ("http://127.0.0.1:8080",) and totals.components == {"store": "sqlite"}
    ring = await control.ring(512)
    assert len(ring.points) <= 512 and ring.points == sorted(ring.points)
    assert ring.shares["web-3"] > ring.shares["web-1"]  # virtual nodes follow weight
    lb.set_algorithm("maglev")
    table = await control.ring(512)
    assert table.kind == "maglev" and sum(table.shares.values()) == pytest.approx(1.0)
    lb.set_health("web-3", False)  # Maglev serves only available servers
    assert "web-3" not in {n for n, share in (await control.ring(512)).shares.items() if share > 0}


async def test_refusals_become_control_errors_and_events_are_views() -> None:
    lb, control = make()
    seen: list[EventView] = []
    stop = control.subscribe(seen.append)
    with pytest.raises(ControlError, match="no server"):
        await control.drain("nope")
    with pytest.raises(ControlError, match="weight"):
        await control.set_weight("web-1", -1)
    with pytest.raises(ControlError, match="already exists"):
        await control.add_server("web-1", "127.0.0.1", 1, 1)
    with pytest.raises(ControlError, match="unknown algorithm"):
        await control.set_algorithm("fastest")
    await control.set_weight("web-1", 7)
    stop()
    await control.set_weight("web-1", 8)
    assert [(e.kind, e.server, e.detail["new"]) for e in seen] == [("weight_changed", "web-1", 7)]


def test_normalize_points_and_status_parsing() -> None:
    assert normalize_points([(2**63, "b"), (2**62, "a")]) == [(0.25, "a"), (0.5, "b")]
    listeners, components = parse_status({"listeners": [{"host": "0.0.0.0", "port": 80}],
                                          "components": {"aws": {"error": "throttled"}, "sync": "running"}})
    assert listeners == ("0.0.0.0:80",) and components == {"aws": "error", "sync": "running"}
