"""Prometheus text exposition (format 0.0.4) of the balancer's live figures.

Rendered on demand from the engine's own counters, so scraping costs nothing on the
request path. Latency histograms come from each server's ``LatencyHistogram`` (the same
numbers the dashboard's p50/p99 come from), at fixed bucket bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.balancer import LoadBalancer
from engine.server import AdminState, Health
from engine.stats import LatencyHistogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a fast loopback hop to a slow upstream, as Prometheus' own defaults span.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Labels = Mapping[str, str]


def escape_label(value: str) -> str:
    """Label values escape backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes backslash and line feed (quotes stay)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


class Exposition:
    """Collects metric families and renders them; each family's HELP/TYPE appears once."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._declared: set[str] = set()

    def declare(self, name: str, kind: str, help_text: str) -> None:
        if name in self._declared:
            raise ValueError(f"metric family {name} declared twice")
        self._declared.add(name)
        self._lines.append(f"# HELP {name} {escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._lines.append(f"{name}{_labels(labels or {})} {format_value(value)}")

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self.declare(name, kind, help_text)
        for labels, value in samples:
            self.sample(name, value, labels)

    def histogram(
        self,
        name: str,
        help_text: str,
        series: Iterable[tuple[Labels, LatencyHistogram]],
        bounds: Sequence[float] = LATENCY_BOUNDS,
    ) -> None:
        self.declare(name, "histogram", help_text)
        for labels, hist in series:
            for bound, count in hist.buckets(bounds):
                self.sample(f"{name}_bucket", count, {**labels, "le": format_value(float(bound))})
            self.sample(f"{name}_bucket", hist.total, {**labels, "le": "+Inf"})
            self.sample(f"{name}_sum", hist.sum_micros / 1_000_000, labels)
            self.sample(f"{name}_count", hist.total, labels)

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


def render(
    lb: LoadBalancer,
    *,
    started_at: float | None = None,
    listeners: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole exposition for one scrape.

    ``listeners`` are dicts with ``name``, ``active_requests`` and ``connections`` (what the
    gateway knows of its proxies); ``started_at`` is the wall-clock start time.
    """
    out = Exposition()
    servers = list(lb.servers)

    def per_server(value: Any) -> list[tuple[Labels, float]]:
        return [({"server": s.name}, value(s)) for s in servers]

    out.family(
        "lbtui_server_requests_total",
        "counter",
        "Requests routed to the server (retries included).",
        per_server(lambda s: s.stats.requests),
    )
    out.family(
        "lbtui_server_errors_total",
        "counter",
        "Requests to the server that failed or answered 5xx.",
        per_server(lambda s: s.stats.errors),
    )
    out.family(
        "lbtui_server_received_bytes_total",
        "counter",
        "Bytes received from the server.",
        per_server(lambda s: s.stats.bytes_in),
    )
    out.family(
        "lbtui_server_sent_bytes_total",
        "counter",
        "Bytes sent to the server.",
        per_server(lambda s: s.stats.bytes_out),
    )
    out.family(
        "lbtui_server_ejections_total",
        "counter",
        "Times passive outlier detection ejected the server.",
        per_server(lambda s: s.ejections),
    )
    out.family(
        "lbtui_server_active_connections",
        "gauge",
        "Requests in flight on the server.",
        per_server(lambda s: s.active_connections),
    )
    out.family(
        "lbtui_server_up",
        "gauge",
        "1 when active health checks consider the server up.",
        per_server(lambda s: 1 if s.health.state is Health.UP else 0),
    )
    out.family(
        "lbtui_server_available",
        "gauge",
        "1 when the server may take new requests (ready, up, not ejected).",
        per_server(lambda s: 1 if s.available else 0),
    )
    out.family("lbtui_server_weight", "gauge", "Configured weight.", per_server(lambda s: s.weight))
    out.family(
        "lbtui_server_effective_weight",
        "gauge",
        "Weight in use now (lower during slow start).",
        per_server(lambda s: float(s.effective_weight)),
    )
    out.family(
        "lbtui_server_admin_state",
        "gauge",
        "Operator state: 1 for the server's current state (ready, drain, maint).",
        [
            ({"server": s.name, "state": state.value}, 1 if s.admin_state is state else 0)
            for s in servers
            for state in AdminState
        ],
    )
    out.family(
        "lbtui_server_requests_per_second",
        "gauge",
        "Requests per second over the last 10 s window.",
        per_server(lambda s: float(s.stats.rate.rate())),
    )
    out.histogram(
        "lbtui_server_request_duration_seconds",
        "Time from routing to the end of the response.",
        [({"server": s.name}, s.stats.latency) for s in servers],
    )

    totals = lb.totals
    out.family("lbtui_requests_total", "counter", "Requests routed, all servers.", [({}, totals.requests)])
    out.family("lbtui_errors_total", "counter", "Failed or 5xx requests, all servers.", [({}, totals.errors)])
    out.histogram("lbtui_request_duration_seconds", "Request latency, all servers.", [({}, totals.latency)])
    out.family("lbtui_servers", "gauge", "Servers configured.", [({}, len(servers))])
    out.family(
        "lbtui_servers_available",
        "gauge",
        "Servers that may take new requests.",
        [({}, sum(1 for s in servers if s.available))],
    )
    out.family(
        "lbtui_panic",
        "gauge",
        "1 in panic mode (too few healthy servers: routing to all).",
        [({}, 1 if lb.panic else 0)],
    )
    out.family(
        "lbtui_info",
        "gauge",
        "The routing policy in use.",
        [({"algorithm": lb.algorithm, "hash_key": str(lb.hash_key)}, 1)],
    )
    if listeners:
        out.family(
            "lbtui_listener_active_requests",
            "gauge",
            "Requests in flight on the listener.",
            [({"listener": str(x["name"])}, x.get("active_requests", 0)) for x in listeners],
        )
        out.family(
            "lbtui_listener_connections",
            "gauge",
            "Client connections open on the listener.",
            [({"listener": str(x["name"])}, x.get("connections", 0)) for x in listeners],
        )
    if started_at is not None:
        out.family("lbtui_start_time_seconds", "gauge", "Unix time lbtui started.", [({}, float(started_at))])
    return out.render()
