"""A self-contained SVG chart (no scripts, no CDN): requests per minute as bars, errors in
red on top of them, and p99 latency as a line on its own right-hand axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

MAX_BARS = 240


@dataclass(slots=True, frozen=True)
class ChartPoint:
    label: str
    requests: int
    errors: int
    p99_ms: float


def _downsample(points: Sequence[ChartPoint], limit: int) -> list[ChartPoint]:
    """Merge neighbouring points so at most ``limit`` bars are drawn (p99: the worst)."""
    if len(points) <= limit:
        return list(points)
    size = -(-len(points) // limit)
    merged = []
    for i in range(0, len(points), size):
        group = points[i : i + size]
        merged.append(
            ChartPoint(
                group[0].label,
                sum(p.requests for p in group),
                sum(p.errors for p in group),
                max(p.p99_ms for p in group),
            )
        )
    return merged


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def traffic_chart(points: Sequence[ChartPoint], width: int = 800, height: int = 260, title: str = "") -> str:
    """The chart as an ``<svg>`` element string."""
    left, right, top, bottom = 56, 56, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    bars = _downsample(points, MAX_BARS)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "traffic")}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if title:
        out.append(f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>')
    if not bars:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">no traffic recorded</text>')
        out.append("</svg>")
        return "\n".join(out)
    req_max = _nice_max(max(p.requests for p in bars))
    lat_max = _nice_max(max(p.p99_ms for p in bars))
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1f6fb2">{req_max * i / 4:g}</text>')
        out.append(
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="#b25f1f">{lat_max * i / 4:g}</text>'
        )
    slot = plot_w / len(bars)
    bar_w = max(1.0, slot * 0.8)
    line: list[str] = []
    for i, point in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        h = plot_h * point.requests / req_max
        eh = plot_h * point.errors / req_max
        base = top + plot_h
        tip = f"{point.label}: {point.requests} requests, {point.errors} errors, p99 {point.p99_ms:g} ms"
        out.append(
            f'<rect class="requests" x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="#1f6fb2"><title>{escape(tip)}</title></rect>'
        )
        if point.errors:
            out.append(
                f'<rect class="errors" x="{x:.1f}" y="{base - eh:.1f}" width="{bar_w:.1f}" height="{eh:.1f}" fill="#d62728"/>'
            )
        line.append(f"{left + i * slot + slot / 2:.1f},{top + plot_h - plot_h * point.p99_ms / lat_max:.1f}")
    out.append(f'<polyline class="p99" points="{" ".join(line)}" fill="none" stroke="#b25f1f" stroke-width="2"/>')
    for i in sorted({0, len(bars) // 2, len(bars) - 1}):
        x = left + i * slot + slot / 2
        out.append(f'<text x="{x:.1f}" y="{height - 22}" text-anchor="middle" fill="#333">{escape(bars[i].label)}</text>')
    out.append(f'<text x="{left}" y="{height - 6}" fill="#1f6fb2">bars: requests (errors in red)</text>')
    out.append(f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end" fill="#b25f1f">line: p99 ms</text>')
    out.append("</svg>")
    return "\n".join(out)
