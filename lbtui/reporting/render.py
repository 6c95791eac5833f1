"""A summary as text, Markdown, HTML (with its SVG chart) or JSON."""

from __future__ import annotations

import enum
import json
from html import escape

from lbtui.reporting.summary import Period, Summary
from lbtui.reporting.svg import ChartPoint, traffic_chart
from workers.analytics import ms


class Format(enum.StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    JSON = "json"


PERIOD_COLUMNS = ("period", "requests", "req/min", "errors", "2xx", "4xx", "5xx", "p50 ms", "p99 ms")


def _period_row(period: Period) -> list[str]:
    return [
        period.label,
        f"{period.requests:,}",
        f"{period.rpm:,.1f}",
        f"{period.errors:,} ({period.error_rate:.1%})",
        f"{period.status.get('2xx', 0):,}",
        f"{period.status.get('4xx', 0):,}",
        f"{period.status.get('5xx', 0):,}",
        f"{ms(period.latency, 50):g}",
        f"{ms(period.latency, 99):g}",
    ]


def _server_rows(period: Period) -> list[list[str]]:
    rows = []
    for name, s in sorted(period.servers.items()):
        share = s.requests / period.requests if period.requests else 0.0
        rows.append([name, f"{s.requests:,}", f"{share:.1%}", f"{s.errors:,}", f"{ms(s.latency, 50):g}", f"{ms(s.latency, 99):g}"])
    return rows


SERVER_COLUMNS = ("server", "requests", "share", "errors", "p50 ms", "p99 ms")


def _highlights(summary: Summary) -> list[tuple[str, str]]:
    total = summary.total
    rows = [
        ("range", f"{Period(summary.since, 60).label} to {Period(summary.until, 60).label}"),
        ("requests", f"{total.requests:,} in {total.minutes} minute{'' if total.minutes == 1 else 's'} with traffic"),
        ("errors", f"{total.errors:,} ({total.error_rate:.2%})"),
        ("latency p50 / p90 / p99", f"{ms(total.latency, 50):g} / {ms(total.latency, 90):g} / {ms(total.latency, 99):g} ms"),
        ("status classes", ", ".join(f"{k}: {v:,}" for k, v in sorted(total.status.items())) or "none"),
    ]
    for label, period in (
        ("peak minute", summary.peak_minute),
        ("lowest minute", summary.lowest_minute),
        ("peak hour", summary.peak_hour),
        ("lowest hour", summary.lowest_hour),
    ):
        if period is not None:
            rows.append((label, f"{period.label}: {period.requests:,} requests"))
    return rows


def _text_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def render_text(summary: Summary) -> str:
    parts = ["lbtui traffic report", "===================="]
    width = max(len(k) for k, _ in _highlights(summary))
    parts += [f"{k.ljust(width)}  {v}" for k, v in _highlights(summary)]
    parts += ["", "Per server", _text_table(SERVER_COLUMNS, _server_rows(summary.total))]
    parts += ["", "Hourly", _text_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.hours])]
    parts += ["", "Daily", _text_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.days])]
    return "\n".join(parts) + "\n"


def _md_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(summary: Summary) -> str:
    parts = ["# lbtui traffic report", ""]
    parts += [f"- **{k}**: {v}" for k, v in _highlights(summary)]
    parts += ["", "## Per server", "", _md_table(SERVER_COLUMNS, _server_rows(summary.total))]
    parts += ["", "## Hourly", "", _md_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.hours])]
    parts += ["", "## Daily", "", _md_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.days])]
    return "\n".join(parts) + "\n"


def _html_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chart_points(summary: Summary) -> list[ChartPoint]:
    return [
        ChartPoint(p.label.split(" ")[1] if " " in p.label else p.label, p.requests, p.errors, ms(p.latency, 99))
        for p in summary.minutes
    ]


def render_html(summary: Summary) -> str:
    highlights = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _highlights(summary))
    chart = traffic_chart(chart_points(summary), title="Requests per minute and p99 latency")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lbtui traffic report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ background: #f3f3f3; }}
</style></head><body>
<h1>lbtui traffic report</h1>
<table class="highlights">{highlights}</table>
<figure>{chart}</figure>
<h2>Per server</h2>
{_html_table(SERVER_COLUMNS, _server_rows(summary.total))}
<h2>Hourly</h2>
{_html_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.hours])}
<h2>Daily</h2>
{_html_table(PERIOD_COLUMNS, [_period_row(p) for p in summary.days])}
</body></html>
"""


def render_json(summary: Summary) -> str:
    return json.dumps(summary.to_dict(), indent=2) + "\n"


RENDERERS = {
    Format.TEXT: render_text,
    Format.MARKDOWN: render_markdown,
    Format.HTML: render_html,
    Format.JSON: render_json,
}


def render(summary: Summary, fmt: Format | str) -> str:
    return RENDERERS[Format(fmt)](summary)
