"""A simulation result as rich tables: what the operator reads after a run."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from lbtui.traffic.simulator import SimulationResult


def result_tables(result: SimulationResult) -> Group:
    """Totals and latency, status codes, and the spread over servers."""
    totals = Table(title=f"Traffic to {result.target} ({result.pattern})", show_header=False)
    totals.add_column("metric", style="bold")
    totals.add_column("value", justify="right")
    totals.add_row("requests sent", f"{result.sent:,} of {result.planned:,} planned")
    totals.add_row("answered", f"{sum(result.statuses.values()):,}")
    totals.add_row("failed (no answer or 5xx)", f"{result.failed:,}")
    totals.add_row("elapsed", f"{result.elapsed:.2f} s ({result.achieved_rps:,.1f} req/s)")
    totals.add_row("latency p50 / p90 / p99", " / ".join(f"{result.percentile_ms(p):.2f} ms" for p in (50, 90, 99)))
    if result.key_servers:
        totals.add_row(
            "keys that changed server",
            f"{result.keys_changed:,} of {len(result.key_servers):,}"
            f" ({result.keys_changed / len(result.key_servers):.1%})",
        )
    if result.client_moves or result.pattern == "sticky-clients":
        totals.add_row("clients that changed server", f"{result.clients_changed:,}")
    for reason, count in result.check_failures.most_common(5):
        totals.add_row(f"check failed: {reason}", f"{count:,}")

    codes = Table(title="Status codes")
    codes.add_column("status")
    codes.add_column("count", justify="right")
    for status, count in sorted(result.statuses.items()):
        codes.add_row(str(status), f"{count:,}")
    for name, count in result.errors.most_common():
        codes.add_row(f"[red]{name}[/red]", f"{count:,}")

    spread = Table(title="Per server (X-Served-By)")
    spread.add_column("server")
    spread.add_column("requests", justify="right")
    spread.add_column("share", justify="right")
    served = sum(result.servers.values()) or 1
    for name, count in sorted(result.servers.items()):
        spread.add_row(name, f"{count:,}", f"{count / served:.1%}")
    return Group(totals, codes, spread)
